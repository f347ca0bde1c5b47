"""Who must not be alerted (clinical brief 4; CDC 2022 scope). Each exclusion is switchable in
the settings file (`exclusions`), and each returns the reason in clinical words so the logs
and tests can say why a rule stayed silent.

- under 18 years old (the guideline's scope is adults);
- active cancer or cancer-related pain (ICD-10-CM C00-C96, D03, D37-D49, G89.3);
- sickle cell disease (not trait);
- hospice, palliative or end-of-life care (conditions, procedures or service requests);
- orders outside ambulatory prescribing: inpatient category, injectable route;
- opioid use disorder treated with buprenorphine or methadone (rules that judge an opioid
  start for pain: MOUD is not a pain opioid start, and CDC 2022 says not to withhold it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.facts import ClinicalFacts, MedicationUse, category_codes
from cds_service.fhir.read import status_code
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import OPIOID
from cds_service.knowledge.conditions import CONDITIONS
from cds_service.rules.criteria import treats_opioid_use_disorder

DEFAULTS = {
    "under_18": True,
    "cancer": True,
    "sickle_cell_disease": True,
    "hospice_palliative": True,
    "inpatient_or_injectable": True,
    "oud_treatment": True,
}


def _on(settings: Mapping[str, Any], name: str) -> bool:
    return bool(settings.get(name, DEFAULTS[name]))


def patient_exclusion(record: PatientRecord, facts: ClinicalFacts,
                      settings: Mapping[str, Any]) -> str | None:
    """The first patient-level reason to stay silent, or None."""
    age = facts.age_years
    if _on(settings, "under_18") and age is not None and age < 18:
        return "patient is under 18"
    if _on(settings, "cancer") and facts.conditions_in("cancer"):
        return "active cancer or cancer-related pain"
    if _on(settings, "sickle_cell_disease") and facts.conditions_in("sickle-cell-disease"):
        return "sickle cell disease"
    if _on(settings, "hospice_palliative"):
        if facts.conditions_in("hospice-palliative"):
            return "hospice, palliative or end-of-life care"
        for resource in (*record.procedures, *record.service_requests):
            if "hospice-palliative" in CONDITIONS.categories(resource.get("code")):
                status = status_code(resource, "status")  # a list status is unhashable
                if status not in {"entered-in-error", "revoked", "not-done"}:
                    return "hospice, palliative or end-of-life care"
    return None


def order_exclusion(use: MedicationUse, settings: Mapping[str, Any]) -> str | None:
    """Why an order is outside the ambulatory prescribing these rules judge, or None."""
    if not _on(settings, "inpatient_or_injectable"):
        return None
    if "inpatient" in category_codes(use.resource):
        return "inpatient order"
    if use.classification.route == "injectable":
        return "injectable"
    return None


def oud_treatment(facts: ClinicalFacts, settings: Mapping[str, Any]) -> str | None:
    """Opioid use disorder treated with buprenorphine or methadone (current or being ordered)."""
    if not _on(settings, "oud_treatment"):
        return None
    for use in (*facts.history, *facts.drafts):
        if (use.active or use.is_draft) and treats_opioid_use_disorder(use, facts):
            drug = "methadone" if "methadone" in use.classification.names else "buprenorphine"
            return f"on {drug} for opioid use disorder"
    return None


def pain_opioid_drafts_in_scope(record: PatientRecord, facts: ClinicalFacts,
                                settings: Mapping[str, Any]) -> list[MedicationUse]:
    """The draft opioid analgesics in focus that a pain-opioid rule may judge: none when a
    patient exclusion or opioid use disorder treatment applies; excluded orders left out."""
    drafts = [d for d in facts.drafts
              if d.in_focus and d.has(OPIOID) and order_exclusion(d, settings) is None]
    if not drafts or patient_exclusion(record, facts, settings) or oud_treatment(facts, settings):
        return []
    return drafts
