"""The WSGI server behind `cds-service serve`: gunicorn's gthread worker, except that the
errors gunicorn answers itself (a request line or header over its limits, a malformed request,
an unsupported transfer coding) are sent as a FHIR OperationOutcome like every other error of
the service, not as gunicorn's HTML page, and are logged as fixed words (the status and the
exception type), never with the request line, a header or the client's address.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gunicorn import util  # type: ignore[import-untyped]
from gunicorn.http import errors as http_errors  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from cds_service.errors import operation_outcome, unexpected_error

log = logging.getLogger("cds_service.http.server")

# gunicorn exception -> (status, reason phrase, what the OperationOutcome says)
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (
        http_errors.LimitRequestLine,
        414,
        "URI Too Long",
        "The request line (method and URL) is longer than this service accepts",
    ),
    (
        http_errors.LimitRequestHeaders,
        431,
        "Request Header Fields Too Large",
        "The request headers are too many or too large",
    ),
    (
        http_errors.UnsupportedTransferCoding,
        501,
        "Not Implemented",
        "The request's transfer coding is not supported",
    ),
    (
        http_errors.ExpectationFailed,
        417,
        "Expectation Failed",
        "The request's Expect header cannot be met",
    ),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "Request forbidden"),
)
# Headers the application tried to send are the application's fault: those are bugs (500).
_APPLICATION_FAULTS = (
    http_errors.InvalidResponseHeader,
    http_errors.InvalidResponseHeaderName,
    http_errors.ConfigurationProblem,
)


def error_answer(exc: BaseException) -> tuple[int, str, str]:
    """(status, reason phrase, diagnostics) for an exception gunicorn's worker caught. A
    request gunicorn could not parse is the client's error; anything else is a bug, logged as
    unexpected with an error id that the 500's diagnostics carry."""
    if isinstance(exc, http_errors.ParseException) and not isinstance(exc, _APPLICATION_FAULTS):
        status, reason, message = next(
            ((s, r, m) for kind, s, r, m in _CLIENT_ERRORS if isinstance(exc, kind)),
            (400, "Bad Request", "The HTTP request is malformed"),
        )
        log.warning("server-refused", extra={"status": status, "error": type(exc).__name__})
        return status, reason, message
    _, body = unexpected_error(log, "server-unexpected-error", exc)
    return 500, "Internal Server Error", str(body["issue"][0]["diagnostics"])


def http_error(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response whose body is the OperationOutcome."""
    body = json.dumps(operation_outcome(status, message), separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class OperationOutcomeWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn gthread worker whose own error answers are OperationOutcome JSON."""

    def handle_error(self, _req: Any, client: Any, _addr: Any, exc: BaseException) -> None:
        status, reason, message = error_answer(exc)
        try:
            util.write_nonblock(client, http_error(status, reason, message))
        except Exception:  # noqa: BLE001 - the client is gone; nothing more to tell it
            log.debug("error-not-sent", extra={"status": status})
