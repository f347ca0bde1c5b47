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
from typing import Any

from flask import Blueprint, Response, current_app, request

from cds_service import metrics
from cds_service.config import Config
from cds_service.errors import CdsError, operation_outcome
from cds_service.http.responses import json_response
from cds_service.logs import where
from cds_service.net import client_address
from cds_service.store import CardLogWriter, Store, StoreUnavailable
from cds_service.store.cardlog import CardLogEntry, PendingEntry, entry_for, patient_of

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


@ops_bp.get("/readyz")
def readyz() -> Response:
    knowledge = current_app.extensions.get("cds_knowledge")
    if (
        "cds_engine" not in current_app.extensions
        or knowledge is None
        or not knowledge.valuesets.version
        or not knowledge.cards.templates
    ):
        raise CdsError(503, "Not ready: knowledge not loaded")
    store: Store = current_app.extensions["cds_store"]
    try:
        store.ping()
    except StoreUnavailable:
        raise CdsError(
            503,
            "Not ready: the database is unreachable",
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        ) from None
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
        metrics.HOOK_CALLS.labels(service_id, str(status)).inc()
        metrics.HOOK_LATENCY.labels(service_id).observe(seconds)
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
            metrics.CARDS.labels(
                str(topic.get("code", "unknown"))[:128], str(card.get("indicator", ""))
            ).inc()
        writer: CardLogWriter | None = current_app.extensions.get("cds_card_log")
        if writer is None:
            return
        store: Store = current_app.extensions["cds_store"]
        fhir_server, patient_id = patient_of(body)
        # Only the hook name and the cards are kept for the writer thread, which builds the
        # entry (label matching, the patient key's HMAC) off this request's critical path.
        request = {"hook": body.get("hook")} if isinstance(body, dict) else None
        response, silent_cards = result.body, result.silent_cards
        now = dt.datetime.now(dt.UTC)

        def build() -> CardLogEntry:
            return entry_for(
                service_id,
                request,
                response,
                store.pseudonymizer.patient_key(fhir_server, patient_id),
                store.labels,
                now,
                silent_cards=silent_cards,
            )

        shown = response.get("cards") if isinstance(response, dict) else None
        count = (len(shown) if isinstance(shown, list) else 0) + len(silent_cards or ())
        writer.submit(PendingEntry(build, count))
    except Exception as exc:  # noqa: BLE001 - recording must never fail a hook call
        log.error("after-hook-failed", extra={"error": type(exc).__name__, "where": where(exc)})
        metrics.CARD_LOG_LOST.labels("error").inc()


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
