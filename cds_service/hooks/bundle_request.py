"""Build a CDS Hooks request from a patient Bundle (fixtures, demo patients, `evaluate --hook`).

The Bundle holds one patient's record; MedicationRequests and ServiceRequests with status
"draft" become the hook's draftOrders (all selected on order-select), everything else is
prefetched under this service's own keys, grouped by resource type.
"""

from __future__ import annotations

import uuid
from typing import Any

from cds_service.fhir.read import JSON, bundle_resources
from cds_service.hooks.services import SERVICES

_KEY_BY_TYPE = {
    rtype: key.name
    for service in SERVICES[:1]
    for key in service.prefetch
    for rtype in key.resource_types[:1]
}


def request_from_bundle(bundle: JSON, hook: str) -> dict[str, Any]:
    resources = list(bundle_resources(bundle))
    patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
    patient_id = str(patient.get("id", "unknown")) if patient else "unknown"
    drafts = [r for r in resources
              if r["resourceType"] in {"MedicationRequest", "ServiceRequest"}
              and r.get("status") == "draft"]
    prefetch: dict[str, Any] = {
        name: {"resourceType": "Bundle", "type": "searchset", "entry": []}
        for name in _KEY_BY_TYPE.values() if name != "patient"
    }
    prefetch["patient"] = patient
    for resource in resources:
        if resource is patient or any(resource is d for d in drafts):
            continue
        key = _KEY_BY_TYPE.get(resource["resourceType"])
        if key is None and resource["resourceType"] == "Medication":
            key = "meds"
        if key and key != "patient":
            prefetch[key]["entry"].append({"resource": resource})
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": patient_id}
    if hook in {"order-select", "order-sign"}:
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts]}
        if hook == "order-select":
            context["selections"] = [f"{d['resourceType']}/{d.get('id')}" for d in drafts]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": prefetch}
