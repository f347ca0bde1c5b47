"""Who must not be alerted (clinical brief 4; CDC 2022 scope). Each exclusion is switchable in
the settings (`exclusions`, per rule), and each returns its name so the logs and tests can say
why a rule stayed silent.

- under 18 years old (the guideline's scope is adults);
- active cancer or cancer-related pain (not a personal history of cancer);
- sickle cell disease (not trait);
- hospice, palliative or end-of-life care, wherever the chart records it (condition,
  procedure, referral, encounter, care plan; facts.end_of_life);
- orders outside ambulatory prescribing: inpatient category, or a draft in an inpatient
  encounter unless its category says it is taken home (community, discharge, outpatient: a
  discharge prescription is prescribing the CDC 2022 guideline covers); injectable route;
- opioid use disorder treated with buprenorphine or methadone (rules that judge an opioid
  start for pain: MOUD is not a pain opioid start, and CDC 2022 says not to withhold it).
"""

from __future__ import annotations

import re

from cds_service.facts import ClinicalFacts, MedicationUse, category_codes, oud_treatment_names
from cds_service.fhir.read import as_list, codings, concept_text
from cds_service.knowledge.classifier import OPIOID
from cds_service.settings import Exclusions


def patient_exclusion(facts: ClinicalFacts, settings: Exclusions) -> str | None:
    """The first patient-level exclusion that applies, by name, or None."""
    age = facts.age_years
    if settings.under_18 and age is not None and age < 18:
        return "under_18"
    if settings.cancer and facts.conditions_in("cancer"):
        return "cancer"
    if settings.sickle_cell_disease and facts.conditions_in("sickle-cell-disease"):
        return "sickle_cell_disease"
    if settings.hospice_palliative and facts.end_of_life:
        return "hospice_palliative"
    return None


# MedicationRequest.category as FHIR R4 (medicationrequest-category) and the vendors send it:
# codes, or the words of an EHR-local coding's display or text (Epic "Discharge", Oracle
# Millennium "Community"/"Discharge" beside the inpatient encounter of the stay)
_SETTING_WORDS = {
    "inpatient": "inpatient",
    "community": "community",
    "discharge": "discharge",
    "outpatient": "outpatient",
    "ambulatory": "outpatient",
}
_TAKEN_HOME = frozenset({"community", "discharge", "outpatient"})


def order_setting(resource: dict[str, object]) -> set[str]:
    """Where the order is taken: inpatient, community, discharge or outpatient (as many as its
    categories say)."""
    found = {
        _SETTING_WORDS[c.lower()] for c in category_codes(resource) if c.lower() in _SETTING_WORDS
    }
    for category in as_list(resource.get("category")):
        words = [concept_text(category)] + [d for _, _, d in codings(category)]
        for word in re.findall(r"[a-z]+", " ".join(words).lower()):
            if word in _SETTING_WORDS:
                found.add(_SETTING_WORDS[word])
    return found


def order_exclusion(use: MedicationUse, facts: ClinicalFacts, settings: Exclusions) -> str | None:
    """Why an order is outside the ambulatory prescribing these rules judge, or None."""
    if not settings.inpatient_or_injectable:
        return None
    # each order's setting is read once per request, however many rules ask (per-request memo;
    # holding the resource keeps its id unique)
    key = ("order-setting", id(use.resource))
    cached: tuple[object, set[str]] | None = facts.memo.get(key)
    if cached is None or cached[0] is not use.resource:
        cached = facts.memo[key] = (use.resource, order_setting(use.resource))
    setting = cached[1]
    if setting & _TAKEN_HOME:
        pass  # a discharge or community prescription, even written during an inpatient stay
    elif "inpatient" in setting or (use.is_draft and facts.inpatient_context):
        return "inpatient"
    if use.classification.route == "injectable":
        return "injectable"
    return None


def oud_treatment(facts: ClinicalFacts, settings: Exclusions) -> str | None:
    """Opioid use disorder treated with buprenorphine or methadone (current or being ordered)."""
    if not settings.oud_treatment:
        return None
    return "oud_treatment" if oud_treatment_names(facts) else None


def pain_opioid_drafts_in_scope(facts: ClinicalFacts, settings: Exclusions) -> list[MedicationUse]:
    """The draft opioid analgesics in focus that a pain-opioid rule may judge: none when a
    patient exclusion or opioid use disorder treatment applies; excluded orders left out.
    Computed once per request and set of exclusions (three rules ask; the list is shared, not
    to be changed by a caller)."""
    key = ("drafts-in-scope", settings)
    cached: list[MedicationUse] | None = facts.memo.get(key)
    if cached is None:
        cached = facts.memo[key] = _pain_opioid_drafts_in_scope(facts, settings)
    return cached


def _pain_opioid_drafts_in_scope(facts: ClinicalFacts, settings: Exclusions) -> list[MedicationUse]:
    drafts = [
        d
        for d in facts.drafts
        if d.in_focus and d.has(OPIOID) and order_exclusion(d, facts, settings) is None
    ]
    if not drafts or patient_exclusion(facts, settings) or oud_treatment(facts, settings):
        return []
    return drafts
