"""Shared clinical criteria, defined once and reused by name by every rule (clinical brief 1-2).

- chronic low back pain: an active LBP condition coded as chronic, or paired with an active
  chronic-pain diagnosis, or with onset (else recorded date) more than 12 weeks ago;
- opioid-naive (CDC): no opioid exposure in the last 90 days from orders of any status but
  entered-in-error or cancelled, dispenses or statements; the drafts being ordered never count;
- first-line therapy on record: an NSAID or acetaminophen (not as part of an opioid
  combination), and non-drug therapy (exercise/physical, psychological, manipulation,
  acupuncture, massage, multidisciplinary rehabilitation) as a Procedure or ServiceRequest;
- second-line drugs: a non-benzodiazepine muscle relaxant, duloxetine (or another SNRI), a
  tricyclic.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, ConditionFact, MedicationUse
from cds_service.fhir.read import concept_text, parse_date, status_code
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import ANTITUSSIVE, MOUD, OPIOID
from cds_service.knowledge.conditions import THERAPIES

FIRST_LINE_DRUG_CLASSES = ("nsaid", "acetaminophen")
SECOND_LINE_CLASSES = ("muscle-relaxant", "snri", "tricyclic")


@dataclass(frozen=True)
class ChronicLowBackPain:
    condition: ConditionFact
    reason: str  # why it counts as chronic, in clinical words, naming the date


def low_back_pain(facts: ClinicalFacts) -> list[ConditionFact]:
    return facts.conditions_in("low-back-pain")


def chronic_low_back_pain(facts: ClinicalFacts, chronic_after_days: int = 84
                          ) -> ChronicLowBackPain | None:
    """The condition (and reason) that makes this patient's low back pain chronic, if any."""
    conditions = low_back_pain(facts)
    if not conditions:
        return None
    for condition in conditions:
        if condition.has("chronic-low-back-pain"):
            since = f", recorded since {condition.onset.isoformat()}" if condition.onset else ""
            return ChronicLowBackPain(condition, f"coded as chronic low back pain{since}")
    chronic_pain = facts.conditions_in("chronic-pain")
    if chronic_pain:
        return ChronicLowBackPain(
            conditions[0], f"low back pain with a chronic pain diagnosis ({chronic_pain[0].label})")
    cutoff = facts.today - dt.timedelta(days=chronic_after_days)
    dated = sorted((c for c in conditions if c.onset is not None), key=lambda c: c.onset or cutoff)
    for condition in dated:
        if condition.onset is not None and condition.onset < cutoff:
            weeks = (facts.today - condition.onset).days // 7
            return ChronicLowBackPain(
                condition, f"{condition.onset_source} {condition.onset.isoformat()}, "
                f"{weeks} weeks ago (chronic: more than {chronic_after_days // 7} weeks)")
    return None


def _is_opioid_exposure(use: MedicationUse) -> bool:
    return (use.has(OPIOID) or use.has(MOUD)) and not (use.has(ANTITUSSIVE)
                                                       and not use.has(OPIOID))


@dataclass(frozen=True)
class OpioidExposure:
    naive: bool
    last_exposure: MedicationUse | None
    window_start: dt.date
    medication_records_reviewed: int


def opioid_exposure(facts: ClinicalFacts, lookback_days: int = 90) -> OpioidExposure:
    """Whether the patient is opioid-naive: no opioid in the look-back window (CDC 2022)."""
    window_start = facts.today - dt.timedelta(days=lookback_days)
    exposures: list[MedicationUse] = []
    for use in facts.history:
        if not _is_opioid_exposure(use):
            continue
        if status_code(use.resource, "status") == "cancelled":
            continue
        if use.start is None:
            # undated: only a current-looking record counts
            if use.active:
                exposures.append(use)
            continue
        end = use.end or use.start
        if use.start <= facts.today and end >= window_start:
            exposures.append(use)
    latest = max(exposures, key=lambda u: u.start or facts.today, default=None)
    return OpioidExposure(not exposures, latest, window_start, len(facts.history))


def first_line_drug_trials(facts: ClinicalFacts, since: dt.date,
                           include_drafts: bool = True) -> list[MedicationUse]:
    """NSAID or acetaminophen taken for pain on record since `since` (any status but
    entered-in-error): Classification.first_line_analgesic (no low-dose aspirin, cold remedy or
    opioid combination)."""
    found = [u for u in facts.history if u.classification.first_line_analgesic
             and (u.start is None or u.start >= since)]
    if include_drafts:
        found += [u for u in facts.drafts if u.classification.first_line_analgesic]
    return found


def second_line_trials(facts: ClinicalFacts, since: dt.date) -> list[MedicationUse]:
    return [u for u in facts.history
            if any(u.has(c) for c in SECOND_LINE_CLASSES) and not u.has(OPIOID)
            and (u.start is None or u.start >= since)]


@dataclass(frozen=True)
class TherapyOnRecord:
    step: str
    label: str
    date: dt.date | None
    kind: str  # "done" (Procedure) or "ordered" (ServiceRequest)


def _resource_date(resource: dict[str, object]) -> dt.date | None:
    for element in ("performedDateTime", "occurrenceDateTime", "authoredOn"):
        day = parse_date(resource.get(element))
        if day is not None:
            return day
    for element in ("performedPeriod", "occurrencePeriod"):
        period = resource.get(element)
        if isinstance(period, dict):
            day = parse_date(period.get("start")) or parse_date(period.get("end"))
            if day is not None:
                return day
    return None


def non_drug_therapies(record: PatientRecord, since: dt.date) -> list[TherapyOnRecord]:
    """Non-drug first-line therapies recorded as Procedures or ServiceRequests since `since`."""
    found: list[TherapyOnRecord] = []
    drafts = [o for o in record.draft_orders if o.get("resourceType") == "ServiceRequest"]
    for kind, resources in (("done", record.procedures), ("ordered", record.service_requests),
                            ("being ordered now", drafts)):
        for resource in resources:
            if status_code(resource, "status") in {"entered-in-error", "not-done"}:
                continue
            step = THERAPIES.step(resource.get("code"))
            if step is None:
                continue
            day = _resource_date(resource)
            if kind == "being ordered now":
                day = None
            elif day is not None and day < since:
                continue
            found.append(TherapyOnRecord(step, concept_text(resource.get("code")) or
                                         THERAPIES.step_labels[step], day, kind))
    return found


def treats_opioid_use_disorder(use: MedicationUse, facts: ClinicalFacts) -> bool:
    """Buprenorphine for OUD (by product), or methadone for a patient with an active opioid use
    disorder diagnosis: treatment that must not be withheld (CDC 2022 Recommendation 11)."""
    if use.has(MOUD) and not use.has(OPIOID):
        return True
    return "methadone" in use.classification.names and bool(
        facts.conditions_in("opioid-use-disorder"))
