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
    bundle_entries,
    full_url_key,
    identifier_pairs,
    identifiers_agree,
    is_operation_outcome_only,
    next_link,
    normalise_quirks,
    parse_reference,
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
    "Encounter": "encounters",
    "CarePlan": "care_plans",
}

# A record is flagged unusable when more than this share of its clinical resources name
# another patient, and at least _UNUSABLE_MIN_IGNORED of them do (one stray resource in a
# short record is a data error, not a record that is mostly someone else's).
_UNUSABLE_SHARE = 0.5
_UNUSABLE_MIN_IGNORED = 3
UNUSABLE_OTHER_PATIENT = "other-patient"


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
    # "Medication/id" (and the entry's fullUrl, when it has one) -> Medication resource
    medications: dict[str, JSON] = field(default_factory=dict)
    draft_orders: list[JSON] = field(default_factory=list)
    focus_orders: list[JSON] = field(default_factory=list)  # drafts the advice is about
    partial: set[str] = field(default_factory=set)  # keys whose data may be incomplete
    unavailable: set[str] = field(default_factory=set)  # optional keys that could not be had
    anomalies: Counter[str] = field(default_factory=Counter)
    fhir_calls: list[dict[str, Any]] = field(default_factory=list)
    # Ownership: clinical resources read (kept + ignored), those ignored because their
    # subject/patient is another patient, and why the record cannot be trusted ("" = usable;
    # UNUSABLE_OTHER_PATIENT when most of it names another patient).
    clinical_resource_count: int = 0
    other_patient_count: int = 0
    unusable_reason: str = ""
    # Resources read for this request with their Bundle entry's fullUrl ("" if none); indexed
    # by "Type/id" and fullUrl the first time a reference has to be resolved (most requests,
    # whose references are all Patient/<id> and whose drugs are coded, never need it).
    _unindexed: list[tuple[str, JSON]] = field(default_factory=list, init=False, repr=False)
    _index: dict[str, JSON] = field(default_factory=dict, init=False, repr=False)

    def remember(self, resource: JSON, full_url: str = "") -> None:
        """Make a resource resolvable by reference (Type/id, its fullUrl); first one wins.
        Medications are filed in `medications` at once (by Medication/id and fullUrl)."""
        self._unindexed.append((full_url, resource))
        if resource.get("resourceType") == "Medication":
            rid = resource.get("id")
            if isinstance(rid, str) and rid:
                self.medications.setdefault(f"Medication/{rid}", resource)
            if full_url:
                self.medications.setdefault(full_url, resource)

    def lookup(self, key: str) -> JSON | None:
        """The resource remembered under a "Type/id" or fullUrl key, if any."""
        if self._unindexed:
            index = self._index
            for full_url, resource in self._unindexed:
                rtype, rid = resource.get("resourceType"), resource.get("id")
                keys = [f"{rtype}/{rid}"] if isinstance(rid, str) and rid else []
                if full_url:
                    keys.append(full_url)
                for k in keys:
                    index.setdefault(k, resource)
            self._unindexed.clear()
        return self._index.get(key) or self.medications.get(key)

    def resolve(
        self, reference: Any, holder: JSON | None = None, resource_type: str | None = None
    ) -> JSON | None:
        """The resource a Reference names, among those read for this request: contained
        (#id, inside `holder`), a Bundle entry's fullUrl (urn:uuid:, absolute URL), Type/id,
        an absolute URL with any base (by Type/id), or a bare id (with `resource_type`)."""
        ref = parse_reference(reference)
        if ref.kind == "contained":
            for contained in as_list(holder.get("contained") if holder else None):
                if (
                    isinstance(contained, dict)
                    and contained.get("id") == ref.id
                    and resource_type in (None, contained.get("resourceType"))
                ):
                    return contained
            return None
        keys: list[str] = []
        if ref.kind in ("urn", "absolute", "relative"):
            keys.append(ref.key)
        if ref.kind == "absolute":
            keys.append(f"{ref.resource_type}/{ref.id}")
        if ref.kind == "bare" and resource_type:
            keys += [f"{resource_type}/{ref.id}", f"urn:uuid:{ref.id.lower()}"]
        for key in keys:
            found = self.lookup(key)
            if found is not None and resource_type in (None, found.get("resourceType")):
                return found
        return None

    def medication_for(self, order: JSON) -> JSON | None:
        """The Medication resource an order refers to (contained, prefetched or fetched)."""
        ref = order.get("medicationReference")
        if not isinstance(ref, dict):
            return None
        return self.resolve(ref, order, "Medication")


class _Ownership:
    """Whether a resource's subject/patient is this request's patient: True (yes), False (it
    names another patient), None (cannot tell: unresolvable, a Group, no comparable data)."""

    def __init__(self, record: PatientRecord, patient_id: str, patient_url: str) -> None:
        self._record = record
        self._patient_id = patient_id
        self._own = f"Patient/{patient_id}"
        self._patient_keys = {f"Patient/{patient_id}", f"urn:uuid:{patient_id.lower()}"}
        if patient_url:
            self._patient_keys.add(patient_url)
        patient = record.patient
        self._identifiers = identifier_pairs(patient.get("identifier")) if patient else frozenset()

    def of(self, resource: JSON) -> bool | None:
        for element in ("subject", "patient"):
            ref = resource.get(element)
            if isinstance(ref, dict):
                if ref.get("reference") == self._own:  # the common case, decided at once
                    return True
                return self._names_patient(ref, resource)
        return True  # no subject: nothing says it is someone else's

    def _same_patient(self, target: JSON) -> bool | None:
        if target is self._record.patient or target.get("id") == self._patient_id:
            return True
        verdict = identifiers_agree(identifier_pairs(target.get("identifier")), self._identifiers)
        if verdict is not None:
            return verdict
        return False if isinstance(target.get("id"), str) else None

    def _names_patient(self, reference: JSON, holder: JSON) -> bool | None:
        ref = parse_reference(reference)
        by_identifier = (
            identifiers_agree(ref.identifiers, self._identifiers) if ref.identifiers else None
        )
        if ref.kind == "identifier":
            return by_identifier
        if ref.kind == "contained":
            target = self._record.resolve(ref.key, holder, "Patient")
            if target is not None:
                verdict = identifiers_agree(
                    identifier_pairs(target.get("identifier")), self._identifiers
                )
                if verdict is not None:
                    return verdict
            return by_identifier
        if ref.kind not in ("relative", "absolute", "bare", "urn"):
            return by_identifier
        if ref.resource_type not in ("", "Patient"):
            return None  # a Group, a Device...: not a patient this service can compare
        if ref.id == self._patient_id or ref.key in self._patient_keys:
            return True
        target = self._record.resolve(ref.key if ref.kind != "absolute" else reference)
        if target is None and ref.kind == "bare":
            target = self._record.lookup(f"urn:uuid:{ref.id.lower()}")
        if target is not None:
            if target.get("resourceType") != "Patient":
                return None
            verdict = self._same_patient(target)
            if verdict is not None:
                return verdict
        if by_identifier is not None:
            return by_identifier
        # a bundle-local urn that no Bundle entry carries: unresolvable, not proof of anything
        return None if ref.kind == "urn" else False


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
    "too-large": "FHIR answer unreadable (over the size cap)",
    "not-started": "FHIR read not started before the request deadline",
    "operation-outcome": "FHIR server answered an OperationOutcome",
}


def _failure(outcome: FetchOutcome) -> str:
    """How a fetch failed, in fixed words (the HTTP status included; never a URL or data)."""
    if outcome.error == "http-error":
        status = outcome.calls[-1].get("status") if outcome.calls else None
        return f"FHIR server answered status {status}"
    return _FAILURES.get(outcome.error, "FHIR read failed")


class RecordLoader:
    def __init__(
        self, config: Config, servers: FhirServers, client: FhirClient | None = None
    ) -> None:
        self._config = config
        self._servers = servers
        self._client = client or FhirClient(config)
        self._policy = FhirAccessPolicy(config)

    def load(
        self, request: HookRequest, service: Service, issuer_fhir_servers: tuple[str, ...] = ()
    ) -> PatientRecord:
        record = PatientRecord(
            patient_id=request.patient_id,
            hook=request.hook,
            encounter_id=request.encounter_id,
            anomalies=request.anomalies,
        )
        deadline = time.monotonic() + self._config.fhir_deadline
        can_fetch = self._policy.allows(request.fhir_server, issuer_fhir_servers)
        if request.fhir_server and not can_fetch:
            record.anomalies["fhirServer:not-allowlisted"] += 1
        base = request.fhir_server or ""

        values: dict[str, Any] = {}
        wanted: dict[str, tuple[Callable[..., FetchOutcome], tuple[Any, ...]]] = {}
        # Why a key could not be had (fixed words, never URLs or data): for the 412's log line.
        failures: dict[str, str] = {}
        no_fetch = "fhirServer not allowed" if request.fhir_server else "no fhirServer"
        for key in service.prefetch:
            state, value = self._prefetch_state(request.prefetch, key, record)
            if state == "usable":
                values[key.name] = value
                if isinstance(value, dict) and next_link(value):
                    if can_fetch:
                        wanted[key.name] = (
                            self._follow,
                            (base, value, request.access_token, deadline, key),
                        )
                    else:
                        record.partial.add(key.name)
            elif state == "null":
                values[key.name] = None
            elif can_fetch:
                wanted[key.name] = (
                    self._client.fetch,
                    (
                        base,
                        fallback_query(key.template, request),
                        request.access_token,
                        deadline,
                        key.resource_types[0],
                    ),
                )
            else:
                failures[key.name] = f"{state}, {no_fetch}"
                self._missing(key, record)

        with ExitStack() as held:
            fallback = _Fallback(self._servers, base, held, record, deadline)
            guard = fallback.guard() if wanted else None
            if guard is None:
                keys = {k.name: k for k in service.prefetch}
                for name in wanted:
                    failures[name] = fallback.refused or "FHIR server not available"
                    if name in values:
                        record.partial.add(name)
                    else:
                        self._missing(keys[name], record)
            else:
                pending = {name: guard.submit(fn, *args) for name, (fn, args) in wanted.items()}
                self._collect(pending, deadline, service, record, values, guard, failures)
            missing_required = [
                k.name for k in service.prefetch if k.required and k.name not in values
            ]
            if missing_required:
                # Each key named with how it failed: fixed words, never URLs or patient data.
                how = "; ".join(
                    f"{name}: {failures.get(name, 'unavailable')}" for name in missing_required
                )
                raise CdsError(
                    412,
                    "Required patient data was not prefetched and could not be read from the "
                    f"FHIR server: {how}",
                    [f"prefetch.{name}" for name in missing_required],
                    {"Retry-After": str(fallback.retry_after)} if fallback.refused else None,
                    log_reason=f"required prefetch missing: {how}",
                )
            self._fill(record, values, service, request)
            self._resolve_medications(
                record, fallback if can_fetch else None, request.access_token, deadline
            )
        return record

    def _prefetch_state(
        self, prefetch: dict[str, Any], key: PrefetchKey, record: PatientRecord
    ) -> tuple[str, Any]:
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
            raise CdsError(
                413,
                f"prefetch.{key.name} holds more than {self._config.max_bundle_entries} entries",
                [f"prefetch.{key.name}"],
            )
        return "usable", value

    def _follow(
        self, base: str, bundle: JSON, token: str | None, deadline: float, key: PrefetchKey
    ) -> FetchOutcome:
        outcome = FetchOutcome(body=bundle, ok=True)
        self._client.follow_pages(base, bundle, token, deadline, key.resource_types[0], outcome)
        return outcome  # outcome.body: the pages combined; `bundle` itself is untouched

    @staticmethod
    def _missing(key: PrefetchKey, record: PatientRecord) -> None:
        if not key.required:
            record.unavailable.add(key.name)

    def _collect(
        self,
        pending: dict[str, Future[FetchOutcome]],
        deadline: float,
        service: Service,
        record: PatientRecord,
        values: dict[str, Any],
        guard: ServerGuard,
        failures: dict[str, str],
    ) -> None:
        if not pending:
            return
        # The watchdog ends every exchange at the deadline; the grace covers thread wake-up,
        # so nothing this call started is still reading when it answers.
        wait(pending.values(), timeout=max(0.0, deadline - time.monotonic()) + _GRACE)
        keys = {k.name: k for k in service.prefetch}
        for name, future in pending.items():
            if not future.done():
                record.fhir_calls.append(
                    {"resource": keys[name].resource_types[0], "outcome": "deadline"}
                )
                future.cancel()
                if name not in values:
                    failures[name] = "FHIR read timed out (request deadline)"
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
                failures[name] = _failure(outcome)
                self._missing(keys[name], record)

    def _fill(
        self, record: PatientRecord, values: dict[str, Any], service: Service, request: HookRequest
    ) -> None:
        total = 0
        draft_ids = {
            (o.get("resourceType"), o.get("id"))
            for o in request.draft_orders
            if isinstance(o.get("id"), str)
        }  # an id that is a list is unhashable
        buckets = {rtype: getattr(record, name) for rtype, name in _BUCKETS.items()}
        # First every resource and its fullUrl is gathered and indexed, so a reference can
        # resolve against any Bundle of the request whatever the order of the keys.
        gathered: list[tuple[str, JSON]] = []
        patient_url = ""
        for key in service.prefetch:
            value = values.get(key.name)
            if not isinstance(value, dict):
                continue
            if value.get("resourceType") == "Bundle":
                resources = list(bundle_entries(value))
                entries = value.get("entry")
                unreadable = (len(entries) if isinstance(entries, list) else 0) - len(resources)
                if unreadable:
                    record.anomalies[f"prefetch.{key.name}:unreadable-entry"] += unreadable
            else:
                resources = [("", value)]
            total += len(resources)
            if total > self._config.max_bundle_entries * 2:
                raise CdsError(
                    413,
                    "The patient record is larger than this service accepts",
                    [f"prefetch.{key.name}"],
                )
            for full_url, resource in resources:
                rtype = resource["resourceType"]
                # indexed even when not this key's type (e.g. a Patient or Medication a search
                # _included): references may name it, but it never enters a bucket
                record.remember(resource, full_url)
                if rtype not in key.resource_types:
                    if rtype != "OperationOutcome":
                        record.anomalies[f"prefetch.{key.name}:unexpected-{type_name(rtype)}"] += 1
                    continue
                if rtype == "Patient" and record.patient is None:
                    record.patient, patient_url = resource, full_url
                gathered.append((rtype, resource))
        drafts: list[JSON] = []
        for order in request.draft_orders:
            record.remember(order, full_url_key(request.draft_full_urls.get(id(order))))
            if order.get("resourceType") != "Medication":  # a Medication a draft names
                drafts.append(order)

        owner = _Ownership(record, request.patient_id, patient_url)
        seen: set[tuple[str, str]] = set()
        for rtype, resource in gathered:
            rid = resource.get("id")
            ident = (rtype, rid if isinstance(rid, str) else str(id(resource)))
            if ident in seen or rtype in ("Patient", "Medication"):
                continue
            seen.add(ident)
            if ident in draft_ids:
                continue  # the draft itself never counts as history
            verdict = owner.of(resource)
            record.clinical_resource_count += 1
            if verdict is False:
                record.anomalies[f"{rtype}:other-patient"] += 1
                record.other_patient_count += 1
                continue
            if verdict is None:
                record.anomalies[f"{rtype}.subject:unresolved"] += 1
            # History is read with shape-tolerant helpers (a lone object where R4 wants an
            # array is accepted as is), so it is not repaired here: that keeps a
            # 5,000-order history cheap.
            buckets[rtype].append(resource)
        ignored = record.other_patient_count
        if (
            ignored >= _UNUSABLE_MIN_IGNORED
            and ignored > _UNUSABLE_SHARE * record.clinical_resource_count
        ):
            record.unusable_reason = UNUSABLE_OTHER_PATIENT
            record.anomalies["record:mostly-other-patient"] += 1
        for order in drafts:
            normalise_quirks(order, record.anomalies)
            record.draft_orders.append(order)
            if selected(request, order):
                record.focus_orders.append(order)

    def _resolve_medications(
        self, record: PatientRecord, fallback: _Fallback | None, token: str | None, deadline: float
    ) -> None:
        """Read the Medications that orders name but the request did not carry. Only
        references the FHIR server can answer are read: Medication/id, a bare id, or an
        absolute URL on that same server; a urn:uuid no Bundle entry carries, a missing
        contained resource or another server's URL is counted as unresolved."""
        wanted: set[str] = set()
        unresolvable = 0
        server = fallback.base.rstrip("/").lower() if fallback is not None else ""
        for group in (
            record.draft_orders,
            record.medication_requests,
            record.medication_dispenses,
            record.medication_statements,
        ):
            for order in group:
                ref = order.get("medicationReference")
                if not isinstance(ref, dict) or record.medication_for(order) is not None:
                    continue
                parsed = parse_reference(ref)
                if parsed.resource_type not in ("", "Medication"):
                    unresolvable += 1
                elif parsed.kind in ("relative", "bare") or (
                    parsed.kind == "absolute"
                    and server
                    and parsed.key.lower().startswith(server + "/Medication/".lower())
                ):
                    wanted.add(parsed.id)
                else:
                    unresolvable += 1
        if unresolvable:
            record.anomalies["medicationReference:unresolved"] += unresolvable
        if not wanted:
            return
        guard = fallback.guard() if fallback is not None else None
        if fallback is None or guard is None:
            record.anomalies["medicationReference:unresolved"] += len(wanted)
            return
        base = fallback.base
        cap = self._config.fhir_max_medication_fetches
        futures = {
            med_id: guard.submit(
                self._client.get_json,
                f"{base}/Medication/{quote(med_id, safe='', errors='replace')}",
                token,
                deadline,
                "Medication",
            )
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

    def __init__(
        self,
        servers: FhirServers,
        base: str,
        held: ExitStack,
        record: PatientRecord,
        deadline: float | None = None,
    ) -> None:
        self._servers = servers
        self._deadline = deadline
        self.base = base
        self._held = held
        self._record = record
        self._guard: ServerGuard | None = None
        self.refused = ""
        self.retry_after = 0

    def guard(self) -> ServerGuard | None:
        if self._guard is None and not self.refused:
            try:
                self._guard = self._held.enter_context(
                    self._servers.admit(self.base, self._deadline)
                )
            except BreakerOpen as exc:
                self.refused = str(exc)
                self.retry_after = exc.retry_after
                self._record.fhir_calls.append({"outcome": "breaker-open"})
                self._record.anomalies["fhirServer:breaker-open"] += 1
        return self._guard
