"""opioid-benzodiazepine: an opioid together with a benzodiazepine or another CNS depressant.

When: an opioid is ordered while a benzodiazepine is active, a benzodiazepine is ordered while
      an opioid is active, or both are in the same set of draft orders (order-select: advice
      about the selected orders; order-sign: all drafts); on patient-view, when both are active.
      Other CNS depressants (gabapentinoids by default; Z-drugs, barbiturates, carisoprodol by
      setting) give their own, softer card.
Unless: the other medication is not current (past its supply end, not merely "active" status);
      a shared patient exclusion applies (under 18, cancer, sickle cell disease, hospice or
      palliative care); the orders are inpatient or injectable (procedural sedation).
Then: warn, name both medications from the record, advise avoiding the combination (gradual
      taper, not abrupt stop), offer removing the draft and co-prescribing naloxone. Buprenorphine
      or methadone for opioid use disorder gets different advice: do not withhold it.
Source: CDC Clinical Practice Guideline for Prescribing Opioids for Pain, 2022, Recommendation 11;
        FDA boxed warning (2016) on opioid + benzodiazepine co-use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cds_service.facts import ClinicalFacts, MedicationUse
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import BENZODIAZEPINE, MOUD, NALOXONE, OPIOID
from cds_service.rules import Finding, SuggestionSpec
from cds_service.rules.criteria import treats_opioid_use_disorder
from cds_service.rules.exclusions import order_exclusion, patient_exclusion

RULE_ID = "opioid-benzodiazepine"
HOOKS = frozenset({"order-select", "order-sign", "patient-view"})

_OPIOID_CLASSES = (OPIOID, MOUD)


def _is_opioid(use: MedicationUse) -> bool:
    return any(use.has(c) for c in _OPIOID_CLASSES)


def _depressant_classes(settings: Mapping[str, Any]) -> tuple[str, ...]:
    others = settings.get("cns_depressant_classes", ["gabapentinoid"])
    return (BENZODIAZEPINE, *[c for c in others if c != BENZODIAZEPINE])


def _is_depressant(use: MedicationUse, classes: tuple[str, ...]) -> bool:
    return any(use.has(c) for c in classes)


def _name(use: MedicationUse) -> str:
    return " / ".join(use.classification.names) or use.classification.label or "medication"


def _date(day: dt.date | None) -> str:
    return day.isoformat() if day else "date not recorded"


def _describe(use: MedicationUse) -> str:
    label = use.classification.label or _name(use)
    if use.is_draft:
        return f"{label}: draft order being placed now"
    kind = {"MedicationRequest": "ordered", "MedicationDispense": "dispensed",
            "MedicationStatement": "reported taking"}.get(
        str(use.resource.get("resourceType")), "recorded")
    through = f", counted as current through {use.end.isoformat()}" if use.end else ""
    return f"{label}: {kind} {_date(use.start)}{through}"


def _pairs(facts: ClinicalFacts, depressants: tuple[str, ...], patient_view: bool,
           exclusions: Mapping[str, Any]) -> list[tuple[MedicationUse, MedicationUse]]:
    pairs: list[tuple[MedicationUse, MedicationUse]] = []
    current = [m for m in facts.history
               if m.active and order_exclusion(m, exclusions) is None]
    active_opioids = [m for m in current if _is_opioid(m)]
    active_depressants = [m for m in current if _is_depressant(m, depressants)]
    if patient_view:
        return [(o, d) for o in active_opioids for d in active_depressants if o is not d]
    drafts = [m for m in facts.drafts if order_exclusion(m, exclusions) is None]
    draft_opioids = [m for m in drafts if _is_opioid(m)]
    draft_depressants = [m for m in drafts if _is_depressant(m, depressants)]
    for draft in drafts:
        if not draft.in_focus:
            continue
        if _is_opioid(draft):
            pairs.extend((draft, d) for d in active_depressants + draft_depressants
                         if d is not draft)
        if _is_depressant(draft, depressants):
            pairs.extend((o, draft) for o in active_opioids + draft_opioids
                         if o is not draft)
    unique: list[tuple[MedicationUse, MedicationUse]] = []
    for pair in pairs:
        if not any(pair[0] is u[0] and pair[1] is u[1] for u in unique):
            unique.append(pair)
    return unique


def evaluate(record: PatientRecord, facts: ClinicalFacts,
             settings: Mapping[str, Any]) -> list[Finding]:
    depressants = _depressant_classes(settings)
    patient_view = record.hook == "patient-view"
    exclusions = settings.get("exclusions", {})
    pairs = _pairs(facts, depressants, patient_view, exclusions)
    if not pairs or patient_exclusion(record, facts, exclusions):
        return []

    opioids = _unique([o for o, _ in pairs])
    others = _unique([d for _, d in pairs])
    with_benzo = any(d.has(BENZODIAZEPINE) for d in others)
    moud_only = all(treats_opioid_use_disorder(o, facts) for o in opioids)
    if with_benzo:
        variant = "moud-benzodiazepine" if moud_only else "opioid-benzodiazepine"
    else:
        variant = "opioid-cns-depressant"
    if patient_view:
        variant = f"chart-{variant}"

    suggestions: list[SuggestionSpec] = []
    for use in (*opioids, *others):
        draft_id = use.resource.get("id")
        removable = use.is_draft and use.in_focus and isinstance(draft_id, str) and draft_id
        if removable and not treats_opioid_use_disorder(use, facts):
            suggestions.append(SuggestionSpec("remove-draft", {
                "drug": _name(use),
                "resource_id": f"MedicationRequest/{draft_id}",
            }))
    naloxone_on_hand = any(m.has(NALOXONE) for m in facts.history if m.active) or any(
        m.has(NALOXONE) for m in facts.drafts)
    if not naloxone_on_hand and not patient_view:
        suggestions.append(SuggestionSpec("naloxone", {"patient_id": record.patient_id}))

    other_classes = sorted({c for d in others for c in depressants if d.has(c)})
    values = {
        "opioids": ", ".join(_name(o) for o in opioids),
        "depressants": ", ".join(_name(d) for d in others),
        "depressant_classes": ", ".join(other_classes),
        "naloxone_status": "Naloxone is already on record." if naloxone_on_hand
        else "No naloxone is on record.",
    }
    evidence = tuple(_describe(u) for u in (*opioids, *others))
    return [Finding(RULE_ID, variant, values, evidence, tuple(suggestions))]


def _unique(uses: list[MedicationUse]) -> list[MedicationUse]:
    out: list[MedicationUse] = []
    for use in uses:
        if not any(use is seen for seen in out):
            out.append(use)
    return out
