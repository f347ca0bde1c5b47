"""JSON and error responses: the one place views, ops and analytics build them."""

from __future__ import annotations

from typing import Any

from flask import Response

from cds_service.errors import CdsError
from cds_service.jsonfast import dumps_bytes


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # the full Content-Type given (werkzeug adds no charset to application/json): the same
    # header as mimetype="application/json", without working it out on every response
    response = Response(dumps_bytes(body), status=status, content_type="application/json")
    if headers:
        for key, value in headers.items():
            response.headers[key] = value
    return response


def error_response(exc: CdsError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)
