"""Seeded card logs for the governance report tests, and the report's figures computed
independently from the seed (plain loops over the seeded cards and feedback, no SQL)."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from cds_service.rules.base import Rule
from cds_service.rules.registry import default_rules
from cds_service.store import Store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard

SIGN = "opioid-lbp-order-sign"
SELECT = "opioid-lbp-order-select"
VIEW = "opioid-lbp-patient-view"
HOOKS = {SIGN: "order-sign", SELECT: "order-select", VIEW: "patient-view"}


def rules_by_service(rules: tuple[Rule, ...] | None = None) -> dict[str, tuple[str, ...]]:
    """The registered rules of each service (those declaring its hook): a new rule is seeded
    too, so the analytics tests never pin the rule set."""
    rules = default_rules() if rules is None else rules
    return {
        service: tuple(sorted(r.id for r in rules if hook in r.hooks))
        for service, hook in HOOKS.items()
    }


# the start card also answers the first-line concern (covers), when both are registered
COVERING = ("opioid-start-chronic-lbp", "first-line-therapy-not-tried")
CATALOGUE = (
    "refractory",
    "acute-flare-short-course",
    "palliative",
    "benefit-outweighs-risk",
    "data-incorrect",
)
TEMPLATES = (
    ("naloxone", "Co-prescribe naloxone 4 mg nasal spray"),
    ("remove-draft", "Remove the draft {drug} order"),
    ("refer-physical-therapy", "Refer to physical therapy (exercise therapy) for low back pain"),
)
FIRST_DAY = dt.date(2026, 9, 28)  # a Monday: ISO week 2026-W40
DAYS = 56


@dataclass
class Seed:
    cards: list[IssuedCard] = field(default_factory=list)
    calls: Counter[tuple[dt.date, str]] = field(default_factory=Counter)
    feedback: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (service, item)


def make_seed(seed: int = 7, silent_rule: str = "first-line-therapy-not-tried") -> Seed:
    """About 300 cards over eight weeks on three services: covers, silent cards, repeated
    patients, feedback accepted (with suggestions), overridden (catalogue codes, a code
    outside the catalogue, no code), both, resent, and for uuids never issued."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    out = Seed()
    by_service = rules_by_service()
    registered = {rule for rules in by_service.values() for rule in rules}
    for offset in range(DAYS):
        day = FIRST_DAY + dt.timedelta(days=offset)
        for service, rules in by_service.items():
            calls = rng.randint(3, 12)
            out.calls[(day, service)] += calls
            for _ in range(rng.randint(0, min(calls, 4))):
                rule = rng.choice(rules)
                covers: tuple[str, ...] = ()
                if rule == COVERING[0] and COVERING[1] in registered and rng.random() < 0.4:
                    covers = (COVERING[1],)
                at = dt.datetime.combine(
                    day, dt.time(rng.randint(0, 23), rng.randint(0, 59)), dt.UTC
                )
                suggestions = tuple(
                    {
                        "uuid": f"s-{len(out.cards)}-{i}",
                        "key": key,
                        "label": None if rng.random() < 0.1 else label,
                    }
                    for i, (key, label) in enumerate(rng.sample(TEMPLATES, rng.randint(0, 2)))
                )
                out.cards.append(
                    IssuedCard(
                        card_uuid=f"card-{len(out.cards):04d}",
                        rule_id=rule,
                        service_id=service,
                        hook=HOOKS[service],
                        indicator="warning",
                        issued_at=at,
                        patient_key=f"{rng.randint(0, 40):064x}",
                        suggestions=suggestions,
                        silent=rule == silent_rule,
                        covers=covers,
                    )
                )
    for card in out.cards:
        if card.silent:
            continue
        roll = rng.random()
        stamp = card.issued_at.isoformat()
        if roll < 0.3:
            ids = [str(s["uuid"]) for s in card.suggestions if rng.random() < 0.7]
            if rng.random() < 0.1:
                ids.append("not-offered")
            out.feedback.append((card.service_id, _item(card.card_uuid, "accepted", stamp, ids)))
        elif roll < 0.6:
            code = rng.choice((*CATALOGUE, "", "free text the EHR typed"))
            out.feedback.append(
                (card.service_id, _item(card.card_uuid, "overridden", stamp, reason=code))
            )
            if rng.random() < 0.15:  # overridden again later with another reason
                out.feedback.append(
                    (
                        card.service_id,
                        _item(
                            card.card_uuid, "overridden", stamp + "+1", reason=rng.choice(CATALOGUE)
                        ),
                    )
                )
            if rng.random() < 0.1:  # and then accepted: accepted wins
                out.feedback.append(
                    (card.service_id, _item(card.card_uuid, "accepted", stamp + "+2"))
                )
        if out.feedback and rng.random() < 0.05:
            out.feedback.append(out.feedback[-1])  # resent: stored once
    out.feedback.append((SIGN, _item("never-issued", "accepted", "x")))
    return out


def _item(
    card: str, outcome: str, stamp: str, accepted: list[str] | None = None, reason: str = ""
) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": outcome,
        "outcomeTimestamp": stamp,
        "acceptedSuggestions": accepted or [],
        "overrideReason": reason,
    }


def write_seed(store: Store, seed: Seed) -> None:
    """Write the seed through the store's own write paths (card log batches, feedback)."""
    by_day: dict[tuple[dt.date, str], list[IssuedCard]] = defaultdict(list)
    for card in seed.cards:
        by_day[(card.issued_at.date(), card.service_id)].append(card)
    entries = []
    for (day, service), calls in sorted(seed.calls.items()):
        cards = by_day.get((day, service), [])
        for index in range(calls):
            mine = tuple(cards) if index == 0 else ()
            entries.append(CardLogEntry(HookCall(day, service, bool(mine)), mine))
    store.write_card_log(entries)
    for service, item in seed.feedback:
        store.add_feedback(service, [item])


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def expected(
    seed: Seed, since: dt.date, until: dt.date, reasons: dict[str, str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The report's figures per (rule, service), computed from the seed alone."""
    feedback: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen = set()
    for _, item in seed.feedback:
        key = (item["card"], item["outcome"], item["outcomeTimestamp"])
        if key not in seen:  # a resent item counts once
            seen.add(key)
            feedback[item["card"]].append(item)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for card in seed.cards:
        if not since <= card.issued_at.date() <= until:
            continue
        items = feedback[card.card_uuid]
        accepted = any(i["outcome"] == "accepted" for i in items)
        overridden = not accepted and any(i["outcome"] == "overridden" for i in items)
        for rule in (card.rule_id, *card.covers):
            row = rows.setdefault(
                (rule, card.service_id),
                {
                    "cards": 0,
                    "own_cards": 0,
                    "covered_cards": 0,
                    "silent_cards": 0,
                    "patients": set(),
                    "accepted": 0,
                    "overridden": 0,
                    "reasons": Counter(),
                    "suggestions": Counter(),
                    "weeks": defaultdict(Counter),
                },
            )
            row["cards"] += 1
            row["own_cards" if rule == card.rule_id else "covered_cards"] += 1
            row["silent_cards"] += card.silent
            row["patients"].add(card.patient_key)
            row["accepted"] += accepted
            row["overridden"] += overridden
            week = row["weeks"][iso_week(card.issued_at.date())]
            week["cards"] += 1
            week["accepted"] += accepted
            week["overridden"] += overridden
            if overridden:
                codes = set()
                for item in items:
                    if item["outcome"] == "overridden":
                        code = item["overrideReason"]
                        codes.add("none" if not code else code if code in reasons else "other")
                for code in codes:
                    row["reasons"][code] += 1
            labels = {
                s["uuid"]: s["label"] or "Other suggestion (label matches no template)"
                for s in card.suggestions
            }
            taken = {
                u
                for i in items
                if i["outcome"] == "accepted"
                for u in i["acceptedSuggestions"]
                if u in labels
            }
            for suggestion in taken:
                row["suggestions"][labels[suggestion]] += 1
    for row in rows.values():
        row["patients"] = len(row["patients"])
        row["no_response"] = row["cards"] - row["accepted"] - row["overridden"]
    return rows


def calls_between(seed: Seed, service: str, since: dt.date, until: dt.date) -> int:
    return sum(
        n for (day, svc), n in seed.calls.items() if svc == service and since <= day <= until
    )
