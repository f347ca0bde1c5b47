"""Loading the patient record: prefetch first, then the FHIR server for what is missing.

Per prefetch key the CDS Hooks 2.0 states are honoured:
- absent (or an OperationOutcome, or a Bundle of only OperationOutcomes, or junk) -> fetch it
  from fhirServer when access is allowed;
- null -> the client has no such data (an empty, complete answer);
- a Bundle with a next link -> follow it when FHIR access exists, else use it and mark the
  key partial.
All fetches run in parallel under one deadline. A required key that cannot be had -> 412.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cds_service.config import Config
from cds_service.errors import CdsError
from cds_service.fhir.client import FetchOutcome, FhirAccessPolicy, FhirClient
from cds_service.fhir.read import (
    JSON,
    as_list,
    bundle_resources,
    is_operation_outcome_only,
    next_link,
    normalise_quirks,
    reference_id,
    type_name,
)
from cds_service.hooks.request import HookRequest, selected
from cds_service.hooks.services import PrefetchKey, Service

_BUCKETS = {
    "MedicationRequest": "medication_requests",
    "MedicationDispense": "medication_dispenses",
    "MedicationStatement": "medication_statements",
    "Condition": "conditions",
    "Procedure": "procedures",
    "ServiceRequest": "service_requests",
}


@dataclass
class PatientRecord:
    """The patient's data as the rules see it: raw (repaired) FHIR JSON, grouped by type."""

    patient_id: str
    hook: str = "patient-view"
    patient: JSON | None = None
    medication_requests: list[JSON] = field(default_factory=list)
    medication_dispenses: list[JSON] = field(default_factory=list)
    medication_statements: list[JSON] = field(default_factory=list)
    conditions: list[JSON] = field(default_factory=list)
    procedures: list[JSON] = field(default_factory=list)
    service_requests: list[JSON] = field(default_factory=list)
    medications: dict[str, JSON] = field(default_factory=dict)  # "Medication/id" -> resource
    draft_orders: list[JSON] = field(default_factory=list)
    focus_orders: list[JSON] = field(default_factory=list)  # drafts the advice is about
    partial: set[str] = field(default_factory=set)  # keys whose data may be incomplete
    unavailable: set[str] = field(default_factory=set)  # optional keys that could not be had
    anomalies: Counter[str] = field(default_factory=Counter)
    fhir_calls: list[dict[str, Any]] = field(default_factory=list)

    def medication_for(self, order: JSON) -> JSON | None:
        """The Medication resource an order refers to (contained, prefetched or fetched)."""
        ref = order.get("medicationReference")
        if not isinstance(ref, dict):
            return None
        target = ref.get("reference")
        if not isinstance(target, str):
            return None
        if target.startswith("#"):
            for contained in as_list(order.get("contained")):
                if (isinstance(contained, dict) and contained.get("resourceType") == "Medication"
                        and contained.get("id") == target[1:]):
                    return contained
            return None
        med_id = reference_id(target, "Medication")
        return self.medications.get(f"Medication/{med_id}") if med_id else None


def render_template(template: str, request: HookRequest) -> str:
    values = {
        "context.patientId": request.patient_id,
        "context.userId": request.user_id,
        "context.encounterId": request.encounter_id,
    }
    out = template
    for token, value in values.items():
        # errors="replace": a lone surrogate (it has no UTF-8 form) must not crash the read
        out = out.replace("{{" + token + "}}", quote(value, safe="", errors="replace"))
    return out


def fallback_query(template: str, request: HookRequest) -> str:
    """The read the service makes itself for a missing key: the discovery template, with a
    large page size on searches so a long history arrives in few pages."""
    query = render_template(template, request)
    if "?" in query and "_count=" not in query:
        query += "&_count=500"
    return query


_FAILURES = {
    "timeout": "FHIR read timed out",
    "deadline": "FHIR read timed out (request deadline)",
    "connection-error": "FHIR server not reachable",
    "malformed-json": "FHIR answer unreadable (not JSON)",
    "not-a-resource": "FHIR answer unreadable (not a FHIR resource)",
    "too-large-or-slow": "FHIR answer unreadable (over the size cap or too slow)",
    "operation-outcome": "FHIR server answered an OperationOutcome",
}


def _failure(outcome: FetchOutcome) -> str:
    """How a fetch failed, in fixed words (the HTTP status included; never a URL or data)."""
    if outcome.error == "http-error":
        status = outcome.calls[-1].get("status") if outcome.calls else None
        return f"FHIR server answered status {status}"
    return _FAILURES.get(outcome.error, "FHIR read failed")


class RecordLoader:
    def __init__(self, config: Config, executor: ThreadPoolExecutor,
                 client: FhirClient | None = None) -> None:
        self._config = config
        self._executor = executor
        self._client = client or FhirClient(config)
        self._policy = FhirAccessPolicy(config)

    def load(self, request: HookRequest, service: Service,
             issuer_fhir_servers: tuple[str, ...] = ()) -> PatientRecord:
        record = PatientRecord(patient_id=request.patient_id, hook=request.hook,
                               anomalies=request.anomalies)
        deadline = time.monotonic() + self._config.fhir_deadline
        can_fetch = self._policy.allows(request.fhir_server, issuer_fhir_servers)
        if request.fhir_server and not can_fetch:
            record.anomalies["fhirServer:not-allowlisted"] += 1
        base = request.fhir_server or ""

        values: dict[str, Any] = {}
        pending: dict[str, Future[FetchOutcome]] = {}
        # Why a key could not be had (fixed words, never URLs or data): for the 412's log line.
        failures: dict[str, str] = {}
        no_fetch = "fhirServer not allowed" if request.fhir_server else "no fhirServer"
        for key in service.prefetch:
            state, value = self._prefetch_state(request.prefetch, key, record)
            if state == "usable":
                values[key.name] = value
                if isinstance(value, dict) and next_link(value):
                    if can_fetch:
                        pending[key.name] = self._executor.submit(
                            self._follow, base, value, request.access_token, deadline, key)
                    else:
                        record.partial.add(key.name)
            elif state == "null":
                values[key.name] = None
            elif can_fetch:
                pending[key.name] = self._executor.submit(
                    self._client.fetch, base, fallback_query(key.template, request),
                    request.access_token, deadline, key.resource_types[0])
            else:
                failures[key.name] = f"{state}, {no_fetch}"
                self._missing(key, record)

        self._collect(pending, deadline, service, record, values, failures)
        missing_required = [k.name for k in service.prefetch
                            if k.required and k.name not in values]
        if missing_required:
            how = "; ".join(f"{name}: {failures.get(name, 'unavailable')}"
                            for name in missing_required)
            raise CdsError(
                412,
                "Required patient data was not prefetched and could not be read from the FHIR "
                f"server: {how}",
                [f"prefetch.{name}" for name in missing_required],
                log_reason=f"required prefetch missing: {how}",
            )
        self._fill(record, values, service, request)
        self._resolve_medications(record, base if can_fetch else "", request.access_token,
                                  deadline)
        return record

    def _prefetch_state(self, prefetch: dict[str, Any], key: PrefetchKey,
                        record: PatientRecord) -> tuple[str, Any]:
        if key.name not in prefetch:
            return "not prefetched", None
        value = prefetch[key.name]
        if value is None:
            return "null", None
        if is_operation_outcome_only(value):
            record.anomalies[f"prefetch.{key.name}:operation-outcome"] += 1
            return "prefetch an OperationOutcome", None
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            record.anomalies[f"prefetch.{key.name}:unreadable"] += 1
            return "prefetch unreadable", None
        entries = value.get("entry")
        if isinstance(entries, list) and len(entries) > self._config.max_bundle_entries:
            raise CdsError(413, f"prefetch.{key.name} holds more than "
                           f"{self._config.max_bundle_entries} entries", [f"prefetch.{key.name}"])
        return "usable", value

    def _follow(self, base: str, bundle: JSON, token: str | None, deadline: float,
                key: PrefetchKey) -> FetchOutcome:
        outcome = FetchOutcome(body=bundle, ok=True)
        self._client.follow_pages(base, bundle, token, deadline, key.resource_types[0], outcome)
        return outcome  # outcome.body: the pages combined; `bundle` itself is untouched

    @staticmethod
    def _missing(key: PrefetchKey, record: PatientRecord) -> None:
        if not key.required:
            record.unavailable.add(key.name)

    def _collect(self, pending: dict[str, Future[FetchOutcome]], deadline: float,
                 service: Service, record: PatientRecord, values: dict[str, Any],
                 failures: dict[str, str]) -> None:
        if not pending:
            return
        wait(pending.values(), timeout=max(0.0, deadline - time.monotonic()) + 0.05)
        keys = {k.name: k for k in service.prefetch}
        for name, future in pending.items():
            if not future.done():
                record.fhir_calls.append({"resource": keys[name].resource_types[0],
                                          "outcome": "deadline"})
                future.cancel()
                if name not in values:
                    failures[name] = "FHIR read timed out (request deadline)"
                    self._missing(keys[name], record)
                else:
                    record.partial.add(name)
                continue
            outcome = future.result()
            record.fhir_calls.extend(outcome.calls)
            if outcome.ok:
                values[name] = outcome.body
                if outcome.partial:
                    record.partial.add(name)
            elif name in values:
                record.partial.add(name)
            else:
                failures[name] = _failure(outcome)
                self._missing(keys[name], record)

    def _fill(self, record: PatientRecord, values: dict[str, Any], service: Service,
              request: HookRequest) -> None:
        seen: set[tuple[str, str]] = set()
        total = 0
        draft_ids = {(o.get("resourceType"), o.get("id")) for o in request.draft_orders
                     if isinstance(o.get("id"), str)}  # an id that is a list is unhashable
        own_reference = f"Patient/{request.patient_id}"
        buckets = {rtype: getattr(record, name) for rtype, name in _BUCKETS.items()}
        for key in service.prefetch:
            value = values.get(key.name)
            if not isinstance(value, dict):
                continue
            if value.get("resourceType") == "Bundle":
                resources = list(bundle_resources(value))
                entries = value.get("entry")
                unreadable = (len(entries) if isinstance(entries, list) else 0) - len(resources)
                if unreadable:
                    record.anomalies[f"prefetch.{key.name}:unreadable-entry"] += unreadable
            else:
                resources = [value]
            total += len(resources)
            if total > self._config.max_bundle_entries * 2:
                raise CdsError(413, "The patient record is larger than this service accepts",
                               [f"prefetch.{key.name}"])
            for resource in resources:
                rtype = resource["resourceType"]
                if rtype not in key.resource_types:
                    if rtype != "OperationOutcome":
                        record.anomalies[f"prefetch.{key.name}:unexpected-{type_name(rtype)}"] += 1
                    continue
                rid = resource.get("id")
                ident = (rtype, rid if isinstance(rid, str) else str(id(resource)))
                if ident in seen:
                    continue
                seen.add(ident)
                if rtype == "Patient":
                    if record.patient is None:
                        record.patient = resource
                    continue
                if rtype == "Medication":
                    if isinstance(rid, str):
                        record.medications[f"Medication/{rid}"] = resource
                    continue
                subject = resource.get("subject") or resource.get("patient")
                if (isinstance(subject, dict) and subject.get("reference") != own_reference
                        and self._other_patient(resource, request.patient_id)):
                    record.anomalies[f"{rtype}:other-patient"] += 1
                    continue
                if ident in draft_ids:
                    continue  # the draft itself never counts as history
                # History is read with shape-tolerant helpers (a lone object where R4 wants an
                # array is accepted as is), so it is not repaired here: that keeps a
                # 5,000-order history cheap.
                buckets[rtype].append(resource)
        for order in request.draft_orders:
            normalise_quirks(order, record.anomalies)
            record.draft_orders.append(order)
            if selected(request, order):
                record.focus_orders.append(order)

    @staticmethod
    def _other_patient(resource: JSON, patient_id: str) -> bool:
        for element in ("subject", "patient"):
            ref = resource.get(element)
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                target = reference_id(ref, "Patient")
                return bool(target) and target != patient_id
        return False

    def _resolve_medications(self, record: PatientRecord, base: str, token: str | None,
                             deadline: float) -> None:
        wanted: set[str] = set()
        for group in (record.draft_orders, record.medication_requests,
                      record.medication_dispenses, record.medication_statements):
            for order in group:
                ref = order.get("medicationReference")
                target = ref.get("reference") if isinstance(ref, dict) else None
                if not isinstance(target, str) or target.startswith("#"):
                    continue
                med_id = reference_id(target, "Medication")
                if med_id and f"Medication/{med_id}" not in record.medications:
                    wanted.add(med_id)
        if not wanted:
            return
        if not base:
            record.anomalies["medicationReference:unresolved"] += len(wanted)
            return
        cap = self._config.fhir_max_medication_fetches
        futures = {
            med_id: self._executor.submit(
                self._client.get_json,
                f"{base}/Medication/{quote(med_id, safe='', errors='replace')}",
                token, deadline, "Medication")
            for med_id in sorted(wanted)[:cap]
        }
        if len(wanted) > cap:
            record.anomalies["medicationReference:over-fetch-cap"] += len(wanted) - cap
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + 0.05)
        for med_id, future in futures.items():
            if not future.done():
                record.anomalies["medicationReference:unresolved"] += 1
                continue
            body, call = future.result()
            record.fhir_calls.append(call)
            if isinstance(body, dict) and body.get("resourceType") == "Medication":
                record.medications[f"Medication/{med_id}"] = body
            else:
                record.anomalies["medicationReference:unresolved"] += 1
