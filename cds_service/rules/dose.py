"""The order's dose: its MME/day, the patient's total with it and the CDC 2022 threshold it
reaches (Recommendations 4 and 8); a current-medication line; whether a draft continues a
current opioid regimen; a draft's decision signature (the decision a card is answered for).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, MedicationUse
from cds_service.facts.model import regimen_key
from cds_service.findings import Line, Text
from cds_service.knowledge.classifier import NALOXONE, OPIOID
from cds_service.knowledge.dosing import MmeResult, total_mme
from cds_service.rules.lines import drug_label

# CDC 2022 Recommendation 4 / 8 thresholds (MME/day of the patient's total).
MME_REASSESS = 50
MME_AVOID = 90


def being_ordered(
    draft: MedicationUse, facts: ClinicalFacts | None = None, naloxone_stated: bool = False
) -> Line:
    """The draft by name; an opioid analgesic draft (given the facts) with its MME/day, the
    patient's total with it (unknown named, never 0) and the CDC 2022 threshold it reaches
    (`naloxone_stated`: the card has its own naloxone line, so the threshold does not repeat
    it)."""
    if facts is not None:  # the same line for every rule that names this draft (per request)
        key = ("being-ordered", id(draft), naloxone_stated)
        cached: tuple[MedicationUse, Line] | None = facts.memo.get(key)
        if cached is None or cached[0] is not draft:  # holding the draft keeps its id unique
            cached = facts.memo[key] = (draft, _being_ordered(draft, facts, naloxone_stated))
        return cached[1]
    return _being_ordered(draft, None, naloxone_stated)


def _being_ordered(
    draft: MedicationUse, facts: ClinicalFacts | None, naloxone_stated: bool
) -> Line:
    label = drug_label(draft)
    if facts is None or not draft.has(OPIOID):
        key = "being-ordered-er" if draft.classification.extended_release else "being-ordered"
        return Line(key, {"drug": label})
    drug: Text = (
        Line("drug-er", {"drug": label}) if draft.classification.extended_release else label
    )
    dose = order_dose(draft, facts, naloxone_stated)
    values: dict[str, Text] = {"drug": drug, "mme": dose.order, "total": dose.total}
    if dose.threshold is None:
        return Line("being-ordered-dose", values)
    values["threshold"] = dose.threshold
    return Line("being-ordered-dose-flag", values)


@dataclass(frozen=True)
class OrderDose:
    order: Line  # the order's MME/day, or "unknown (why)"
    total: Line  # the patient's total with the order: current opioids + opioid drafts
    total_mme: float  # the known part of the total
    threshold: Line | None  # the CDC 2022 threshold the total reaches (50 or 90 MME/day)


def opioid_total(facts: ClinicalFacts) -> tuple[float, bool, list[MmeResult]]:
    """The patient's MME/day with the order set: current opioid orders and statements (a
    dispense carries no dose) plus every opioid draft; (known part, complete, results). A
    draft that continues a current regimen (same ingredients and dose form: a refill or a
    dose change) counts instead of that regimen, never in addition to it."""
    cached = facts.memo.get("opioid-total")
    if cached is None:
        drafts = [d for d in facts.drafts if d.has(OPIOID)]
        continued = {regimen_key(d) for d in drafts}
        uses = [
            u
            for u in facts.current_medications()
            if u.has(OPIOID) and u.source != "dispense" and regimen_key(u) not in continued
        ]
        uses += drafts
        results = [r for r in (facts.mme(u) for u in uses) if r is not None]
        total = total_mme(results)
        cached = facts.memo["opioid-total"] = (total.mme_per_day, total.complete, results)
    known: float = cached[0]
    complete: bool = cached[1]
    results_: list[MmeResult] = cached[2]
    return known, complete, results_


def naloxone_on_hand(facts: ClinicalFacts) -> bool:
    """Naloxone is current on the record or in the order set."""
    return any(m.active for m in facts.history_with(NALOXONE)) or any(
        m.has(NALOXONE) for m in facts.drafts
    )


def order_dose(
    draft: MedicationUse, facts: ClinicalFacts, naloxone_stated: bool = False
) -> OrderDose:
    """The order's MME/day, the total with it and the threshold it reaches. At 50 MME/day the
    line never says "offer naloxone": only a card that offers it one-click says so, in its own
    line (opioid-naloxone-offer, opioid-benzodiazepine, opioid-safety-summary); naloxone on
    record is named unless the card says it already."""
    result = facts.mme(draft)
    if result is not None and result.mme_per_day is not None:
        order = Line("dose-mme", {"mme": f"{result.mme_per_day:g}"})
    else:
        reason = (result.reason if result is not None else "") or "MME unknown: dose not computable"
        order = Line("dose-mme-unknown", {"reason": reason})
    known, complete, _ = opioid_total(facts)
    if complete:
        total = Line("order-total-known", {"mme": f"{known:g}"})
    elif known > 0:
        total = Line("order-total-partial", {"mme": f"{known:g}"})
    else:
        total = Line("order-total-none")
    threshold = (
        Line("mme-threshold-90")
        if known >= MME_AVOID
        else Line(
            "mme-threshold-50-naloxone-on-record"
            if not naloxone_stated and naloxone_on_hand(facts)
            else "mme-threshold-50"
        )
        if known >= MME_REASSESS
        else None
    )
    return OrderDose(order, total, known, threshold)


# json.dumps(subject, sort_keys=True, default=str) without building an encoder per call (the
# same text: an encoder holds only its options, so one instance serves every thread). No
# circular-reference bookkeeping: parsed JSON cannot refer to itself, and a structure that did
# would still fail (RecursionError instead of ValueError), taking the same fallback below.
_SIGNATURE_JSON = json.JSONEncoder(sort_keys=True, default=str, check_circular=False)


def draft_signature(draft: MedicationUse) -> str:
    """The decision a draft order asks for: its drug, dose and supply (not its id or dates),
    as a digest. A changed drug or dose is a new decision."""
    resource = draft.resource
    subject = {
        "medication": resource.get("medicationCodeableConcept")
        or resource.get("medicationReference"),
        "dosage": resource.get("dosageInstruction"),
        "dispense": resource.get("dispenseRequest"),
    }
    try:
        text = _SIGNATURE_JSON.encode(subject)
    except (TypeError, ValueError, RecursionError):
        text = repr(id(resource))  # never equal to another call's: no suppression
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def decision_of(
    drafts: Iterable[MedicationUse], facts: ClinicalFacts | None = None
) -> tuple[str, ...]:
    """The drafts' signatures; with `facts`, each draft's is computed once per request."""
    if facts is None:
        return tuple(sorted({draft_signature(d) for d in drafts if d.is_draft}))
    signatures = set()
    for d in drafts:
        if d.is_draft:
            key = ("draft-signature", id(d))
            cached: tuple[MedicationUse, str] | None = facts.memo.get(key)
            if cached is None or cached[0] is not d:  # holding the draft keeps its id unique
                cached = facts.memo[key] = (d, draft_signature(d))
            signatures.add(cached[1])
    return tuple(sorted(signatures))


def continues_regimen(draft: MedicationUse, facts: ClinicalFacts) -> bool:
    """An opioid draft with the ingredients and dose form of a current opioid regimen: a
    refill or dose change of a long-term opioid, not a new start (CDC 2022 Recommendation 5:
    never a one-click discontinuation)."""
    if not draft.is_draft or not draft.has(OPIOID):
        return False
    key = regimen_key(draft)
    return any(u.has(OPIOID) and regimen_key(u) == key for u in facts.current_medications())


def current_medication(use: MedicationUse, facts: ClinicalFacts) -> Line:
    """The drug and the basis on which the record shows it as current."""
    if use.is_draft:
        return being_ordered(use)
    return Line(
        "current-medication",
        {
            "drug": drug_label(use),
            "basis": facts.basis(use) or Line("basis-draft"),
        },
    )
