"""CORS on hook and feedback POSTs (decided once per Origin by http/cors.py) gives exactly the
headers flask-cors gives the same request on its own."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SIGN, full_prefetch, make_app, sandbox
from flask import Flask

ORIGINS = [
    None,
    "https://ehr.example.org",
    "https://other.example.net",
    "https://sandbox.cds-hooks.org",
    "http://localhost:5173",
    "null",
]


def _cors_headers(app: Flask, path: str, body: Any, origin: str | None) -> list[tuple[str, str]]:
    headers = {"Origin": origin} if origin else {}
    response = app.test_client().post(path, json=body, headers=headers)
    return sorted(
        (k, v) for k, v in response.headers.items() if k.startswith("Access-Control") or k == "Vary"
    )


def _without_fast_path(app: Flask) -> Flask:
    app.after_request_funcs[None] = [
        f for f in app.after_request_funcs[None] if f.__name__ != "hook_cors"
    ]
    return app


@pytest.mark.parametrize(
    "origins",
    [(), ("*",), ("https://ehr.example.org",), ("https://ehr.example.org", "https://b.example")],
)
@pytest.mark.parametrize("origin", ORIGINS)
def test_hook_and_feedback_cors_headers_match_flask_cors(
    origins: tuple[str, ...], origin: str | None
) -> None:
    """A hook call, a refused hook call and a feedback call carry the same CORS headers
    (twice in a row) as with flask-cors alone, for allowed, other and missing Origins."""
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    calls = [(SIGN, body), (SIGN, {"hook": "order-sign"}), (f"{SIGN}/feedback", {"feedback": []})]
    fast = make_app(cors_origins=origins)
    plain = _without_fast_path(make_app(cors_origins=origins))
    for path, payload in calls:
        expected = _cors_headers(plain, path, payload, origin)
        assert _cors_headers(fast, path, payload, origin) == expected
        assert _cors_headers(fast, path, payload, origin) == expected
    if origin and origin != "null" and (origins == ("*",) or origin in origins):
        assert ("Access-Control-Allow-Origin", origin) in expected  # the browser can read it
    if not origins and origin in ("https://sandbox.cds-hooks.org", "http://localhost:5173"):
        assert ("Access-Control-Allow-Origin", origin) in expected  # the default (auth off)
    if origin == "null":
        assert all(k != "Access-Control-Allow-Origin" for k, _ in expected)  # never null
