"""What the card log records of one hook call, taken from the response the engine returned.

For each card: its uuid, rule id (`source.topic.code`), indicator, the suggestions offered
(uuid, template key, template label), the pseudonymous patient key, whether it was silent (a
silent-mode rule's card, logged and never returned) and the rules it covers (the card's
`extension["opioid-lbp-cds.covers"]`: other rules whose concern it also answers). A
suggestion label is stored as its template ("Replace {drug} with naproxen ..."), never as
rendered: the rendered label names the patient's drug. A label that matches no template is
stored without a label.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.cards import EXTENSION_COVERS

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class IssuedCard:
    card_uuid: str
    rule_id: str
    service_id: str
    hook: str
    indicator: str
    issued_at: dt.datetime
    patient_key: str
    suggestions: tuple[Mapping[str, str | None], ...]
    silent: bool = False
    covers: tuple[str, ...] = ()


@dataclass(frozen=True)
class HookCall:
    day: dt.date
    service_id: str
    with_cards: bool


@dataclass(frozen=True)
class CardLogEntry:
    call: HookCall
    cards: tuple[IssuedCard, ...]


@dataclass(frozen=True)
class PendingEntry:
    """A hook call's entry that the writer thread builds (`build()`), so that matching the
    suggestion labels and keying the patient stay off the request thread. It holds only the
    cards and a few strings, never the request body."""

    build: Callable[[], CardLogEntry]
    card_count: int


def card_count(entry: CardLogEntry | PendingEntry) -> int:
    return entry.card_count if isinstance(entry, PendingEntry) else len(entry.cards)


class SuggestionLabels:
    """Recognises a rendered suggestion label as one of the templates in suggestions.json."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self._patterns: list[tuple[re.Pattern[str], str, str]] = []
        for key, label in templates.items():
            parts = _PLACEHOLDER.split(label)
            # split() alternates literal text and placeholder names
            regex = "".join(
                re.escape(part) if i % 2 == 0 else ".+?" for i, part in enumerate(parts)
            )
            self._patterns.append((re.compile(f"^{regex}$", re.DOTALL), key, label))

    @classmethod
    def from_cards_dir(cls, directory: Path) -> SuggestionLabels:
        data = json.loads((directory / "suggestions.json").read_text("utf-8"))
        return cls(
            {
                key: spec["label"]
                for key, spec in data.items()
                if not key.startswith("_")
                and isinstance(spec, dict)
                and isinstance(spec.get("label"), str)
            }
        )

    def match(self, label: str) -> tuple[str | None, str | None]:
        for pattern, key, template in self._patterns:
            if pattern.match(label):
                return key, template
        return None, None


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _covers(card: Mapping[str, Any], own: str) -> tuple[str, ...]:
    extension = card.get("extension")
    covers = extension.get(EXTENSION_COVERS) if isinstance(extension, dict) else None
    if not isinstance(covers, list):
        return ()
    return tuple(
        dict.fromkeys(
            _text(rule, 128)
            for rule in covers[:16]
            if isinstance(rule, str) and rule and rule != own
        )
    )


def entry_for(
    service_id: str,
    request: Any,
    response: Any,
    patient_key: str,
    labels: SuggestionLabels,
    now: dt.datetime,
    silent_cards: Sequence[Any] = (),
) -> CardLogEntry:
    """The card-log entry for one hook call answered 200 (request and response as JSON):
    the cards returned, then the silent-mode cards (rendered, never returned), marked silent."""
    hook = _text(request.get("hook"), 64) if isinstance(request, dict) else ""
    cards_json = response.get("cards") if isinstance(response, dict) else None
    shown = cards_json if isinstance(cards_json, list) else []
    cards: list[IssuedCard] = []
    for index, card in enumerate([*shown, *silent_cards]):
        if not isinstance(card, dict) or not isinstance(card.get("uuid"), str):
            continue
        source = card.get("source")
        topic = source.get("topic") if isinstance(source, dict) else None
        rule_id = _text(topic.get("code"), 128) if isinstance(topic, dict) else ""
        suggestions: list[Mapping[str, str | None]] = []
        for suggestion in card.get("suggestions") or []:
            if not isinstance(suggestion, dict):
                continue
            key, template = labels.match(_text(suggestion.get("label"), 1000))
            suggestions.append(
                {"uuid": _text(suggestion.get("uuid"), 64) or None, "key": key, "label": template}
            )
        rule_id = rule_id or "unknown"
        cards.append(
            IssuedCard(
                card_uuid=card["uuid"][:64],
                rule_id=rule_id,
                service_id=service_id,
                hook=hook,
                indicator=_text(card.get("indicator"), 16),
                issued_at=now,
                patient_key=patient_key,
                suggestions=tuple(suggestions),
                silent=index >= len(shown),
                covers=_covers(card, rule_id),
            )
        )
    return CardLogEntry(
        HookCall(now.date(), service_id, any(not c.silent for c in cards)), tuple(cards)
    )


def patient_of(request: Any) -> tuple[str, str]:
    """(fhirServer, patientId) of a hook request; empty strings where absent."""
    if not isinstance(request, dict):
        return "", ""
    context = request.get("context")
    patient = context.get("patientId") if isinstance(context, dict) else None
    return _text(request.get("fhirServer"), 2048), _text(patient, 1024)
