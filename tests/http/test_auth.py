"""Trusting CDS clients: JWT verification with keys generated for this run, and the FHIR
access policy that keeps the service from being turned against its own network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from conftest import (
    FEEDBACK,
    FHIR,
    SIGN,
    CheckedClient,
    card_ids_for,
    feedback_item,
    full_prefetch,
    make_app,
    sandbox,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt_keys import (
    BASE,
    DISCOVERY,
    EC_KEY,
    ISS,
    JKU,
    JWKS,
    OTHER_EC_KEY,
    OTHER_JKU,
    jwk,
    token,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(path: str = SIGN) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    now = int(time.time())
    body = _b64(
        json.dumps(
            {"iss": ISS, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": "x"}
        ).encode()
    )
    return f"{header}.{body}."


def odd_alg_token(alg: Any, path: str = SIGN) -> str:
    """A token whose header `alg` is not a string (a list or an object)."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "ec-1"}).encode())
    now = int(time.time())
    body = _b64(
        json.dumps(
            {"iss": ISS, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": "x"}
        ).encode()
    )
    return f"{header}.{body}.{_b64(b'sig')}"


def hs256_with_public_key(path: str = SIGN) -> str:
    """The classic key-confusion attack: HMAC 'signed' with the issuer's public key."""
    pem = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode())
    now = int(time.time())
    body = _b64(
        json.dumps(
            {"iss": ISS, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        ).encode()
    )
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


@pytest.fixture
def issuers_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps(
            [
                {
                    "iss": ISS,
                    "jwks": JWKS,
                    "jku_allowlist": [JKU],
                    "fhir_servers": ["https://fhir.ehr.example.org/r4"],
                }
            ]
        )
    )
    return path


@pytest.fixture
def auth_client(issuers_file: Path) -> CheckedClient:
    app = make_app(auth="required", public_base_url=BASE, trusted_issuers_file=str(issuers_file))
    return CheckedClient(app.test_client())


def _body() -> dict[str, Any]:
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = full_prefetch()
    body.pop("fhirServer")
    return body


def call(client: CheckedClient, path: str, bearer: str | None) -> Any:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    if path == DISCOVERY:
        return client.get(path, headers=headers)
    if path == FEEDBACK:
        ids = card_ids_for(client.client.application)
        return client.post(path, {"feedback": [feedback_item(ids, "accepted")]}, headers=headers)
    return client.post(path, _body(), headers=headers)


@pytest.mark.parametrize("path", [DISCOVERY, SIGN, FEEDBACK])
@pytest.mark.parametrize("alg,kid", [("ES384", "ec-1"), ("RS384", "rsa-1")])
def test_valid_tokens_are_accepted_on_every_endpoint(
    auth_client: CheckedClient, path: str, alg: str, kid: str
) -> None:
    """ES384 and RS384 tokens from a trusted issuer, aud = the endpoint's public URL: 200."""
    response = call(auth_client, path, token(alg, kid, path=path))
    assert response.status_code == 200


def test_token_without_kid_needs_a_single_key(tmp_path: Path) -> None:
    """Without a kid the issuer's only key is used; with several keys the token is refused."""
    single = tmp_path / "single.json"
    single.write_text(json.dumps([{"iss": ISS, "jwks": {"keys": [JWKS["keys"][0]]}}]))
    client = CheckedClient(
        make_app(
            auth="required", public_base_url=BASE, trusted_issuers_file=str(single)
        ).test_client()
    )
    now = int(time.time())
    no_kid = jwt.encode(
        {"iss": ISS, "aud": BASE + SIGN, "iat": now, "exp": now + 60, "jti": "a"},
        EC_KEY,
        algorithm="ES384",
    )
    assert call(client, SIGN, no_kid).status_code == 200
    several = CheckedClient(
        make_app(
            auth="required", public_base_url=BASE, trusted_issuers_file=_issuers(tmp_path)
        ).test_client()
    )
    no_kid_again = jwt.encode(
        {"iss": ISS, "aud": BASE + SIGN, "iat": now, "exp": now + 60, "jti": "b"},
        EC_KEY,
        algorithm="ES384",
    )
    assert call(several, SIGN, no_kid_again).status_code == 401


def _issuers(tmp_path: Path) -> str:
    path = tmp_path / "several.json"
    path.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    return str(path)


def _expired() -> str:
    now = int(time.time())
    return token(iat=now - 900, exp=now - 600)


def _not_yet_valid() -> str:
    now = int(time.time())
    return token(nbf=now + 600, iat=now, exp=now + 900)


ATTACKS: dict[str, Callable[[], str]] = {
    "alg none": lambda: unsigned_token(),
    "HS256 signed with the public key": lambda: hs256_with_public_key(),
    "bad signature": lambda: token(key=OTHER_EC_KEY),
    "expired": _expired,
    "not yet valid": _not_yet_valid,
    "issued in the future": lambda: token(iat=int(time.time()) + 900, exp=int(time.time()) + 1200),
    "wrong aud": lambda: token(aud="https://other.example.org/cds-services/opioid-lbp-order-sign"),
    "aud of another endpoint": lambda: token(aud=BASE + DISCOVERY),
    "unknown iss": lambda: token(iss="https://unknown.example.org"),
    "unknown kid": lambda: token(kid="nope"),
    "no jti": lambda: token(jti=None),
    "no exp": lambda: token(exp=None),
    "garbage": lambda: "not.a.jwt",
    "RS384 header with the EC key id": lambda: token(alg="RS384", kid="ec-1"),
    "alg is a list": lambda: odd_alg_token(["ES256"]),
    "alg is an object": lambda: odd_alg_token({"ES256": True}),
    "jti with a NUL": lambda: token(jti="a\x00b"),
    "jti is a number": lambda: token(jti=12345),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_tokens_are_401(auth_client: CheckedClient, attack: str) -> None:
    """Every forged, stale, misdirected or malformed token is refused with 401 and no detail."""
    with responses.RequestsMock() as rsps:  # nothing may be fetched for any of these
        response = call(auth_client, SIGN, ATTACKS[attack]())
        assert len(rsps.calls) == 0
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["issue"][0]["diagnostics"] == "Unauthorized"


def test_missing_authorization_is_401_on_every_endpoint(auth_client: CheckedClient) -> None:
    """No Authorization header: 401 on discovery, hook and feedback."""
    for path in (DISCOVERY, SIGN, FEEDBACK):
        assert call(auth_client, path, None).status_code == 401


def test_cors_preflight_needs_no_token(auth_client: CheckedClient) -> None:
    """Browsers preflight without credentials; the preflight is answered."""
    response = auth_client.client.options(
        SIGN,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200


def test_replayed_jti_is_401(auth_client: CheckedClient) -> None:
    """The same token twice: the second is a replay."""
    once = token()
    assert call(auth_client, SIGN, once).status_code == 200
    assert call(auth_client, SIGN, once).status_code == 401


def test_jku_not_on_the_allowlist_is_never_fetched(auth_client: CheckedClient) -> None:
    """A token pointing its jku at another host is refused without contacting that host."""
    with responses.RequestsMock() as rsps:
        response = call(auth_client, SIGN, token(kid="attacker", _jku=OTHER_JKU))
        assert len(rsps.calls) == 0
    assert response.status_code == 401


def test_allowlisted_jku_is_fetched_and_cached(auth_client: CheckedClient) -> None:
    """A jku on the issuer's allowlist is fetched once and cached for later tokens."""
    rotated = ec.generate_private_key(ec.SECP384R1())
    with responses.RequestsMock() as rsps:
        rsps.get(JKU, json={"keys": [jwk(rotated.public_key(), "rotated")]})
        for _ in range(3):
            assert (
                call(auth_client, SIGN, token(kid="rotated", key=rotated, _jku=JKU)).status_code
                == 200
            )
        assert len(rsps.calls) == 1


def test_jwks_url_refreshes_on_unknown_kid_with_a_cooldown(tmp_path: Path) -> None:
    """An unknown kid triggers one refresh; a second unknown kid within the cool-down does not."""
    path = tmp_path / "issuers.json"
    url = "https://ehr.example.org/jwks"
    path.write_text(json.dumps([{"iss": ISS, "jwks_url": url}]))
    client = CheckedClient(
        make_app(
            auth="required", public_base_url=BASE, trusted_issuers_file=str(path)
        ).test_client()
    )
    with responses.RequestsMock() as rsps:
        rsps.get(url, json=JWKS)
        assert call(client, SIGN, token()).status_code == 200
        assert call(client, SIGN, token(kid="new-key")).status_code == 401
        assert call(client, SIGN, token(kid="newer-key")).status_code == 401
        assert len(rsps.calls) == 1  # the first fetch; refreshes wait for the cool-down


def test_tenant_must_match_when_the_issuer_lists_tenants(tmp_path: Path) -> None:
    """An issuer with tenants accepts only tokens naming one of them."""
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps([{"iss": ISS, "jwks": JWKS, "tenants": ["hospital-a"]}]))
    client = CheckedClient(
        make_app(
            auth="required", public_base_url=BASE, trusted_issuers_file=str(path)
        ).test_client()
    )
    assert call(client, SIGN, token(tenant="hospital-a")).status_code == 200
    assert call(client, SIGN, token(tenant="hospital-b")).status_code == 401
    assert call(client, SIGN, token()).status_code == 401


def test_nbf_five_minutes_early_is_accepted(auth_client: CheckedClient) -> None:
    """Epic sets nbf five minutes before iat: that is fine."""
    now = int(time.time())
    assert call(auth_client, SIGN, token(nbf=now - 300)).status_code == 200


def test_issuer_fhir_servers_extend_the_allowlist(auth_client: CheckedClient) -> None:
    """A FHIR server listed for the verified issuer may be called; others never are."""
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = {k: v for k, v in full_prefetch().items() if k != "meds"}
    body["fhirServer"] = "https://fhir.ehr.example.org/r4"
    with responses.RequestsMock() as rsps:
        rsps.get(
            re.compile(r"https://fhir\.ehr\.example\.org/r4/MedicationRequest\?patient=pt-1.*"),
            json={"resourceType": "Bundle", "entry": []},
        )
        response = auth_client.post(SIGN, body, headers={"Authorization": f"Bearer {token()}"})
        assert len(rsps.calls) == 1
    assert response.status_code == 200
    body["fhirServer"] = "https://fhir.elsewhere.example.org/r4"
    with responses.RequestsMock() as rsps:
        response = auth_client.post(SIGN, body, headers={"Authorization": f"Bearer {token()}"})
        assert len(rsps.calls) == 0
    assert response.status_code == 412


def test_no_token_or_jwt_in_logs(
    auth_client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the EHR's JWT nor the FHIR access token appears in any log line."""
    bearer = token()
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = {k: v for k, v in full_prefetch().items() if k != "meds"}
    body["fhirAuthorization"] = {
        "access_token": "fhir-token-secret-42",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "s",
    }
    with responses.RequestsMock() as rsps, caplog.at_level(logging.DEBUG):
        rsps.get(re.compile(rf"{re.escape(FHIR)}/MedicationRequest\?patient=pt-1.*"), status=500)
        auth_client.post(SIGN, body, headers={"Authorization": f"Bearer {bearer}"})
        call(auth_client, SIGN, bearer)  # replay: logged as unauthorized
        call(auth_client, SIGN, hs256_with_public_key())
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (bearer, bearer.split(".")[1], bearer.split(".")[2], "fhir-token-secret-42"):
        assert secret not in text
    assert any(r.msg == "unauthorized" for r in caplog.records)


def test_auth_required_needs_its_configuration() -> None:
    """CDS_AUTH=required without a public URL or issuers file does not start."""
    from cds_service.config import ConfigError, from_env

    with pytest.raises(ConfigError):
        from_env({"CDS_AUTH": "required"})
    with pytest.raises(ConfigError):
        from_env({"CDS_AUTH": "maybe"})


def test_symmetric_keys_in_a_jwks_are_ignored(tmp_path: Path) -> None:
    """An 'oct' key in the issuer's JWKS is never used to verify anything."""
    from cds_service.http.auth import AuthConfigError, load_trusted_issuers

    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps(
            [
                {
                    "iss": ISS,
                    "jwks": {
                        "keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}, JWKS["keys"][0]]
                    },
                }
            ]
        )
    )
    assert set(load_trusted_issuers(str(path))[ISS].keys) == {"ec-1"}
    path.write_text(
        json.dumps([{"iss": ISS, "jwks": {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}}])
    )
    with pytest.raises(AuthConfigError):
        load_trusted_issuers(str(path))  # no usable (asymmetric) key at all
    path.write_text(json.dumps([{"iss": ISS, "jwks_url": "http://ehr.example.org/jwks"}]))
    with pytest.raises(AuthConfigError):
        load_trusted_issuers(str(path))  # key URLs must be https


def test_serve_refuses_a_public_address_without_auth() -> None:
    """`serve --host 0.0.0.0` with auth off refuses to start unless --insecure is given."""
    from cds_service.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2


def test_random_authorization_headers_are_401_never_5xx(issuers_file: Path) -> None:
    """Arbitrary Authorization values (and JWT-shaped junk) are refused cleanly."""
    from hypothesis import given
    from hypothesis import strategies as st

    client = make_app(
        auth="required",
        public_base_url=BASE,
        trusted_issuers_file=str(issuers_file),
        log_level="CRITICAL",
    ).test_client()
    segment = st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40
    )
    jwt_like = st.builds(lambda a, b, c: f"{a}.{b}.{c}", segment, segment, segment)
    header_json = st.builds(
        lambda alg, kid, jku: (
            _b64(json.dumps({"alg": alg, "kid": kid, "jku": jku}).encode())
            + "."
            + _b64(b'{"iss": "' + ISS.encode() + b'"}')
            + ".sig"
        ),
        st.sampled_from(["ES384", "RS256", "none", "HS256", "", "ES999"]),
        st.one_of(st.none(), st.text(max_size=5)),
        st.one_of(st.none(), st.just(OTHER_JKU), st.integers()),
    )
    values = st.one_of(
        st.text(max_size=60),
        jwt_like.map(lambda t: f"Bearer {t}"),
        header_json.map(lambda t: f"Bearer {t}"),
    )

    @given(values)  # examples: the Hypothesis profile (tests/conftest.py)
    def run(value: str) -> None:
        with responses.RequestsMock() as rsps:
            try:
                response = client.get(DISCOVERY, headers={"Authorization": value})
            except ValueError:
                return  # the test client refuses header values with newlines itself
            assert len(rsps.calls) == 0
        assert response.status_code == 401

    run()


@pytest.mark.parametrize(
    "url,allowed",
    [
        ("https://ehr.example.org/jwks", True),
        ("http://127.0.0.1:8081/jwks", True),
        ("http://localhost/jwks", True),
        ("http://[::1]:9000/jwks", True),
        ("http://127.evil.example/jwks", False),  # passed the old substring test
        ("http://evil.example/?next=://localhost", False),  # so did this
        ("http://ehr.example.org/jwks", False),
        ("ftp://127.0.0.1/jwks", False),
        ("https:///nohost", False),
    ],
)
def test_key_urls_must_be_https_or_loopback(tmp_path: Path, url: str, allowed: bool) -> None:
    """A JWKS URL is accepted when https, or http to a loopback host judged on the parsed
    host (never a substring of the URL)."""
    from cds_service.http.auth import AuthConfigError, load_trusted_issuers

    path = tmp_path / "issuers.json"
    path.write_text(json.dumps([{"iss": ISS, "jwks_url": url}]))
    if allowed:
        assert load_trusted_issuers(str(path))[ISS].jwks_url == url
    else:
        with pytest.raises(AuthConfigError):
            load_trusted_issuers(str(path))
