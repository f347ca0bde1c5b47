"""Browser and DNS-rebinding hardening of discovery, hooks and feedback: the opaque `null`
Origin is never granted CORS; with CDS_AUTH=off the default CORS grant is the CDS Hooks
sandbox and loopback pages, and a foreign Host header is answered 421."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SIGN, full_prefetch, make_app, sandbox
from flask import Flask
from flask.testing import FlaskClient

from cds_service.config import Config, ConfigError, from_env
from cds_service.http.cors import ANY_ORIGIN, allowed_origins

SANDBOX = "https://sandbox.cds-hooks.org"
ALLOW = "Access-Control-Allow-Origin"


def hook_body() -> dict[str, Any]:
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    return body


def calls(client: FlaskClient, headers: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """Discovery, a hook call, a feedback call and a hook preflight with these headers."""
    yield "discovery", client.get("/cds-services", headers=headers)
    yield "hook", client.post(SIGN, json=hook_body(), headers=headers)
    yield "feedback", client.post(f"{SIGN}/feedback", json={"feedback": []}, headers=headers)
    preflight = {
        **headers,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    yield "preflight", client.options(SIGN, headers=preflight)


def close(app: Flask) -> None:
    app.extensions["cds_engine"].close()
    app.extensions["cds_card_log"].close()
    app.extensions["cds_store"].close()


@pytest.fixture
def default_app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(data_dir=str(tmp_path / "data"))
    yield app
    close(app)


@pytest.mark.parametrize("origins", [(), ("*",), (SANDBOX, "https://ehr.example.org")])
def test_the_null_origin_is_never_granted(tmp_path: Path, origins: tuple[str, ...]) -> None:
    """Origin: null (sandboxed frames, local files) gets no CORS grant on discovery, hook,
    feedback or preflight, with the default, "*" or a list of origins."""
    app = make_app(data_dir=str(tmp_path / "data"), cors_origins=origins)
    try:
        for kind, response in calls(app.test_client(), {"Origin": "null"}):
            assert ALLOW not in response.headers, kind
            assert response.status_code < 500, kind
    finally:
        close(app)


def test_null_cannot_be_configured() -> None:
    """CDS_CORS_ORIGINS naming null stops the service at start-up with the variable named."""
    with pytest.raises(ConfigError, match="CDS_CORS_ORIGINS"):
        from_env({"CDS_CORS_ORIGINS": f"{SANDBOX},null"})


@pytest.mark.parametrize(
    "origin", [SANDBOX, "http://localhost:5173", "http://127.0.0.1:8080", "http://[::1]:3000"]
)
def test_auth_off_grants_the_sandbox_and_loopback_pages(default_app: Flask, origin: str) -> None:
    """With CDS_AUTH=off and no CDS_CORS_ORIGINS the CDS Hooks sandbox and pages on this
    machine may call every endpoint from a browser."""
    for kind, response in calls(default_app.test_client(), {"Origin": origin}):
        assert response.headers.get(ALLOW) == origin, kind


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "http://127.0.0.1.nip.io"]
)
def test_auth_off_grants_no_other_page(default_app: Flask, origin: str) -> None:
    """With CDS_AUTH=off and no CDS_CORS_ORIGINS another site's page is not granted CORS:
    with no credential, it must not read cards or 412 diagnostics."""
    for kind, response in calls(default_app.test_client(), {"Origin": origin}):
        assert ALLOW not in response.headers, kind


def test_auth_required_grants_any_real_origin_but_null() -> None:
    """With CDS_AUTH=required the default grant is any origin (the bearer token is the
    credential), still never null."""
    origins = allowed_origins(Config(auth="required", public_base_url="https://cds.example.org"))
    assert origins == [ANY_ORIGIN]
    assert re.match(ANY_ORIGIN, "https://ehr.example.org", re.IGNORECASE)
    assert re.match(ANY_ORIGIN, "http://localhost:8080", re.IGNORECASE)
    assert not re.match(ANY_ORIGIN, "null", re.IGNORECASE)
    assert not re.match(ANY_ORIGIN, "NULL", re.IGNORECASE)


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "10.0.0.5"])
def test_auth_off_refuses_a_foreign_host(default_app: Flask, host: str) -> None:
    """A page rebinding its own name to this machine sends its own Host: discovery, hook,
    feedback and preflight answer 421 with an OperationOutcome, and no card is computed."""
    for kind, response in calls(default_app.test_client(), {"Host": host}):
        assert response.status_code == 421, kind
        outcome = response.get_json()
        assert outcome["resourceType"] == "OperationOutcome", kind
        assert "host name" in outcome["issue"][0]["diagnostics"]
        assert host not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST"]
)
def test_auth_off_answers_loopback_names(default_app: Flask, host: str) -> None:
    """Loopback names, with or without a port, are served as before."""
    for kind, response in calls(default_app.test_client(), {"Host": host}):
        assert response.status_code == 200, kind


def test_configured_hosts_are_answered(tmp_path: Path) -> None:
    """CDS_ANALYTICS_HOSTS and the host of CDS_PUBLIC_BASE_URL are served besides loopback
    names; "*" serves any host."""
    app = make_app(
        data_dir=str(tmp_path / "data"),
        analytics_hosts=("cds.internal",),
        public_base_url="https://cds.example.org",
    )
    client = app.test_client()
    for host in ("cds.internal", "cds.example.org:443", "localhost"):
        assert client.get("/cds-services", headers={"Host": host}).status_code == 200, host
    assert client.get("/cds-services", headers={"Host": "other.example"}).status_code == 421
    close(app)
    anyone = make_app(data_dir=str(tmp_path / "data2"), analytics_hosts=("*",))
    assert (
        anyone.test_client().get("/cds-services", headers={"Host": "x.example"}).status_code == 200
    )
    close(anyone)
