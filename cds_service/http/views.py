"""The HTTP surface: discovery, hook calls, feedback; every error an OperationOutcome."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from gunicorn.http.errors import ParseException  # type: ignore[import-untyped]
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds_service.config import Config
from cds_service.errors import CdsError, ReplayCacheUnavailable, operation_outcome, unexpected_error
from cds_service.hooks.feedback import CardIds, parse_feedback
from cds_service.hooks.pipeline import Engine
from cds_service.hooks.request import read_json_bytes
from cds_service.hooks.services import SERVICES_BY_ID
from cds_service.http import ops
from cds_service.http.auth import Authenticator, AuthError
from cds_service.http.hygiene import mark_body_read
from cds_service.http.responses import error_response, json_response
from cds_service.metrics import AUTH_FAILURES, auth_reason
from cds_service.net import host_name, is_loopback_host

log = logging.getLogger("cds_service.http.views")

# What a WSGI server's body reader raises for a client's malformed chunk or cut connection
# (gunicorn: NoMoreData is an OSError, a bad chunk a ParseException).
_BODY_READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, EOFError, ParseException)
bp = Blueprint("cds", __name__)

_JSON_TYPES = ("application/json", "application/fhir+json")
_MAX_HOST_VERDICTS = 256  # distinct Host headers whose check_host verdict is remembered


def _engine() -> Engine:
    engine: Engine = current_app.extensions["cds_engine"]
    return engine


def _too_large(limit: int) -> CdsError:
    return CdsError(413, f"The request body is larger than {limit} bytes")


def _read_json(limit: int | None = None) -> Any:
    """The request body as JSON, or a CdsError with the right status (413 / 415 / 400)."""
    current = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
    mimetype = (current.mimetype or "").lower()
    if mimetype not in _JSON_TYPES and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        raise CdsError(415, "Send the request as application/json")
    most = current_app.config["MAX_CONTENT_LENGTH"]
    limit = min(limit or most, most)
    length = current.content_length
    environ = current.environ
    if length is not None and length > limit:
        raise _too_large(limit)
    try:
        if length is None and environ.get("wsgi.input_terminated"):
            # A chunked body: the server ends the stream, so read one byte past the limit to
            # tell "over the limit" (413) from "at most the limit" (werkzeug's own limited
            # stream stops quietly at the limit, which would look like truncated JSON).
            raw = environ["wsgi.input"].read(limit + 1)
        else:
            raw = current.get_data(cache=False)
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    except HTTPException:
        raise
    except _BODY_READ_ERRORS as exc:  # the server's body reader refusing the client's bytes
        # (a malformed chunk, a cut connection): the client's error; anything else is a bug
        log.warning("body-unreadable", extra={"error": type(exc).__name__, "status": 400})
        raise CdsError(
            400,
            "The request body could not be read (malformed chunked "
            "encoding or an interrupted upload)",
        ) from None
    if len(raw) > limit:
        raise _too_large(limit)
    if length is None or len(raw) == length:
        mark_body_read(environ)  # all of it: the connection stays open
    return read_json_bytes(raw)


@bp.before_request
def check_host() -> None:
    """With CDS_AUTH=off no credential stands between a web page and the service, and a page
    that rebinds its own DNS name to this machine reaches it under that name: discovery, hooks
    and feedback then answer only to the Host names /analytics answers to (CDS_ANALYTICS_HOSTS,
    the host of CDS_PUBLIC_BASE_URL) and loopback names, and 421 to any other. With
    CDS_AUTH=required the EHR's signed token names this service (its `aud`)."""
    config: Config = current_app.config["CDS_CONFIG"]
    if config.auth != "off":
        return
    extensions = current_app.extensions
    hosts: frozenset[str] | None = extensions.get("cds_analytics_hosts")
    if hosts is None:
        return
    # the verdict per Host header, remembered (a client sends the same one on every call;
    # parsing an IP literal per call cost more than the rest of this check)
    seen: dict[str, bool] | None = extensions.get("cds_host_verdicts")
    if seen is None:
        seen = extensions.setdefault("cds_host_verdicts", {})
    raw = request.host
    allowed = seen.get(raw)
    if allowed is None:
        name = host_name(raw)
        allowed = name in hosts or is_loopback_host(name)
        if len(seen) < _MAX_HOST_VERDICTS:
            seen[raw] = allowed
    if not allowed:
        raise CdsError(
            421,
            "This service does not answer to that host name: with CDS_AUTH=off it serves "
            "only loopback names, the names in CDS_ANALYTICS_HOSTS and the host of "
            "CDS_PUBLIC_BASE_URL",
        )


@bp.before_app_request
def authenticate() -> Response | None:
    """Verify the EHR's JWT on every discovery, hook and feedback call (CORS preflights carry
    no credentials and are answered without it)."""
    authenticator: Authenticator | None = current_app.extensions.get("cds_auth")
    g.issuer_fhir_servers = ()
    if (
        authenticator is None
        or request.method == "OPTIONS"
        or request.blueprint in {"ops", "analytics"}
    ):
        # /metrics, /healthz, /readyz: restricted by CDS_OPS_ALLOW / CDS_OPS_PORT;
        # /analytics: loopback or CDS_ANALYTICS_TOKEN (http/analytics.py), never the EHR JWT
        return None
    try:
        principal = authenticator.verify(request.headers.get("Authorization"), request.path)
    except ReplayCacheUnavailable:
        log.error("replay-check-unavailable", extra={"path_kind": _path_kind(), "status": 503})
        return ops.replay_check_unavailable()
    except AuthError as exc:
        AUTH_FAILURES.labels(auth_reason(str(exc))).inc()
        # AuthError messages are fixed texts that never quote the token or its claims.
        log.warning(
            "unauthorized", extra={"reason": str(exc), "path_kind": _path_kind(), "status": 401}
        )
        return json_response(
            operation_outcome(401, "Unauthorized"),
            401,
            {"WWW-Authenticate": 'Bearer realm="cds-services", error="invalid_token"'},
        )
    g.issuer_fhir_servers = principal.fhir_servers
    return None


def _path_kind() -> str:
    path = request.path.rstrip("/")
    if path == "/cds-services":
        return "discovery"
    return "feedback" if path.endswith("/feedback") else "hook"


@bp.get("/cds-services")
def discovery() -> Response:
    body: str = current_app.extensions["cds_discovery"]
    return Response(body, status=200, mimetype="application/json")


@bp.post("/cds-services/<service_id>")
def hook(service_id: str) -> Response:
    if service_id not in SERVICES_BY_ID:
        raise CdsError(404, "No CDS service with that id")
    body = _read_json()
    started = time.perf_counter()
    result = _engine().evaluate(service_id, body, g.get("issuer_fhir_servers", ()))
    if result.status == 200:
        ids: CardIds = current_app.extensions["cds_card_ids"]
        renamed = ids.stamp(service_id, [*result.body.get("cards", ()), *result.silent_cards])
        # what the engine keyed by the rendered uuid follows the card to its issued uuid
        result.decisions = {renamed.get(k, k): v for k, v in result.decisions.items()}
        result.variants = {renamed.get(k, k): v for k, v in result.variants.items()}
        ops.record_decisions(result.decisions)  # before the answer: one decision, one answer
    ops.after_hook(service_id, body, result, time.perf_counter() - started)  # metrics, card log
    return json_response(result.body, result.status, result.headers)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    if service_id not in SERVICES_BY_ID:
        raise CdsError(404, "No CDS service with that id")
    config: Config = current_app.config["CDS_CONFIG"]
    items = parse_feedback(
        _read_json(config.feedback_max_bytes),
        service_id,
        current_app.extensions["cds_card_ids"],
        current_app.extensions["cds_reason_codes"],
        _engine().templates.reason_system,
        config.feedback_max_items,
    )
    new = ops.store_feedback(service_id, items)
    log.info(
        "feedback",
        extra={
            "service": service_id,
            "feedback_items": len(items),
            "status": 200,
            "reason": f"{new} new",
        },
    )
    return json_response({})


@bp.app_errorhandler(CdsError)
def handle_cds_error(exc: CdsError) -> Response:
    return error_response(exc)


@bp.app_errorhandler(HTTPException)
def handle_http_error(exc: HTTPException) -> Response:
    status = exc.code or 400
    messages = {
        404: "Not found: the services are listed at GET /cds-services",
        405: "Method not allowed on this URL",
        413: "The request body is too large",
    }
    message = messages.get(status, exc.name)
    headers = {}
    valid_methods = getattr(exc, "valid_methods", None)
    if status == 405 and valid_methods:
        headers["Allow"] = ", ".join(valid_methods)
    return json_response(operation_outcome(status, message), status, headers)


@bp.app_errorhandler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    """Anything but a CdsError or an HTTP error is a bug: 500 with an error id (logged with
    the exception's type and code location, never its message)."""
    _, body = unexpected_error(log, "unexpected-error", exc, path_kind=_path_kind())
    return json_response(body, 500)
