"""Build a CDS Hooks request from a patient Bundle (fixtures, demo patients, `evaluate --hook`).

The Bundle holds one patient's record; MedicationRequests and ServiceRequests with status
"draft" become the hook's draftOrders (all selected on order-select), everything else is
prefetched under this service's own keys, grouped by resource type. Each entry keeps its
fullUrl, so references written as `urn:uuid:...` (as population exports write them) resolve
against the Bundle; the Patient, when its entry has a fullUrl, is prefetched as a one-entry
searchset Bundle (the shape of a `Patient?_id=` search) for the same reason.

Demo data carries dates relative to today, so that it never expires: a string value that
starts with `@-Nd` or `@+Nd` (N days before or after today, e.g. "@-30d", "@+0d",
"@-30dT09:00:00Z") becomes that ISO date (`resolve_relative_dates`); `evaluate`,
`demo-traffic` and the compose seeding job (scripts/seed-fhir.sh) resolve them when they load
the demo patients. The service itself never resolves them in a hook request.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from cds_service.fhir.read import JSON, as_list
from cds_service.hooks.services import SERVICES

_KEY_BY_TYPE = {
    rtype: key.name
    for service in SERVICES
    for key in service.prefetch
    for rtype in key.resource_types[:1]
}


RELATIVE_DATE = re.compile(r"@([+-][0-9]{1,6})d(?=T|$)")


def resolve_relative_dates(data: Any, today: dt.date) -> Any:
    """A copy of JSON data with every "@-Nd..." string value turned into today - N days."""
    if isinstance(data, dict):
        return {key: resolve_relative_dates(value, today) for key, value in data.items()}
    if isinstance(data, list):
        return [resolve_relative_dates(value, today) for value in data]
    if isinstance(data, str) and data.startswith("@"):
        match = RELATIVE_DATE.match(data)
        if match:
            day = today + dt.timedelta(days=int(match.group(1)))
            return day.isoformat() + data[match.end() :]
    return data


def _entry(entry: JSON) -> JSON:
    """An entry with its resource and fullUrl only (no request/search parts)."""
    kept = {"fullUrl": entry["fullUrl"]} if isinstance(entry.get("fullUrl"), str) else {}
    return {**kept, "resource": entry["resource"]}


def request_from_bundle(bundle: JSON, hook: str) -> dict[str, Any]:
    entries = [
        e
        for e in as_list(bundle.get("entry"))
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and isinstance(e["resource"].get("resourceType"), str)
    ]
    patient_entry = next((e for e in entries if e["resource"]["resourceType"] == "Patient"), None)
    patient = patient_entry["resource"] if patient_entry else None
    patient_id = str(patient.get("id", "unknown")) if patient else "unknown"
    drafts = [
        e
        for e in entries
        if e["resource"]["resourceType"] in {"MedicationRequest", "ServiceRequest"}
        and e["resource"].get("status") == "draft"
    ]
    prefetch: dict[str, Any] = {
        name: {"resourceType": "Bundle", "type": "searchset", "entry": []}
        for name in _KEY_BY_TYPE.values()
        if name != "patient"
    }
    prefetch["patient"] = patient
    if patient_entry and isinstance(patient_entry.get("fullUrl"), str):
        prefetch["patient"] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [_entry(patient_entry)],
        }
    for entry in entries:
        resource = entry["resource"]
        if resource is patient or any(entry is d for d in drafts):
            continue
        key = _KEY_BY_TYPE.get(resource["resourceType"])
        if key is None and resource["resourceType"] == "Medication":
            key = "meds"
        if key and key != "patient":
            prefetch[key]["entry"].append(_entry(entry))
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": patient_id}
    if hook in {"order-select", "order-sign"}:
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [_entry(d) for d in drafts],
        }
        if hook == "order-select":
            context["selections"] = [
                f"{d['resource']['resourceType']}/{d['resource'].get('id')}" for d in drafts
            ]
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": prefetch,
    }
