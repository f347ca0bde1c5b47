"""Errors the service answers with: every non-2xx body is a FHIR OperationOutcome.

A client error is a CdsError (a 4xx saying what is wrong). Anything else is a bug:
`unexpected_error` logs it (exception type and code location only, never its message, which
can quote patient data) under a fresh error id and builds the 500 OperationOutcome that carries
the same id, so an operator can find the log line a user reports.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from cds_service.logs import where

# HTTP status -> OperationOutcome.issue.code
_ISSUE_CODES: dict[int, str] = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-costly",
    414: "too-costly",
    415: "not-supported",
    431: "too-costly",
    500: "exception",
    501: "not-supported",
    503: "transient",
}


def operation_outcome(
    status: int, message: str, expressions: list[str] | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": _ISSUE_CODES.get(status, "processing"),
        "diagnostics": message,
    }
    if expressions:
        issue["expression"] = expressions
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class CdsError(Exception):
    """A request the service answers with a clear 4xx and an OperationOutcome.

    `log_reason`, when given, is what the request log says instead of the message: a fixed
    text without client-supplied values or patient data (the message itself never quotes
    client text either)."""

    def __init__(
        self,
        status: int,
        message: str,
        expressions: list[str] | None = None,
        headers: dict[str, str] | None = None,
        log_reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.expressions = expressions or []
        self.headers = headers or {}
        self.log_reason = log_reason

    def body(self) -> dict[str, Any]:
        return operation_outcome(self.status, self.message, self.expressions)


def internal_error_body(error_id: str) -> dict[str, Any]:
    """The 500 OperationOutcome: no detail of the failure, only the id to quote."""
    return operation_outcome(
        500, f"Internal error (a bug in this service, not in the request); error id {error_id}"
    )


def unexpected_error(
    logger: logging.Logger, event: str, exc: BaseException, **fields: Any
) -> tuple[str, dict[str, Any]]:
    """Log an unexpected exception as `event` (type, code location, error id and the given
    safe fields) and return (error id, 500 OperationOutcome body)."""
    error_id = uuid.uuid4().hex[:16]
    logger.error(
        event,
        extra={
            "error": type(exc).__name__,
            "where": where(exc),
            "error_id": error_id,
            "unexpected": True,
            **fields,
        },
    )
    return error_id, internal_error_body(error_id)


class ReplayCacheUnavailable(Exception):
    """The replay cache cannot be consulted: the token is neither accepted nor refused (the
    view answers 503, never an unchecked acceptance). Raised by the store, answered by http."""
