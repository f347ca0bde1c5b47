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

import dataclasses
import datetime as dt
import hashlib
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
    decision: str = ""  # the decision key of a shown order card ("" = none)
    decision_key: str | None = None  # the ordering decision (None: patient-view)
    variant: str | None = None
    prescriber_key: str | None = None
    knowledge_version: str | None = None
    settings_digest: str | None = None


@dataclass(frozen=True)
class OrderCall:
    """One order-select / order-sign call, keyed (see schema.order_call)."""

    called_at: dt.datetime
    service_id: str
    hook: str
    decision_key: str
    opioid: bool
    encounter_key: str
    decision_drafts: tuple[str, ...]
    draft_keys: tuple[str, ...]
    classes: tuple[str, ...]
    prescriber_key: str | None


@dataclass(frozen=True)
class HookCall:
    day: dt.date
    service_id: str
    with_cards: bool
    order: OrderCall | None = None


@dataclass(frozen=True)
class ServiceState:
    """What the service was when it issued a card: the knowledge version and a digest of
    each rule's settings (built once at start-up)."""

    knowledge_version: str
    settings_digests: Mapping[str, str]

    @classmethod
    def of(cls, knowledge_version: str, settings_rules: Mapping[str, Any]) -> ServiceState:
        return cls(
            knowledge_version[:64],
            {rule: settings_digest(value) for rule, value in settings_rules.items()},
        )


def settings_digest(value: Any) -> str:
    """A short digest of one rule's settings (a dataclass), stable across processes."""
    is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
    data = dataclasses.asdict(value) if is_instance else value
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    decisions: Mapping[str, str] | None = None,
    order: OrderCall | None = None,
    prescriber_key: str | None = None,
    variants: Mapping[str, str] | None = None,
    state: ServiceState | None = None,
) -> CardLogEntry:
    """The card-log entry for one hook call answered 200 (request and response as JSON):
    the cards returned, then the silent-mode cards (rendered, never returned), marked silent;
    each with its decision, variant, prescriber key and the service state in force."""
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
                decision=(decisions or {}).get(card["uuid"], "") if index < len(shown) else "",
                decision_key=order.decision_key if order else None,
                variant=(variants or {}).get(card["uuid"]),
                prescriber_key=prescriber_key,
                knowledge_version=state.knowledge_version if state else None,
                settings_digest=state.settings_digests.get(rule_id) if state else None,
            )
        )
    return CardLogEntry(
        HookCall(now.date(), service_id, any(not c.silent for c in cards), order), tuple(cards)
    )


def patient_of(request: Any) -> tuple[str, str]:
    """(fhirServer, patientId) of a hook request; empty strings where absent."""
    if not isinstance(request, dict):
        return "", ""
    context = request.get("context")
    patient = context.get("patientId") if isinstance(context, dict) else None
    return _text(request.get("fhirServer"), 2048), _text(patient, 1024)


def user_of(request: Any) -> str:
    """context.userId of a hook request (the prescriber); empty where absent."""
    if not isinstance(request, dict):
        return ""
    context = request.get("context")
    return _text(context.get("userId"), 1024) if isinstance(context, dict) else ""
