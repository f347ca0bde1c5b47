"""A seeded card log per ordering decision, with the expected governance figures recorded
while the seed is generated (what each decision was, what its last answer was), never
recomputed from the stored rows: the report must arrive at the same numbers from the store.

Exercised: order-select + order-sign of one draft (one decision, two cards), sign-only and
select-only decisions, a covering card (the covered rule counted apart), a silent rule,
variants, answers that change (last wins), resent answers, override reasons of every class
and outside the catalogue, suggestions acted on by a later order-sign (removal, naloxone),
patient-view cards on a service whose EHR sends no feedback, skewed prescribers, and a
knowledge-version and a settings change on known days.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from cds_service.store import Store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, OrderCall

SIGN = "opioid-lbp-order-sign"
SELECT = "opioid-lbp-order-select"
VIEW = "opioid-lbp-patient-view"
LBP = "opioid-start-chronic-lbp"
BENZO = "opioid-benzodiazepine"
FIRST_LINE = "first-line-therapy-not-tried"  # silent in the tests' settings
SUMMARY = "opioid-safety-summary"
FIRST_DAY = dt.date(2026, 9, 28)  # a Monday, ISO week 2026-W40
DAYS = 42
KNOWLEDGE_CHANGE = FIRST_DAY + dt.timedelta(days=21)
SETTINGS_CHANGE = FIRST_DAY + dt.timedelta(days=28)
REASONS = {  # code -> class, as in cards/override-reasons.json
    "palliative": "not-applicable",
    "data-incorrect": "not-applicable",
    "first-line-tried-elsewhere": "not-applicable",
    "refractory": "clinical-judgement",
    "acute-flare-short-course": "clinical-judgement",
    "benefit-outweighs-risk": "patient-benefit",
}
PRESCRIBERS = [f"prescriber-key-{i:02d}" for i in range(1, 31)]
ORDER = "ordering"
CHART = "chart review"


@dataclass
class Expected:
    firings: Counter[tuple[str, str]] = field(default_factory=Counter)
    cards: Counter[tuple[str, str]] = field(default_factory=Counter)
    silent: Counter[tuple[str, str]] = field(default_factory=Counter)
    covered: Counter[tuple[str, str]] = field(default_factory=Counter)
    outcome: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    reasons: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    classes: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    variants: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    by_prescriber: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    overrides_by: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    all_firings_by: Counter[str] = field(default_factory=Counter)
    all_overrides_by: Counter[str] = field(default_factory=Counter)
    opioid_decisions: int = 0
    order_decisions: int = 0
    view_calls: int = 0


@dataclass
class DecisionSeed:
    entries: list[CardLogEntry] = field(default_factory=list)
    feedback: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    expected: Expected = field(default_factory=Expected)
    patient_ids: list[str] = field(default_factory=list)  # never to appear in any output


def top_share_pct(counts: Counter[str]) -> float | None:
    """Share of the total held by the top 10 % of prescribers (at least one), in percent."""
    ranked = sorted(counts.values(), reverse=True)
    if not ranked:
        return None
    top = math.ceil(len(ranked) / 10)
    return round(100 * sum(ranked[:top]) / sum(ranked), 1)


def _stamp(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def make_decision_seed(seed: int = 11) -> DecisionSeed:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    out = DecisionSeed()
    exp = out.expected
    counter = 0

    def uuid() -> str:
        nonlocal counter
        counter += 1
        return f"dcard-{counter:05d}"

    def state(day: dt.date, rule: str) -> tuple[str, str]:
        knowledge = "2026.10" if day < KNOWLEDGE_CHANGE else "2026.11"
        digest = "a" * 16 if rule != LBP or day < SETTINGS_CHANGE else "b" * 16
        return knowledge, digest

    for offset in range(DAYS):
        day = FIRST_DAY + dt.timedelta(days=offset)
        for number in range(rng.randint(3, 8)):
            minute = dt.datetime.combine(day, dt.time(8 + number, 0), dt.UTC)
            decision = f"dec-{offset:02d}-{number}"
            encounter = f"enc-{offset:02d}-{number}"
            patient_id = f"patient-{offset}-{number}"
            out.patient_ids.append(patient_id)
            patient = f"{offset * 16 + number:064x}"
            # a few prescribers write most orders
            prescriber = (
                None
                if rng.random() < 0.05
                else PRESCRIBERS[min(int(rng.paretovariate(1.2)) - 1, len(PRESCRIBERS) - 1)]
            )
            opioid = rng.random() < 0.85
            exp.order_decisions += 1
            exp.opioid_decisions += opioid
            shape = rng.choice(["pair", "pair", "pair", "sign", "select"])
            hooks = {"pair": ["order-select", "order-sign"], "sign": ["order-sign"]}.get(
                shape, ["order-select"]
            )
            rule = None
            if opioid:
                rule = rng.choice([LBP, LBP, BENZO, FIRST_LINE, None, None])
            covers = (FIRST_LINE,) if rule == LBP and rng.random() < 0.4 else ()
            variant = rng.choice(["new-start", "continuation"]) if rule else None
            suggestions = (
                ({"uuid": f"{decision}-s1", "key": "remove-draft", "label": "Remove the draft"},)
                if rule == LBP
                else ({"uuid": f"{decision}-s1", "key": "naloxone", "label": "Naloxone"},)
                if rule == BENZO
                else ()
            )
            cards: list[IssuedCard] = []
            last_call = minute
            for index, hook in enumerate(hooks):
                at = minute + dt.timedelta(minutes=5 * index)
                last_call = at
                service = SELECT if hook == "order-select" else SIGN
                mine: tuple[IssuedCard, ...] = ()
                if rule:
                    knowledge, digest = state(day, rule)
                    card = IssuedCard(
                        card_uuid=uuid(),
                        rule_id=rule,
                        service_id=service,
                        hook=hook,
                        indicator="warning",
                        issued_at=at,
                        patient_key=patient,
                        suggestions=suggestions,
                        silent=rule == FIRST_LINE,
                        covers=covers,
                        decision_key=decision,
                        variant=variant,
                        prescriber_key=prescriber,
                        knowledge_version=knowledge,
                        settings_digest=digest,
                    )
                    mine = (card,)
                    cards.append(card)
                order = OrderCall(
                    at,
                    service,
                    hook,
                    decision,
                    opioid,
                    encounter,
                    (f"{decision}-draft",),
                    (f"{decision}-draft",),
                    ("opioid-analgesic",) if opioid else ("nsaid",),
                    prescriber,
                )
                out.entries.append(
                    CardLogEntry(
                        HookCall(day, service, bool(mine) and not mine[0].silent, order), mine
                    )
                )
            if not rule:
                continue
            key = (rule, ORDER)
            exp.firings[key] += 1
            exp.cards[key] += len(cards)
            exp.variants[key][variant or ""] += 1
            for covered in covers:
                exp.covered[(covered, ORDER)] += 1
            if prescriber:
                exp.by_prescriber[key][prescriber] += 1
                exp.all_firings_by[prescriber] += 1
            if rule == FIRST_LINE:
                exp.silent[key] += 1
                continue
            # the answers: last one wins, across the decision's cards
            plan = rng.choice(
                ["accept", "override", "none", "override-then-accept", "accept-then-override"]
            )
            answers: list[tuple[IssuedCard, str, str]] = []  # (card, outcome, reason)
            reason = rng.choice([*REASONS, "", "free text the EHR typed"])
            if plan == "accept":
                answers.append((rng.choice(cards), "accepted", ""))
            elif plan == "override":
                answers.append((rng.choice(cards), "overridden", reason))
            elif plan == "override-then-accept":
                answers += [(cards[0], "overridden", reason), (cards[-1], "accepted", "")]
            elif plan == "accept-then-override":
                answers += [(cards[0], "accepted", ""), (cards[-1], "overridden", reason)]
            for step, (card, outcome, code) in enumerate(answers):
                when = last_call + dt.timedelta(minutes=1 + step)
                item = {
                    "card": card.card_uuid,
                    "outcome": outcome,
                    "outcomeTimestamp": _stamp(when),
                    "acceptedSuggestions": [s["uuid"] for s in suggestions]
                    if outcome == "accepted"
                    else [],
                    "overrideReason": code if outcome == "overridden" else "",
                }
                out.feedback.append((card.service_id, item))
                if rng.random() < 0.1:
                    out.feedback.append((card.service_id, item))  # resent: stored once
            if not answers:
                exp.outcome[key]["no_response"] += 1
                exp.outcome[key]["not_answered"] += 1
                continue
            final, final_code = answers[-1][1], answers[-1][2]
            if final == "accepted":
                exp.outcome[key]["accepted"] += 1
                # a later order-sign in the same encounter shows the suggestion done
                if rng.random() < 0.5:
                    later = last_call + dt.timedelta(minutes=30)
                    drafts: tuple[str, ...] = (f"{decision}-other",)
                    classes = ("naloxone-rescue",) if rule == BENZO else ("nsaid",)
                    if rule == BENZO:
                        drafts = (f"{decision}-draft", f"{decision}-naloxone")
                    out.entries.append(
                        CardLogEntry(
                            HookCall(
                                later.date(),
                                SIGN,
                                False,
                                OrderCall(
                                    later,
                                    SIGN,
                                    "order-sign",
                                    f"{decision}-later",
                                    False,
                                    encounter,
                                    drafts,
                                    drafts,
                                    classes,
                                    prescriber,
                                ),
                            ),
                            (),
                        )
                    )
                    exp.order_decisions += 1
                    exp.outcome[key]["acted_on"] += 1
            else:
                exp.outcome[key]["overridden"] += 1
                code = final_code if final_code in REASONS else "other" if final_code else "none"
                klass = REASONS.get(code, "unclassified")
                exp.reasons[key][code] += 1
                exp.classes[key][klass] += 1
                if prescriber:
                    exp.overrides_by[key][prescriber] += 1
                    exp.all_overrides_by[prescriber] += 1
        # chart reviews: patient-view calls, some with a card, never any feedback
        for number in range(rng.randint(1, 4)):
            at = dt.datetime.combine(day, dt.time(16, number), dt.UTC)
            exp.view_calls += 1
            rule = rng.choice([SUMMARY, BENZO, None])
            mine = ()
            if rule:
                knowledge, digest = state(day, rule)
                prescriber = PRESCRIBERS[number]
                mine = (
                    IssuedCard(
                        card_uuid=uuid(),
                        rule_id=rule,
                        service_id=VIEW,
                        hook="patient-view",
                        indicator="info",
                        issued_at=at,
                        patient_key=f"{offset:062x}vv",
                        suggestions=(),
                        variant="summary",
                        prescriber_key=prescriber,
                        knowledge_version=knowledge,
                        settings_digest=digest,
                    ),
                )
                key = (rule, CHART)
                exp.firings[key] += 1
                exp.cards[key] += 1
                exp.variants[key]["summary"] += 1
                exp.outcome[key]["no_response"] += 1
                exp.outcome[key]["no_feedback_from_ehr"] += 1
                exp.by_prescriber[key][prescriber] += 1
                exp.all_firings_by[prescriber] += 1
            out.entries.append(CardLogEntry(HookCall(day, VIEW, bool(mine)), mine))
    return out


def write_decision_seed(store: Store, seed: DecisionSeed) -> None:
    store.write_card_log(seed.entries)
    for service, item in seed.feedback:
        store.add_feedback(service, [item])
