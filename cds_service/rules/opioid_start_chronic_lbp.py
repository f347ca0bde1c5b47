"""opioid-start-chronic-lbp: an opioid analgesic started for a patient with chronic low back pain.

When: a draft opioid analgesic (tramadol and tapentadol included; order-select: the selected
      orders) for a patient who is opioid-naive (no opioid order of any status but
      entered-in-error or cancelled, dispense or statement in the last 90 days; the drafts do
      not count) and has chronic low back pain (coded chronic; low back pain with a chronic-pain
      diagnosis; or low back pain with onset, else recorded date, more than 12 weeks ago).
Unless: a shared exclusion applies (under 18, cancer, sickle cell disease, hospice/palliative
      care, inpatient or injectable order, opioid use disorder treatment), or the medication
      history sent was incomplete (opioid-naive status cannot be known).
Then: warn (critical for an extended-release / long-acting start), naming the condition and
      date that made the pain chronic and the data that showed the patient opioid-naive;
      suggest naproxen instead, physical therapy and CBT.
Source: CDC 2022 Recommendations 1-3 (non-opioid therapies preferred for subacute and chronic
        pain; immediate-release opioids when starting); ACP 2017 low back pain guideline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.facts import ClinicalFacts
from cds_service.fhir.record import PatientRecord
from cds_service.rules import Finding, SuggestionSpec, draft_suggestions, short_name
from cds_service.rules.criteria import chronic_low_back_pain, opioid_exposure
from cds_service.rules.exclusions import pain_opioid_drafts_in_scope

RULE_ID = "opioid-start-chronic-lbp"
HOOKS = frozenset({"order-select", "order-sign"})


def evaluate(record: PatientRecord, facts: ClinicalFacts,
             settings: Mapping[str, Any]) -> list[Finding]:
    drafts = pain_opioid_drafts_in_scope(record, facts, settings.get("exclusions", {}))
    if not drafts:
        return []
    chronic = chronic_low_back_pain(facts, int(settings.get("chronic_after_days", 84)))
    if chronic is None:
        return []
    if "meds" in record.partial:
        return []  # an incomplete history cannot show the patient is opioid-naive
    exposure = opioid_exposure(facts, int(settings.get("naive_lookback_days", 90)))
    if not exposure.naive:
        return []

    extended = [d for d in drafts if d.classification.extended_release]
    sources = "orders, dispenses and statements"
    if record.unavailable & {"dispenses", "statements"}:
        sources = "orders (dispense and statement records were not available)"
    evidence = (
        f"Chronic low back pain: {chronic.condition.label}, {chronic.reason}",
        f"Opioid-naive: no opioid in the patient's medication {sources} since "
        f"{exposure.window_start.isoformat()}",
        *(f"Being ordered: {d.classification.label}"
          + (" (extended-release / long-acting)" if d.classification.extended_release else "")
          for d in drafts),
    )
    values = {
        "drug": ", ".join(dict.fromkeys(short_name(d) for d in (extended or drafts))),
        "condition": chronic.condition.label,
    }
    suggestions = [*draft_suggestions(drafts, record.patient_id),
                   SuggestionSpec("refer-physical-therapy", {"patient_id": record.patient_id}),
                   SuggestionSpec("refer-cbt", {"patient_id": record.patient_id})]
    variant = "extended-release-start" if extended else "opioid-start"
    return [Finding(RULE_ID, variant, values, evidence, tuple(suggestions))]
