"""Loading the patient record: prefetch first, then the FHIR server for what is missing.

Per prefetch key the CDS Hooks 2.0 states are honoured:
- absent (or an OperationOutcome, or a Bundle of only OperationOutcomes, or junk) -> fetch it
  from fhirServer when access is allowed;
- null -> the client has no such data (an empty, complete answer);
- a Bundle with a next link -> follow it when FHIR access exists, else use it and mark the
  key partial.
All fetches run in parallel under one deadline, on the FHIR server's own bulkhead (see
fhir/bulkhead.py: a call that needs the server is admitted first, or answered 503 / 412 at
once); a call whose data was all prefetched never waits for a slot or a FHIR thread. A
required key that cannot be had -> 412.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cds_service.config import Config
from cds_service.errors import CdsError
from cds_service.fhir.bulkhead import BreakerOpen, FhirServers, ServerGuard
from cds_service.fhir.client import FetchOutcome, FhirAccessPolicy, FhirClient
from cds_service.fhir.read import (
    JSON,
    as_list,
    bundle_resources,
    is_operation_outcome_only,
    next_link,
    normalise_quirks,
    reference_id,
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
    "Encounter": "encounters",
    "CarePlan": "care_plans",
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
    encounters: list[JSON] = field(default_factory=list)
    care_plans: list[JSON] = field(default_factory=list)
    encounter_id: str = ""  # the hook's context.encounterId
    unusable_reason: str = ""  # non-empty when most of the record is another patient's
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
        out = out.replace("{{" + token + "}}", quote(value, safe=""))
    return out


def fallback_query(template: str, request: HookRequest) -> str:
    """The read the service makes itself for a missing key: the discovery template, with a
    large page size on searches so a long history arrives in few pages."""
    query = render_template(template, request)
    if "?" in query and "_count=" not in query:
        query += "&_count=500"
    return query


class RecordLoader:
    def __init__(self, config: Config, servers: FhirServers,
                 client: FhirClient | None = None) -> None:
        self._config = config
        self._servers = servers
        self._client = client or FhirClient(config)
        self._policy = FhirAccessPolicy(config)

    def load(self, request: HookRequest, service: Service,
             issuer_fhir_servers: tuple[str, ...] = ()) -> PatientRecord:
        record = PatientRecord(patient_id=request.patient_id, hook=request.hook,
                               encounter_id=request.encounter_id, anomalies=request.anomalies)
        deadline = time.monotonic() + self._config.fhir_deadline
        can_fetch = self._policy.allows(request.fhir_server, issuer_fhir_servers)
        if request.fhir_server and not can_fetch:
            record.anomalies["fhirServer:not-allowlisted"] += 1
        base = request.fhir_server or ""

        values: dict[str, Any] = {}
        wanted: dict[str, tuple[Callable[..., FetchOutcome], tuple[Any, ...]]] = {}
        for key in service.prefetch:
            state, value = self._prefetch_state(request.prefetch, key, record)
            if state == "usable":
                values[key.name] = value
                if isinstance(value, dict) and next_link(value):
                    if can_fetch:
                        wanted[key.name] = (self._follow, (base, value, request.access_token,
                                                           deadline, key))
                    else:
                        record.partial.add(key.name)
            elif state == "null":
                values[key.name] = None
            elif can_fetch:
                wanted[key.name] = (self._client.fetch, (
                    base, fallback_query(key.template, request), request.access_token,
                    deadline, key.resource_types[0]))
            else:
                self._missing(key, record)

        with ExitStack() as held:
            fallback = _Fallback(self._servers, base, held, record)
            guard = fallback.guard() if wanted else None
            if guard is None:
                keys = {k.name: k for k in service.prefetch}
                for name in wanted:
                    if name in values:
                        record.partial.add(name)
                    else:
                        self._missing(keys[name], record)
            else:
                pending = {name: guard.submit(fn, *args) for name, (fn, args) in wanted.items()}
                self._collect(pending, deadline, service, record, values, guard)
            missing_required = [k.name for k in service.prefetch
                                if k.required and k.name not in values]
            if missing_required:
                raise CdsError(
                    412,
                    "Required patient data was not prefetched and could not be read from the "
                    f"FHIR server: {', '.join(missing_required)}"
                    + (f" ({fallback.refused})" if fallback.refused else ""),
                    [f"prefetch.{name}" for name in missing_required],
                    {"Retry-After": str(fallback.retry_after)} if fallback.refused else None,
                )
            self._fill(record, values, service, request)
            self._resolve_medications(record, fallback if can_fetch else None,
                                      request.access_token, deadline)
        return record

    def _prefetch_state(self, prefetch: dict[str, Any], key: PrefetchKey,
                        record: PatientRecord) -> tuple[str, Any]:
        if key.name not in prefetch:
            return "absent", None
        value = prefetch[key.name]
        if value is None:
            return "null", None
        if is_operation_outcome_only(value):
            record.anomalies[f"prefetch.{key.name}:operation-outcome"] += 1
            return "absent", None
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            record.anomalies[f"prefetch.{key.name}:unreadable"] += 1
            return "absent", None
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
                 guard: ServerGuard) -> None:
        if not pending:
            return
        # The watchdog ends every exchange at the deadline; the grace covers thread wake-up,
        # so nothing this call started is still reading when it answers.
        wait(pending.values(), timeout=max(0.0, deadline - time.monotonic()) + _GRACE)
        keys = {k.name: k for k in service.prefetch}
        for name, future in pending.items():
            if not future.done():
                record.fhir_calls.append({"resource": keys[name].resource_types[0],
                                          "outcome": "deadline"})
                future.cancel()
                if name not in values:
                    self._missing(keys[name], record)
                else:
                    record.partial.add(name)
                continue
            outcome = future.result()
            guard.record(outcome.calls)
            record.fhir_calls.extend(outcome.calls)
            if outcome.ok:
                values[name] = outcome.body
                if outcome.partial:
                    record.partial.add(name)
            elif name in values:
                record.partial.add(name)
            else:
                self._missing(keys[name], record)

    def _fill(self, record: PatientRecord, values: dict[str, Any], service: Service,
              request: HookRequest) -> None:
        seen: set[tuple[str, str]] = set()
        total = 0
        draft_ids = {(o.get("resourceType"), o.get("id")) for o in request.draft_orders}
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
                        record.anomalies[f"prefetch.{key.name}:unexpected-{rtype}"] += 1
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

    def _resolve_medications(self, record: PatientRecord, fallback: _Fallback | None,
                             token: str | None, deadline: float) -> None:
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
        guard = fallback.guard() if fallback is not None else None
        if fallback is None or guard is None:
            record.anomalies["medicationReference:unresolved"] += len(wanted)
            return
        base = fallback.base
        cap = self._config.fhir_max_medication_fetches
        futures = {
            med_id: guard.submit(self._client.get_json,
                                 f"{base}/Medication/{quote(med_id, safe='')}",
                                 token, deadline, "Medication")
            for med_id in sorted(wanted)[:cap]
        }
        if len(wanted) > cap:
            record.anomalies["medicationReference:over-fetch-cap"] += len(wanted) - cap
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + _GRACE)
        for med_id, future in futures.items():
            if not future.done():
                future.cancel()
                record.anomalies["medicationReference:unresolved"] += 1
                continue
            body, call = future.result()
            guard.record([call])
            record.fhir_calls.append(call)
            if isinstance(body, dict) and body.get("resourceType") == "Medication":
                record.medications[f"Medication/{med_id}"] = body
            else:
                record.anomalies["medicationReference:unresolved"] += 1


_GRACE = 0.25  # seconds past the deadline to let cut exchanges return (see _collect)


class _Fallback:
    """The hook call's admission to its FHIR server, taken on first need and held until the
    record is loaded. guard() is None when the server's breaker is open (`refused` says why);
    a Saturated error (503) propagates."""

    def __init__(self, servers: FhirServers, base: str, held: ExitStack,
                 record: PatientRecord) -> None:
        self._servers = servers
        self.base = base
        self._held = held
        self._record = record
        self._guard: ServerGuard | None = None
        self.refused = ""
        self.retry_after = 0

    def guard(self) -> ServerGuard | None:
        if self._guard is None and not self.refused:
            try:
                self._guard = self._held.enter_context(self._servers.admit(self.base))
            except BreakerOpen as exc:
                self.refused = str(exc)
                self.retry_after = exc.retry_after
                self._record.fhir_calls.append({"outcome": "breaker-open"})
                self._record.anomalies["fhirServer:breaker-open"] += 1
        return self._guard
