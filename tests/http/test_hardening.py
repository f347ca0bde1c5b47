"""Hostile-client hardening at the HTTP surface: JWT numeric claims and lifetimes, the
replay row's lifetime, /analytics's Host check (DNS rebinding), no CORS on operations and
analytics, out-of-range dates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SIGN, close_app, make_app
from flask import Flask
from jwt_keys import BASE, ISS, JWKS, token
from servers import cards_body

EVIL = {"Origin": "https://evil.example"}


def _secured_app(tmp_path: Path, **overrides: Any) -> Flask:
    """An app that requires tokens from the test issuer."""
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    return make_app(
        auth="required",
        public_base_url=BASE,
        trusted_issuers_file=str(issuers),
        data_dir=str(tmp_path / "data"),
        **overrides,
    )


@pytest.fixture
def secured(tmp_path: Path) -> Any:
    app = _secured_app(tmp_path)
    yield app
    close_app(app)


def _call(app: Flask, bearer: str) -> Any:
    return app.test_client().post(
        SIGN, json=cards_body(), headers={"Authorization": f"Bearer {bearer}"}
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 10**400},
        {"iat": 10**400},
        {"exp": -(10**400)},
        {"exp": 1e308},
        {"exp": "9999999999"},
        {"exp": True},
        {"iat": None},
    ],
)
def test_unusable_numeric_claims_are_401_never_500(secured: Flask, claims: dict[str, Any]) -> None:
    """A validly signed token whose exp or iat no float holds (10**400), or that is not a
    number at all, is refused 401."""
    response = _call(secured, token(**claims))
    assert response.status_code == 401
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_long_lived_token_is_refused(secured: Flask) -> None:
    """A token valid for ten years (or 6 minutes past the 5-minute default plus leeway) is
    401; one valid for 5 minutes is accepted."""
    now = int(time.time())
    assert _call(secured, token(iat=now, exp=now + 10 * 365 * 86400)).status_code == 401
    assert _call(secured, token(iat=now, exp=now + 300 + 60 + 10)).status_code == 401
    assert _call(secured, token(iat=now, exp=now + 300)).status_code == 200


def test_the_lifetime_limit_is_configurable(tmp_path: Path) -> None:
    """CDS_AUTH_MAX_TOKEN_LIFETIME raises the limit for EHRs that issue longer tokens."""
    app = _secured_app(tmp_path, auth_max_token_lifetime=3600.0)
    now = int(time.time())
    assert _call(app, token(iat=now, exp=now + 3000)).status_code == 200
    close_app(app)


def test_replay_rows_live_only_until_the_token_expires(secured: Flask) -> None:
    """The replay row of an accepted token expires with the token (exp + leeway), which the
    lifetime limit keeps within minutes of now."""
    from cds_service.store.schema import replay_cache

    now = int(time.time())
    assert _call(secured, token(iat=now, exp=now + 120)).status_code == 200
    store = secured.extensions["cds_store"]
    [row] = store._rows(replay_cache.select())
    assert row["expires_at"] <= now + 120 + 60 + 1


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "10.0.0.5"])
def test_analytics_refuses_a_foreign_host_header_from_loopback(tmp_path: Path, host: str) -> None:
    """A page rebinding its own name to 127.0.0.1 sends Host: attacker.example: 404, while
    localhost and 127.0.0.1 (with a port) still answer."""
    app = make_app(data_dir=str(tmp_path / "data"))
    client = app.test_client()
    assert client.get("/analytics", headers={"Host": host}).status_code == 404
    for good in ("localhost", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST"):
        assert client.get("/analytics", headers={"Host": good}).status_code == 200, good
    close_app(app)


def test_analytics_hosts_are_configurable(tmp_path: Path) -> None:
    """CDS_ANALYTICS_HOSTS and the host of CDS_PUBLIC_BASE_URL are answered; "*" is any."""
    app = make_app(
        data_dir=str(tmp_path / "data"),
        analytics_hosts=("cds.internal",),
        public_base_url="https://cds.example.org",
    )
    client = app.test_client()
    assert client.get("/analytics", headers={"Host": "cds.internal"}).status_code == 200
    assert client.get("/analytics", headers={"Host": "cds.example.org"}).status_code == 200
    assert client.get("/analytics", headers={"Host": "localhost"}).status_code == 404
    close_app(app)
    anyone = make_app(data_dir=str(tmp_path / "data2"), analytics_hosts=("*",))
    assert anyone.test_client().get("/analytics", headers={"Host": "x.example"}).status_code == 200
    close_app(anyone)


def test_ops_endpoints_grant_no_cors(tmp_path: Path) -> None:
    """/metrics, /readyz and /healthz do not reflect a foreign Origin; with
    CDS_CORS_ORIGINS=* the hooks still do."""
    app = make_app(data_dir=str(tmp_path / "data"), cors_origins=("*",))
    client = app.test_client()
    for path in ("/metrics", "/readyz", "/healthz"):
        response = client.get(path, headers=EVIL)
        assert response.status_code == 200, path
        assert "Access-Control-Allow-Origin" not in response.headers, path
    assert "Access-Control-Allow-Origin" in client.get("/cds-services", headers=EVIL).headers
    close_app(app)


@pytest.mark.parametrize("query", ["until=9999-12-31", "since=0001-01-01", "until=0001-01-02"])
def test_out_of_range_analytics_dates_are_400(tmp_path: Path, query: str) -> None:
    """/analytics with a date at the ends of the calendar is a 400 page, never a 500."""
    app = make_app(data_dir=str(tmp_path / "data"))
    response = app.test_client().get(f"/analytics?{query}")
    assert response.status_code == 400
    assert "outside the dates a report covers" in response.get_data(as_text=True)
    close_app(app)
