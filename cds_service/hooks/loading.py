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
from collections.abc import Callable
from concurrent.futures import Future, wait
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

from cds_service.config import Config
from cds_service.errors import CdsError
from cds_service.fhir.bulkhead import FhirServers, ServerGuard
from cds_service.fhir.client import FetchOutcome, FhirAccessPolicy, FhirClient
from cds_service.fhir.read import (
    JSON,
    as_list,
    full_url_key,
    is_operation_outcome_only,
    next_link,
    normalise_quirks,
    type_name,
)
from cds_service.fhir.record import (
    UNUSABLE_MIN_IGNORED,
    UNUSABLE_OTHER_PATIENT,
    UNUSABLE_SHARE,
    Ownership,
    PatientRecord,
)
from cds_service.hooks.fallback import GRACE, Fallback, resolve_medications
from cds_service.hooks.request import HookRequest, selected
from cds_service.hooks.services import PrefetchKey, Service


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
            record.sources[key.domain] += 1
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
                        record.partial.add(key.domain)
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
            fallback = Fallback(self._servers, base, held, record, deadline)
            guard = fallback.guard() if wanted else None
            if guard is None:
                keys = {k.name: k for k in service.prefetch}
                for name in wanted:
                    failures[name] = fallback.refused or "FHIR server not available"
                    if name in values:
                        record.partial.add(keys[name].domain)
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
            resolve_medications(
                record,
                fallback if can_fetch else None,
                self._client,
                self._config.fhir_max_medication_fetches,
                request.access_token,
                deadline,
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
        record.missing[key.domain] += 1
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
        wait(pending.values(), timeout=max(0.0, deadline - time.monotonic()) + GRACE)
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
                    record.partial.add(keys[name].domain)
                continue
            outcome = future.result()
            guard.record(outcome.calls)
            record.fhir_calls.extend(outcome.calls)
            if outcome.ok:
                values[name] = outcome.body
                if outcome.partial:
                    record.partial.add(keys[name].domain)
            elif name in values:
                record.partial.add(keys[name].domain)
            else:
                failures[name] = _failure(outcome)
                self._missing(keys[name], record)

    def _fill(
        self, record: PatientRecord, values: dict[str, Any], service: Service, request: HookRequest
    ) -> None:
        # One pass over each Bundle's entries, which runs for every entry of a chart: no
        # per-entry allocation beyond filing the resource. Every resource is made resolvable
        # by reference (the index is built only if a reference ever needs it), so a reference
        # can resolve against any Bundle of the request whatever the order of the keys. A
        # resource is filed at once; only one whose subject/patient is not exactly
        # Patient/<this patient> is judged after the pass (ownership needs the Patient and
        # every Bundle), and taken out again if it names another patient.
        total = 0
        limit = self._config.max_bundle_entries * 2
        anomalies = record.anomalies
        patient_url = ""
        # the drafts' own ids by type: the draft itself never counts as history
        draft_ids: dict[str, set[str]] = {}
        for order in request.draft_orders:
            rid = order.get("id")
            if isinstance(rid, str):  # an id that is a list is unhashable
                draft_ids.setdefault(order["resourceType"], set()).add(rid)
        own = f"Patient/{request.patient_id}"
        buckets = record.resources
        # ids seen so far, by type (a resource in two Bundles counts once); the type changes
        # rarely along a Bundle, so its set and bucket are looked up only when it does
        seen: dict[str, set[str]] = {}
        doubtful: list[JSON] = []  # filed, subject not exactly `own`: judged after the pass
        count = 0
        for key in service.prefetch:
            value = values.get(key.name)
            if not isinstance(value, dict):
                continue
            types = key.resource_types
            is_bundle = value.get("resourceType") == "Bundle"
            entries = value.get("entry") if is_bundle else [{"resource": value}]
            items = entries if isinstance(entries, list) else as_list(entries)
            record.remember_bundle(value if is_bundle else {"entry": items})
            readable = 0
            last_type: str | None = None
            seen_here: set[str] = set()
            drafts_here: set[str] = set()
            bucket: list[JSON] | None = None
            for entry in items:
                if not isinstance(entry, dict):
                    continue
                resource = entry.get("resource")
                if not isinstance(resource, dict):
                    continue
                rtype = resource.get("resourceType")
                if not isinstance(rtype, str):
                    continue
                readable += 1
                if rtype in types and rtype != "Patient" and rtype != "Medication":
                    # a clinical resource of this key's type: the common case
                    if rtype != last_type:
                        last_type = rtype
                        seen_here = seen.setdefault(rtype, set())
                        drafts_here = draft_ids.get(rtype, set())
                        bucket = buckets.get(rtype)  # made when its first resource is filed
                    rid = resource.get("id")
                    if not isinstance(rid, str):
                        rid = str(id(resource))
                    if rid in seen_here:
                        continue
                    seen_here.add(rid)
                    if rid in drafts_here:
                        continue
                    count += 1
                    subject = resource.get("subject")
                    if not (isinstance(subject, dict) and subject.get("reference") == own):
                        doubtful.append(resource)
                    # History is read with shape-tolerant helpers (a lone object where R4
                    # wants an array is accepted as is), so it is not repaired here: that
                    # keeps a 5,000-order history cheap.
                    if bucket is None:
                        bucket = buckets[rtype] = []
                    bucket.append(resource)
                    continue
                # indexed even when not this key's type (e.g. a Patient or Medication a
                # search _included): references may name it, but it never enters a bucket
                if rtype == "Medication":
                    full_url = entry.get("fullUrl")
                    record.file_medication(resource, full_url if isinstance(full_url, str) else "")
                if rtype not in types:
                    if rtype != "OperationOutcome":
                        anomalies[f"prefetch.{key.name}:unexpected-{type_name(rtype)}"] += 1
                elif rtype == "Patient" and record.patient is None:
                    full_url = entry.get("fullUrl")
                    record.patient = resource
                    patient_url = full_url_key(full_url) if isinstance(full_url, str) else ""
            if is_bundle:
                unreadable = (len(entries) if isinstance(entries, list) else 0) - readable
                if unreadable:
                    anomalies[f"prefetch.{key.name}:unreadable-entry"] += unreadable
                    # what those entries held is unknown: the domain is not complete
                    record.partial.add(key.domain)
            total += readable
            if total > limit:
                raise CdsError(
                    413,
                    "The patient record is larger than this service accepts",
                    [f"prefetch.{key.name}"],
                )
        drafts: list[JSON] = []
        for order in request.draft_orders:
            record.remember(order, request.draft_full_urls.get(id(order), ""))
            if order.get("resourceType") != "Medication":  # a Medication a draft names
                drafts.append(order)

        record.clinical_resource_count += count
        if doubtful:
            self._judge(record, doubtful, request.patient_id, patient_url)
        ignored = record.other_patient_count
        if (
            ignored >= UNUSABLE_MIN_IGNORED
            and ignored > UNUSABLE_SHARE * record.clinical_resource_count
        ):
            record.unusable_reason = UNUSABLE_OTHER_PATIENT
            record.anomalies["record:mostly-other-patient"] += 1
        for order in drafts:
            normalise_quirks(order, record.anomalies)
            record.draft_orders.append(order)
            if selected(request, order):
                record.focus_orders.append(order)

    @staticmethod
    def _judge(
        record: PatientRecord, doubtful: list[JSON], patient_id: str, patient_url: str
    ) -> None:
        """Whose record each filed resource whose subject/patient is not plainly this
        patient's is (in the order read); one that names another patient is counted and
        taken out of its bucket, one that cannot be told is kept and counted."""
        owner = Ownership(record, patient_id, patient_url)
        dropped: set[int] = set()
        for resource in doubtful:
            verdict = owner.of(resource)
            rtype = resource["resourceType"]
            if verdict is False:
                record.anomalies[f"{rtype}:other-patient"] += 1
                record.other_patient_count += 1
                dropped.add(id(resource))
            elif verdict is None:
                record.anomalies[f"{rtype}.subject:unresolved"] += 1
        if dropped:
            for rtype in {r["resourceType"] for r in doubtful}:
                kept = [r for r in record.resources[rtype] if id(r) not in dropped]
                if kept:
                    record.resources[rtype] = kept
                else:
                    del record.resources[rtype]
