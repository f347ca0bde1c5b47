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

from cds_service.config import Config

MAX_REMEMBERED = 256
_PRIVATE_NETWORK = "Access-Control-Request-Private-Network"

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
# A page served from this machine (the browser tests, a local EHR simulator), any port.
LOOPBACK_ORIGINS = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?$"
# "*": any real origin (scheme://host), never the opaque "null" that sandboxed frames,
# data: URLs and local files send: any page can make its requests look like that.
ANY_ORIGIN = r"^(?!null$)[a-z][a-z0-9+.-]*://[^\s/]+$"


def allowed_origins(config: Config) -> list[str]:
    """The origins flask-cors may grant (strings, or patterns flask-cors matches as regular
    expressions). CDS_CORS_ORIGINS empty: with CDS_AUTH=off (no credential at all) the CDS
    Hooks sandbox and loopback pages only; with CDS_AUTH=required any origin. `null` is never
    granted, whatever is configured."""
    listed = [o.strip() for o in config.cors_origins if o.strip() and o.strip().lower() != "null"]
    if not listed:
        listed = ["*"] if config.auth == "required" else [SANDBOX_ORIGIN, LOOPBACK_ORIGINS]
    return [ANY_ORIGIN if origin == "*" else origin for origin in listed]


def install(app: Flask, options: Any) -> None:
    """Register after CORS(app): after_request handlers run last-registered first."""
    remembered: dict[tuple[str | None, str | None], list[tuple[str, Any]]] = {}

    @app.after_request
    def hook_cors(response: Response) -> Response:
        current = request._get_current_object()  # type: ignore[attr-defined]  # one lookup
        if current.method != "POST" or current.blueprint != "cds":
            return response
        headers = current.headers
        key = (headers.get("Origin"), headers.get(_PRIVATE_NETWORK))
        pairs = remembered.get(key)
        if pairs is None:
            pairs = list(get_cors_headers(options, headers, "POST").items())
            if len(remembered) < MAX_REMEMBERED:
                remembered[key] = pairs
        for name, value in pairs:
            response.headers.add(name, value)
        return response
