"""Therapies: the first-line non-drug steps (exercise, physical, psychological) on record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cds_service.facts.dates import resource_date
from cds_service.facts.model import TherapyOnRecord
from cds_service.fhir.read import concept_text, status_code
from cds_service.fhir.record import PatientRecord

# Referral and procedure statuses that record a first-line step as taken (README).
THERAPY_COUNTS: Mapping[str, frozenset[str]] = {
    "Procedure": frozenset({"completed", "in-progress", "on-hold", "stopped"}),
    "ServiceRequest": frozenset({"active", "completed", "on-hold"}),
}
# Statuses that say a hospice / end-of-life procedure or referral did not happen; any other


def therapies_on_record(
    record: PatientRecord,
    step_of: Callable[[Any], str | None],
    labels: Mapping[str, str],
) -> list[TherapyOnRecord]:
    """First-line non-drug steps: procedures done, referrals made, referrals in this order set."""
    found: list[TherapyOnRecord] = []
    drafts = [o for o in record.draft_orders if o.get("resourceType") == "ServiceRequest"]
    for kind, resources, counted in (
        ("done", record.of_type("Procedure"), THERAPY_COUNTS["Procedure"]),
        ("ordered", record.of_type("ServiceRequest"), THERAPY_COUNTS["ServiceRequest"]),
        ("now", drafts, None),
    ):
        for resource in resources:
            if counted is not None and status_code(resource, "status") not in counted:
                continue
            step = step_of(resource.get("code"))
            if step is None:
                continue
            day = None if kind == "now" else resource_date(resource)
            found.append(
                TherapyOnRecord(step, concept_text(resource.get("code")) or labels[step], day, kind)
            )
    return found
