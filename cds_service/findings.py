"""What a rule concludes, as data: the card variant, named text values, the lines of the
patient's own record that triggered it, and the suggestions to offer. Every sentence a
clinician reads comes from a card template (cards/*.json) keyed by these names; nothing here
holds English."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Line:
    """A sentence from a card file's `lines` (the rule's own, else cards/lines.json), with the
    values of its named placeholders. A value may itself be a Line (rendered in place) or a
    tuple of Lines (rendered and joined with ", ")."""

    key: str
    values: Mapping[str, Text] = field(default_factory=dict)


Text = str | Line | tuple[Line, ...]


@dataclass(frozen=True)
class SuggestionSpec:
    """A suggestion template key (cards/suggestions.json) plus the values it needs."""

    key: str
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """A rule's conclusion about this patient and these orders."""

    rule_id: str
    variant: str
    values: Mapping[str, Text]
    evidence: tuple[Line, ...]  # the patient's data that triggered it, one line per datum
    suggestions: tuple[SuggestionSpec, ...] = ()
    # Other rules whose concern this card also answers (say it once): their findings are
    # dropped and their ids kept on the card so feedback is still attributed to them.
    covers: tuple[str, ...] = ()
    # What the card decides about: a signature of each draft order it judges (drug, dose,
    # supply; rules/dose.draft_signature). One decision, one answer: a card answered
    # through feedback is not shown again for the same signatures in the same encounter.
    drafts: tuple[str, ...] = ()
    # Say it once, from the other side: concerns (rule ids) this card mentions in passing, and
    # the finding to render instead when another shown card covers one of them (the chart
    # summary's naloxone clause beside the co-prescription card's naloxone offer).
    mentions: tuple[str, ...] = ()
    if_covered: Finding | None = None
