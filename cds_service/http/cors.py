"""CORS on hook and feedback calls without re-deciding it on every call.

flask-cors works out the CORS headers of every response from its options and the request's
Origin (and private-network) header. For a POST to a hook or feedback URL those headers
depend on nothing else, so this handler asks flask-cors once per distinct pair of header
values (at most MAX_REMEMBERED pairs; past that it asks every time) and adds the same headers
flask-cors would. flask-cors then sees Access-Control-Allow-Origin set and leaves the
response alone; preflights, discovery and every other URL stay with flask-cors.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request
from flask_cors.core import get_cors_headers

MAX_REMEMBERED = 256
_PRIVATE_NETWORK = "Access-Control-Request-Private-Network"


def install(app: Flask, options: Any) -> None:
    """Register after CORS(app): after_request handlers run last-registered first."""
    remembered: dict[tuple[str | None, str | None], list[tuple[str, Any]]] = {}

    @app.after_request
    def hook_cors(response: Response) -> Response:
        if request.method != "POST" or request.blueprint != "cds":
            return response
        headers = request.headers
        key = (headers.get("Origin"), headers.get(_PRIVATE_NETWORK))
        pairs = remembered.get(key)
        if pairs is None:
            pairs = list(get_cors_headers(options, headers, "POST").items())
            if len(remembered) < MAX_REMEMBERED:
                remembered[key] = pairs
        for name, value in pairs:
            response.headers.add(name, value)
        return response
