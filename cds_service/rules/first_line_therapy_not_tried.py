"""first-line-therapy-not-tried: an opioid ordered for low back pain before first-line therapy.

When: a draft opioid analgesic (tramadol included; order-select: the selected orders) for a
      patient with low back pain of any duration, and within the look-back (default 2 years)
      either first-line step has no record: the drug step (an NSAID or acetaminophen, any status
      but entered-in-error, not as part of an opioid combination) or the non-drug step
      (exercise/physical therapy, psychological or mind-body therapy, spinal manipulation,
      acupuncture, massage, multidisciplinary rehabilitation, as a Procedure or ServiceRequest).
Unless: a shared exclusion applies; a step whose records were not available is not called
      missing (the card says so instead).
Then: warning when both steps are missing, info when one is; the card lists exactly which
      steps were found (with dates) and which are missing, notes untried second-line options
      (muscle relaxant, duloxetine, tricyclic), and offers the missing steps as orders.
Source: ACP 2017 guideline for acute, subacute and chronic low back pain; CDC 2022
        Recommendation 2 (maximise non-opioid therapies first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cds_service.facts import ClinicalFacts
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.conditions import THERAPIES
from cds_service.rules import Finding, SuggestionSpec, draft_suggestions, short_name
from cds_service.rules.criteria import (
    first_line_drug_trials,
    low_back_pain,
    non_drug_therapies,
    second_line_trials,
)
from cds_service.rules.exclusions import pain_opioid_drafts_in_scope

RULE_ID = "first-line-therapy-not-tried"
HOOKS = frozenset({"order-select", "order-sign"})


def _when(day: dt.date | None) -> str:
    return day.isoformat() if day else "date not recorded"


def evaluate(record: PatientRecord, facts: ClinicalFacts,
             settings: Mapping[str, Any]) -> list[Finding]:
    drafts = pain_opioid_drafts_in_scope(record, facts, settings.get("exclusions", {}))
    if not drafts:
        return []
    pain = low_back_pain(facts)
    if not pain:
        return []
    since = facts.today - dt.timedelta(days=int(settings.get("lookback_days", 730)))
    drug_trials = first_line_drug_trials(facts, since)
    non_drug = non_drug_therapies(record, since)
    non_drug_known = bool(non_drug) or not {"procedures", "serviceRequests"} <= record.unavailable
    drug_missing = not drug_trials and "meds" not in record.partial
    non_drug_missing = non_drug_known and not non_drug
    if not drug_missing and not non_drug_missing:
        return []

    condition = pain[0]
    evidence: list[str] = [f"Low back pain: {condition.label} ({condition.onset_source or 'date'} "
                           f"{_when(condition.onset)})"]
    evidence += [f"Being ordered: {d.classification.label}" for d in drafts]
    for trial in drug_trials:
        evidence.append(f"Found: {trial.classification.label} "
                        f"({'being ordered now' if trial.is_draft else _when(trial.start)})")
    for therapy in non_drug:
        when = therapy.kind if therapy.date is None and therapy.kind == "being ordered now" \
            else f"{therapy.kind} {_when(therapy.date)}"
        evidence.append(f"Found: {therapy.label} ({when})")
    if drug_missing:
        evidence.append(f"Missing: no NSAID or acetaminophen since {since.isoformat()}")
    if non_drug_missing:
        evidence.append("Missing: no exercise or physical therapy, psychological therapy (CBT), "
                        f"spinal manipulation, acupuncture or massage since {since.isoformat()}")
    if not non_drug_known:
        evidence.append("Not checked: procedure and referral records were not available")
    if not second_line_trials(facts, since):
        evidence.append("Second-line options not tried either: no muscle relaxant (up to 4 "
                        "weeks), duloxetine or tricyclic antidepressant on record")

    variant = ("both-missing" if drug_missing and non_drug_missing
               else "drug-missing" if drug_missing else "non-drug-missing")
    missing_steps = []
    if drug_missing:
        missing_steps.append("an NSAID or acetaminophen")
    if non_drug_missing:
        missing_steps.append("non-drug therapy")
    found_steps = sorted({THERAPIES.step_labels[t.step] for t in non_drug})
    values = {
        "drug": ", ".join(dict.fromkeys(short_name(d) for d in drafts)),
        "missing": " and ".join(missing_steps),
        "found": ", ".join(found_steps) or "none",
    }
    suggestions: list[SuggestionSpec] = []
    if drug_missing:
        suggestions += draft_suggestions(drafts, record.patient_id)
    if non_drug_missing:
        suggestions += [SuggestionSpec("refer-physical-therapy", {"patient_id": record.patient_id}),
                        SuggestionSpec("refer-cbt", {"patient_id": record.patient_id})]
    return [Finding(RULE_ID, variant, values, tuple(evidence), tuple(suggestions))]
