"""End of life: hospice, palliative or terminal care wherever the chart records it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cds_service.facts.dates import period_dates, resource_date
from cds_service.facts.model import ConditionFact, EndOfLifeEvidence
from cds_service.fhir.read import JSON, as_list, codings, concept_text, status_code
from cds_service.fhir.record import PatientRecord

# Statuses that say a hospice / end-of-life procedure or referral did not happen; any other
# status (including none, or an unreadable one) counts when the record is undated or recent.
_EOL_PROCEDURE_NOT = frozenset({"entered-in-error", "not-done", "preparation"})
_EOL_REFERRAL_NOT = frozenset({"entered-in-error", "revoked", "draft"})
_EOL_ENCOUNTER_OPEN = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave"})
_EOL_CARE_PLAN = frozenset({"active", "on-hold"})
_CARE_PLAN_ACTIVITY_NOT = frozenset({"cancelled", "entered-in-error", "not-started", "stopped"})
_END_OF_LIFE = "hospice-palliative"


def end_of_life_evidence(
    record: PatientRecord,
    conditions: list[ConditionFact],
    today: dt.date,
    categories_of: Callable[[Any], frozenset[str]],
    recent_days: int,
) -> list[EndOfLifeEvidence]:
    """Current hospice, palliative or end-of-life care wherever the chart records it."""
    recent = today - dt.timedelta(days=recent_days)
    found = [
        EndOfLifeEvidence("condition", c.label, c.onset)
        for c in conditions
        if c.has(_END_OF_LIFE) and c.onset_source != "order-reason"
    ]

    def is_eol(*concepts: Any) -> bool:
        return any(_END_OF_LIFE in categories_of(c) for c in concepts if isinstance(c, dict))

    for procedure in record.of_type("Procedure"):
        if status_code(procedure, "status") in _EOL_PROCEDURE_NOT or not is_eol(
            procedure.get("code")
        ):
            continue
        start, end = period_dates(procedure, "performedPeriod", "performedDateTime")
        open_ended = isinstance(procedure.get("performedPeriod"), dict) and end is None
        if open_ended or (end or start or today) >= recent:
            found.append(
                EndOfLifeEvidence("procedure", concept_text(procedure.get("code")) or "", start)
            )
    for referral in record.of_type("ServiceRequest"):
        if status_code(referral, "status") in _EOL_REFERRAL_NOT or not is_eol(referral.get("code")):
            continue
        day = resource_date(referral)
        if day is None or day >= recent:
            found.append(
                EndOfLifeEvidence("referral", concept_text(referral.get("code")) or "", day)
            )
    for encounter in record.of_type("Encounter"):
        concepts = [
            *as_list(encounter.get("type")),
            encounter.get("serviceType"),
            *as_list(encounter.get("reasonCode")),
        ]
        discharged = _discharged_to_hospice(encounter, categories_of)
        if not is_eol(*concepts) and not discharged:
            continue
        start, end = period_dates(encounter, "period")
        status = status_code(encounter, "status")
        # an open hospice / palliative encounter, or one that ended recently (home hospice
        # visits are recorded as finished encounters; so is a discharge to hospice)
        current = (status in _EOL_ENCOUNTER_OPEN and (end is None or end >= today)) or (
            status == "finished"
            and (end or start) is not None
            and (end or start or today) >= recent
        )
        if current:
            label = next((concept_text(c) for c in concepts if concept_text(c)), "")
            found.append(EndOfLifeEvidence("encounter", label, start))
    for plan in record.of_type("CarePlan"):
        if status_code(plan, "status") not in _EOL_CARE_PLAN:
            continue
        concepts = [*as_list(plan.get("category"))]
        for activity in as_list(plan.get("activity")):
            detail = activity.get("detail") if isinstance(activity, dict) else None
            if (
                isinstance(detail, dict)
                and status_code(detail, "status") not in _CARE_PLAN_ACTIVITY_NOT
            ):
                concepts.append(detail.get("code"))
        # the title names the plan; a description is free text that may only discuss it
        if isinstance(plan.get("title"), str):
            concepts.append({"text": plan["title"]})
        start, end = period_dates(plan, "period")
        if is_eol(*concepts) and (end is None or end >= today):
            label = next((concept_text(c) for c in concepts if concept_text(c)), "")
            found.append(EndOfLifeEvidence("care-plan", label, start))
    return found


_DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"


def _discharged_to_hospice(encounter: JSON, categories_of: Callable[[Any], frozenset[str]]) -> bool:
    hospitalization = encounter.get("hospitalization")
    if not isinstance(hospitalization, dict):
        return False
    disposition = hospitalization.get("dischargeDisposition")
    if any(
        system == _DISCHARGE_DISPOSITION and code == "hosp"
        for system, code, _ in codings(disposition)
    ):
        return True  # the FHIR discharge-disposition code for hospice, often sent bare
    return _END_OF_LIFE in categories_of(disposition)
