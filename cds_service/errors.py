"""Errors the service answers with: every non-2xx body is a FHIR OperationOutcome."""

from __future__ import annotations

from typing import Any

# HTTP status -> (OperationOutcome.issue.code, severity)
_ISSUE_CODES: dict[int, str] = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-costly",
    415: "not-supported",
    500: "exception",
    503: "transient",
}


def operation_outcome(status: int, message: str, expressions: list[str] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": _ISSUE_CODES.get(status, "processing"),
        "diagnostics": message,
    }
    if expressions:
        issue["expression"] = expressions
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class CdsError(Exception):
    """A request the service answers with a clear 4xx and an OperationOutcome."""

    def __init__(self, status: int, message: str, expressions: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.expressions = expressions or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return operation_outcome(self.status, self.message, self.expressions)
