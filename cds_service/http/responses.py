"""JSON and error responses: the one place views, ops and analytics build them."""

from __future__ import annotations

from typing import Any

from flask import Response

from cds_service.errors import CdsError
from cds_service.jsonfast import dumps_bytes


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        dumps_bytes(body),
        status=status,
        mimetype="application/json",
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(exc: CdsError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)
