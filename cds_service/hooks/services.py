"""The registry of CDS services: discovery and routing both read this one table.

Adding a service is one entry here; its rules are the registered rules that declare its hook.
A service's discovery description is its own sentence followed by what it checks: the
`source.topic_display` of each registered, enabled, active rule's card file for its hook
(`discovery_document(checks)`, built once in create_app), so it never goes stale when a rule
is added, removed or switched off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.fhir.record import Domain


@dataclass(frozen=True)
class PrefetchKey:
    name: str
    template: str
    resource_types: tuple[str, ...]
    required: bool  # required: unobtainable -> 412; optional: the record says it is missing
    domain: Domain  # the clinical domain whose completeness this key's data decides


# History matters more than status: orders of every status are read, and the rules decide
# what is current (a completed course 60 days ago still makes a patient not opioid-naive).
PATIENT = PrefetchKey(
    "patient", "Patient/{{context.patientId}}", ("Patient",), True, Domain.PATIENT
)
MEDS = PrefetchKey(
    "meds",
    "MedicationRequest?patient={{context.patientId}}",
    ("MedicationRequest", "Medication"),
    True,
    Domain.MEDICATION_ORDERS,
)
CONDITIONS = PrefetchKey(
    "conditions", "Condition?patient={{context.patientId}}", ("Condition",), True, Domain.CONDITIONS
)
PROCEDURES = PrefetchKey(
    "procedures", "Procedure?patient={{context.patientId}}", ("Procedure",), False, Domain.THERAPIES
)
SERVICE_REQUESTS = PrefetchKey(
    "serviceRequests",
    "ServiceRequest?patient={{context.patientId}}",
    ("ServiceRequest",),
    False,
    Domain.THERAPIES,
)
DISPENSES = PrefetchKey(
    "dispenses",
    "MedicationDispense?patient={{context.patientId}}",
    ("MedicationDispense", "Medication"),
    False,
    Domain.MEDICATIONS_OUTSIDE,
)
STATEMENTS = PrefetchKey(
    "statements",
    "MedicationStatement?patient={{context.patientId}}",
    ("MedicationStatement", "Medication"),
    False,
    Domain.MEDICATIONS_OUTSIDE,
)

# Where else the chart records the facts the rules exclude on: hospice or palliative care as
# an Encounter (also the inpatient context of an order), terminal care as a CarePlan. Every
# status is read; the rules decide what is current (a hospice episode finished years ago is
# not hospice care now).
ENCOUNTERS = PrefetchKey(
    "encounters",
    "Encounter?patient={{context.patientId}}",
    ("Encounter",),
    False,
    Domain.ENCOUNTERS,
)
CARE_PLANS = PrefetchKey(
    "carePlans", "CarePlan?patient={{context.patientId}}", ("CarePlan",), False, Domain.CARE_PLANS
)

# Drug allergies and intolerances decide which non-opioid alternative a card may offer
# (an NSAID or aspirin allergy bars naproxen, an acetaminophen allergy bars acetaminophen);
# every status is read and the facts decide what counts (facts/allergies.py).
ALLERGIES = PrefetchKey(
    "allergies",
    "AllergyIntolerance?patient={{context.patientId}}",
    ("AllergyIntolerance",),
    False,
    Domain.ALLERGIES,
)

ALL_KEYS = (
    PATIENT,
    MEDS,
    CONDITIONS,
    PROCEDURES,
    SERVICE_REQUESTS,
    DISPENSES,
    STATEMENTS,
    ENCOUNTERS,
    CARE_PLANS,
    ALLERGIES,
)
# A chart review offers no one-click alternative, so it does not read allergies.
CHART_KEYS = tuple(key for key in ALL_KEYS if key is not ALLERGIES)

USAGE = (
    "Needs read access to the patient's Patient, MedicationRequest (all statuses), Condition, "
    "Procedure, ServiceRequest, MedicationDispense, MedicationStatement, Encounter and CarePlan "
    "resources (and AllergyIntolerance when orders are written), by prefetch or through "
    "fhirServer/fhirAuthorization (scopes patient/*.read or the resource-level equivalents). "
    "Missing Patient, MedicationRequest or Condition data that cannot be fetched is answered "
    "with 412."
)


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchKey, ...] = ALL_KEYS

    def discovery(self, checks: tuple[str, ...] = ()) -> dict[str, Any]:
        description = self.description
        if checks:
            description += " Checks: " + "; ".join(checks) + "."
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": description,
            "prefetch": {key.name: key.template for key in self.prefetch},
            "usageRequirements": USAGE,
        }


SERVICES: tuple[Service, ...] = (
    Service(
        id="opioid-lbp-patient-view",
        hook="patient-view",
        title="Opioid safety for low back pain (chart review)",
        description="When a chart opens: opioid safety for patients with low back pain.",
        prefetch=CHART_KEYS,
    ),
    Service(
        id="opioid-lbp-order-select",
        hook="order-select",
        title="Opioid prescribing for low back pain (order selection)",
        description=(
            "While an order is being written: advice about the selected opioid or sedative "
            "orders, with one-click alternatives."
        ),
    ),
    Service(
        id="opioid-lbp-order-sign",
        hook="order-sign",
        title="Opioid prescribing for low back pain (order signing)",
        description=(
            "Before orders are signed: advice about the draft opioid or sedative orders, with "
            "one-click alternatives."
        ),
    ),
)

SERVICES_BY_ID: dict[str, Service] = {service.id: service for service in SERVICES}


def discovery_document(checks: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """The discovery response; `checks` names what each hook's rules check (by hook)."""
    checks = checks or {}
    return {"services": [service.discovery(checks.get(service.hook, ())) for service in SERVICES]}
