"""The Medications that orders name but the request did not carry, and the call's admission
to its FHIR server (shared by the record loader's searches and these reads)."""

from __future__ import annotations

import time
from concurrent.futures import wait
from contextlib import ExitStack
from urllib.parse import quote

from cds_service.fhir.bulkhead import BreakerOpen, FhirServers, ServerGuard
from cds_service.fhir.client import FhirClient
from cds_service.fhir.read import parse_reference
from cds_service.fhir.record import PatientRecord

GRACE = 0.25  # seconds past the deadline to let cut exchanges return (see _collect)


class Fallback:
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


def resolve_medications(
    record: PatientRecord,
    fallback: Fallback | None,
    client: FhirClient,
    cap: int,
    token: str | None,
    deadline: float,
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
        record.of_type("MedicationRequest"),
        record.of_type("MedicationDispense"),
        record.of_type("MedicationStatement"),
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
    futures = {
        med_id: guard.submit(
            client.get_json,
            f"{base}/Medication/{quote(med_id, safe='', errors='replace')}",
            token,
            deadline,
            "Medication",
        )
        for med_id in sorted(wanted)[:cap]
    }
    if len(wanted) > cap:
        record.anomalies["medicationReference:over-fetch-cap"] += len(wanted) - cap
    wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + GRACE)
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
