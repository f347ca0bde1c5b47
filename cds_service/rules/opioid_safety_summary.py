"""opioid-safety-summary: at chart opening, one card summarising opioid safety for a patient
with low back pain who has current opioids.

When: patient-view, the patient has low back pain and at least one current opioid analgesic.
Unless: a shared patient exclusion applies (under 18, cancer, sickle cell disease, hospice).
Then: one info card: current opioids with MME/day each and in total (unknown doses named, never
      counted as 0), benzodiazepine / CNS depressant co-use, naloxone on hand, first-line
      therapies tried and not tried; offer naloxone when none is on record.
Source: CDC 2022 Recommendations 1, 2, 4, 5, 8 and 11 (reassess benefits and risks, MME,
        naloxone, avoid co-prescribing); ACP 2017 low back pain guideline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cds_service.facts import ClinicalFacts
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import BENZODIAZEPINE, NALOXONE, OPIOID
from cds_service.knowledge.dosing import mme_for, total_mme
from cds_service.rules import Finding, SuggestionSpec
from cds_service.rules.criteria import first_line_drug_trials, low_back_pain, non_drug_therapies
from cds_service.rules.exclusions import patient_exclusion

RULE_ID = "opioid-safety-summary"
HOOKS = frozenset({"patient-view"})


def evaluate(record: PatientRecord, facts: ClinicalFacts,
             settings: Mapping[str, Any]) -> list[Finding]:
    opioids = [u for u in facts.history if u.active and u.has(OPIOID)
               and u.resource.get("resourceType") != "MedicationDispense"]
    if not opioids or not low_back_pain(facts):
        return []
    if patient_exclusion(record, facts, settings.get("exclusions", {})):
        return []
    table = str(settings.get("mme_table", "cdc-2022"))
    lines: list[str] = []
    results = []
    for use in opioids:
        result = mme_for(use.resource, use.classification, table)
        results.append(result)
        mme = (f"{result.mme_per_day:g} MME/day" if result.mme_per_day is not None
               else result.reason or "MME unknown")
        lines.append(f"Current opioid: {use.classification.label}, {mme}")
    total = total_mme(results)
    if total.complete:
        total_text = f"{total.mme_per_day:g} MME/day"
    elif total.mme_per_day > 0:
        total_text = f"at least {total.mme_per_day:g} MME/day (some doses are unknown)"
    else:
        total_text = "MME unknown (dose not computable)"
    lines.append(f"Total: {total_text}")
    depressant_classes = (BENZODIAZEPINE, *settings.get("cns_depressant_classes",
                                                        ["gabapentinoid"]))
    co_use = [u for u in facts.history if u.active and not u.has(OPIOID)
              and any(u.has(c) for c in depressant_classes)]
    lines += [f"Taken with: {u.classification.label}" for u in co_use]
    naloxone = any(u.active and u.has(NALOXONE) for u in facts.history)
    lines.append("Naloxone on record: yes" if naloxone else "Naloxone on record: none")
    since = facts.today - dt.timedelta(days=int(settings.get("lookback_days", 730)))
    drugs = first_line_drug_trials(facts, since, include_drafts=False)
    therapies = ([] if {"procedures", "serviceRequests"} <= record.unavailable
                 else non_drug_therapies(record, since))
    tried = [d.classification.label for d in drugs] + [t.label for t in therapies]
    not_tried = []
    if not drugs:
        not_tried.append("NSAID or acetaminophen")
    if not therapies:
        not_tried.append("exercise/physical or psychological therapy")
    lines.append("First-line tried: " + (", ".join(dict.fromkeys(tried)) or "none on record"))
    if not_tried:
        lines.append("First-line not tried: " + ", ".join(not_tried))

    flags = []
    if co_use:
        flags.append("with a benzodiazepine" if any(u.has(BENZODIAZEPINE) for u in co_use)
                     else "with a CNS depressant")
    if not naloxone:
        flags.append("no naloxone")
    values = {
        "count": str(len(opioids)),
        "plural": "s" if len(opioids) > 1 else "",
        "total": total_text.split(" (")[0],
        "flags": ("; " + ", ".join(flags)) if flags else "",
    }
    suggestions = () if naloxone else (SuggestionSpec("naloxone",
                                                      {"patient_id": record.patient_id}),)
    return [Finding(RULE_ID, "summary", values, tuple(lines), suggestions)]
