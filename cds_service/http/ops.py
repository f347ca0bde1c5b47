"""Operations: GET /metrics, /healthz, /readyz, and what the views record after a hook call.

The three endpoints sit outside the EHR's JWT and answer only callers that configuration
allows (CDS_OPS_ALLOW, default loopback), or any caller on the separate CDS_OPS_PORT; anyone
else gets 404. /healthz: the process answers. /readyz: knowledge loaded and store reachable
(503 otherwise), for load balancers and Kubernetes readiness probes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, request

from cds_service import metrics
from cds_service.config import Config
from cds_service.errors import CdsError, operation_outcome
from cds_service.http.responses import json_response
from cds_service.logs import where
from cds_service.net import client_address
from cds_service.store import CardLogWriter, Store, StoreUnavailable
from cds_service.store.cardlog import (
    CardLogEntry,
    OrderCall,
    PendingEntry,
    entry_for,
    patient_of,
    user_of,
)
from cds_service.store.pseudonym import Pseudonymizer

log = logging.getLogger("cds_service.http.ops")
ops_bp = Blueprint("ops", __name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ops_allow(entries: tuple[str, ...]) -> tuple[Network, ...] | None:
    """CDS_OPS_ALLOW as networks (None = anyone, for "*"); raises ValueError on a bad entry."""
    networks: list[Network] = []
    for entry in entries:
        if entry == "*":
            return None
        if entry == "loopback":
            networks += [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
        else:
            networks.append(ipaddress.ip_network(entry, strict=False))
    return tuple(networks)


def _allowed() -> bool:
    config: Config = current_app.config["CDS_CONFIG"]
    if config.ops_port and request.environ.get("SERVER_PORT") == str(config.ops_port):
        return True
    networks: tuple[Network, ...] | None = current_app.extensions["cds_ops_allow"]
    if networks is None:
        return True
    address = client_address(request.remote_addr)
    return address is not None and any(address in network for network in networks)


@ops_bp.before_request
def restrict() -> None:
    if not _allowed():
        raise CdsError(404, "Not found: the services are listed at GET /cds-services")


def _text(body: str, status: int = 200, mimetype: str = "application/json") -> Response:
    return Response(body, status=status, mimetype=mimetype, headers={"Cache-Control": "no-store"})


@ops_bp.get("/healthz")
def healthz() -> Response:
    return _text('{"status":"ok"}')


PROBE_INTERVAL = 5.0  # seconds between two write probes of one process


class InFlight:
    """Requests this process is answering now (readiness: is the worker saturated?)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self) -> None:
        with self._lock:
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


class WriteProbe:
    """The store's write probe, run at most once per `interval` seconds per process (a
    readiness poll, or many, cost one small write every few seconds)."""

    def __init__(self, store: Store, interval: float = PROBE_INTERVAL) -> None:
        self._store = store
        self._interval = interval
        self._lock = threading.Lock()
        self._checked = -interval
        self._ok = False

    def ok(self) -> bool:
        """Between two write probes the database is still pinged (SELECT 1), so an outage
        shows at once and a full disk within the interval."""
        with self._lock:
            now = time.monotonic()
            try:
                if now - self._checked >= self._interval:
                    self._checked = now
                    self._ok = False
                    self._store.write_probe()
                    self._ok = True
                elif self._ok:
                    self._store.ping()
            except StoreUnavailable:
                metrics.STORE_FAILURES.labels("write_probe").inc()
                return False
            return self._ok


def install(app: Any, store: Store, threads: int) -> None:
    """Readiness state: the in-flight counter (every request of the app) and the probe."""
    inflight = InFlight()
    app.extensions["cds_inflight"] = inflight
    app.extensions["cds_threads"] = threads
    app.extensions["cds_write_probe"] = WriteProbe(store)
    app.before_request(inflight.enter)
    app.teardown_request(lambda _exc: inflight.leave())


def _not_ready(message: str) -> CdsError:
    return CdsError(
        503, f"Not ready: {message}", headers={"Retry-After": "5", "Cache-Control": "no-store"}
    )


@ops_bp.get("/readyz")
def readyz() -> Response:
    """Ready when knowledge is loaded, the store takes a write (probed at most every 5 s) and
    the worker has a request thread to spare; liveness (/healthz) stays the bare answer."""
    knowledge = current_app.extensions.get("cds_knowledge")
    if (
        "cds_engine" not in current_app.extensions
        or knowledge is None
        or not knowledge.valuesets.version
        or not knowledge.cards.templates
    ):
        raise _not_ready("knowledge not loaded")
    probe: WriteProbe | None = current_app.extensions.get("cds_write_probe")
    if probe is not None and not probe.ok():
        raise _not_ready("the database cannot take a write (unreachable, full or read-only)")
    inflight: InFlight | None = current_app.extensions.get("cds_inflight")
    threads = int(current_app.extensions.get("cds_threads") or 0)
    if inflight is not None and threads and inflight.count - 1 >= threads:  # minus this one
        raise _not_ready("every request thread of this worker is busy")
    return _text('{"status":"ready"}')


@ops_bp.get("/metrics")
def metrics_view() -> Response:
    config: Config = current_app.config["CDS_CONFIG"]
    return _text(
        metrics.exposition(config.prometheus_multiproc_dir).decode(),
        mimetype="text/plain; version=0.0.4",
    )


def after_hook(service_id: str, body: Any, result: Any, seconds: float) -> None:
    """Metrics and the card-log entry for one hook call. Never raises and never blocks on
    the database: the hook's answer does not depend on it."""
    try:
        status = int(result.status)
        metrics.HOOK_CALLS_BY(service_id, str(status)).inc()
        metrics.HOOK_LATENCY_BY(service_id).observe(seconds)
        if status == 412:
            metrics.HOOK_MISSING_DATA.labels(service_id).inc()
        info = getattr(result, "log", None) or {}
        for call in info.get("fhir_calls") or ():
            resource = str(call.get("resource", "?"))[:40]
            outcome = str(call.get("outcome", "?"))[:40]
            metrics.FHIR_CALLS.labels(resource, outcome).inc()
            if outcome != "ok":
                metrics.FHIR_FAILURES.labels(resource, outcome).inc()
            if isinstance(call.get("ms"), (int, float)):
                metrics.FHIR_LATENCY.labels(resource).observe(call["ms"] / 1000)
        if status != 200:
            return
        for card in result.body.get("cards", ()):
            topic = (card.get("source") or {}).get("topic") or {}
            metrics.CARDS_BY(
                str(topic.get("code", "unknown"))[:128], str(card.get("indicator", ""))
            ).inc()
        extensions = current_app.extensions  # one proxy lookup for the three below
        writer: CardLogWriter | None = extensions.get("cds_card_log")
        if writer is None:
            return
        store: Store = extensions["cds_store"]
        fhir_server, patient_id = patient_of(body)
        now = dt.datetime.now(dt.UTC)
        keys = store.pseudonymizer
        user_id = user_of(body)
        # Only the hook name, the ids the keys are made of, the ordering decision and the
        # cards are kept for the writer thread, which builds the entry (label matching, the
        # patient, prescriber and order-call HMACs) off this request's critical path.
        request = {"hook": body.get("hook")} if isinstance(body, dict) else None
        response, silent_cards = result.body, result.silent_cards
        decisions, variants = result.decisions, result.variants
        decision = getattr(result, "decision", None)
        hook = str((getattr(result, "log", None) or {}).get("hook", ""))[:64]
        state = extensions.get("cds_service_state")

        def build() -> CardLogEntry:
            prescriber = keys.prescriber_key(fhir_server, user_id)
            order = _order_call(
                service_id, decision, hook, keys, fhir_server, patient_id, prescriber, now
            )
            return entry_for(
                service_id,
                request,
                response,
                keys.patient_key(fhir_server, patient_id),
                store.labels,
                now,
                silent_cards=silent_cards,
                decisions=decisions,
                order=order,
                prescriber_key=prescriber,
                variants=variants,
                state=state,
            )

        shown = response.get("cards") if isinstance(response, dict) else None
        count = (len(shown) if isinstance(shown, list) else 0) + len(silent_cards or ())
        writer.submit(PendingEntry(build, count))
    except Exception as exc:  # noqa: BLE001 - recording must never fail a hook call
        log.error("after-hook-failed", extra={"error": type(exc).__name__, "where": where(exc)})
        metrics.CARD_LOG_LOST.labels("error").inc()


def record_decisions(decisions: dict[str, str]) -> None:
    """Write the shown order cards' decision links before the answer leaves (one small
    insert), so feedback that follows at once answers the decision on any worker (one
    decision, one answer). The store down: logged and counted; the card log writes the links
    later, and until then the card may be shown again (the safe default). Never raises."""
    if not decisions:
        return
    try:
        store: Store = current_app.extensions["cds_store"]
        store.record_decisions(decisions, dt.datetime.now(dt.UTC))
    except StoreUnavailable:
        metrics.STORE_FAILURES.labels("decisions").inc()
    except Exception as exc:  # noqa: BLE001 - recording must never fail a hook call
        log.error(
            "record-decisions-failed", extra={"error": type(exc).__name__, "where": where(exc)}
        )


def _order_call(
    service_id: str,
    decision: Any,
    hook: str,
    keys: Pseudonymizer,
    fhir_server: str,
    patient_id: str,
    prescriber: str | None,
    now: dt.datetime,
) -> OrderCall | None:
    """The keyed ordering decision of an order hook call (None for other hooks)."""
    if decision is None:
        return None
    base = (fhir_server, patient_id, decision.encounter_id)
    made: dict[str, str] = {}  # the decision's drafts are among the drafts: keyed once

    def draft(identity: str) -> str:
        key = made.get(identity)
        if key is None:
            key = made[identity] = keys.key("draft", *base, identity)
        return key

    return OrderCall(
        called_at=now,
        service_id=service_id,
        hook=hook,
        decision_key=keys.key("decision", *base, *decision.chosen),
        opioid=decision.opioid,
        encounter_key=keys.key("encounter", *base),
        decision_drafts=tuple(draft(i) for i in decision.chosen[:50]),
        draft_keys=tuple(draft(i) for i in decision.drafts[:50]),
        classes=tuple(str(c)[:64] for c in decision.classes[:32]),
        prescriber_key=prescriber,
    )


def store_feedback(service_id: str, items: list[dict[str, Any]]) -> int:
    """Store feedback items (idempotent across processes); 503 when the store is down, so
    the EHR can resend (resending is safe)."""
    store: Store = current_app.extensions["cds_store"]
    try:
        new = store.add_feedback(service_id, items)
    except StoreUnavailable:
        metrics.STORE_FAILURES.labels("feedback").inc()
        raise CdsError(
            503,
            "Feedback cannot be stored right now; please resend it later",
            headers={"Retry-After": "5"},
        ) from None
    for item in items:
        metrics.FEEDBACK_ITEMS.labels(item["outcome"]).inc()
    metrics.FEEDBACK_STORED.inc(new)
    return new


def replay_check_unavailable() -> Response:
    """A token that could not be checked for replay: fail closed with 503."""

    metrics.STORE_FAILURES.labels("replay").inc()
    return json_response(
        operation_outcome(
            503,
            "The token cannot be checked for replay right now (database unreachable); retry later",
        ),
        503,
        {"Retry-After": "5"},
    )
