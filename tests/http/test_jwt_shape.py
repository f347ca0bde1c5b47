"""unverified_parts: the header and claims the verifier reads before PyJWT's verified decode
are what PyJWT itself reads from a well-formed token, and a token of any other shape is a
ValueError (the verifier's 401 "malformed JWT"), never another exception."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from cds_service.http.auth import unverified_parts

NOT_UTF8 = bytes([0xFF, 0xFE])


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://ehr.example.org", "jti": "a", "exp": 1, "aud": ["x", "y"]},
        {"iss": "é\u2603", "n": 12345678901234567890, "nested": {"a": [1, None, True]}},
        {},
    ],
)
def test_reads_what_pyjwt_reads(claims: dict[str, object]) -> None:
    """A signed token's header and claims are read as PyJWT's unverified decode reads them."""
    token = jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "key-1"})
    expected = jwt.decode_complete(token, options={"verify_signature": False})
    assert unverified_parts(token) == (expected["header"], expected["payload"])


def test_padded_segments_are_read() -> None:
    """Segments that keep their '=' padding (some issuers send it) are read."""
    header = base64.urlsafe_b64encode(b'{"alg":"ES256"}').decode()  # 20 characters + "="
    claims = base64.urlsafe_b64encode(b'{"iss":"i"}').decode()
    assert header.endswith("=") or claims.endswith("=")
    assert unverified_parts(f"{header}.{claims}.sig") == ({"alg": "ES256"}, {"iss": "i"})


@pytest.mark.parametrize(
    "token",
    [
        "",
        "onlyone",
        "two.parts",
        "a.b.c.d",
        f"{_segment({'alg': 'ES256'})}.!!!!.sig",
        f"{_segment({'alg': 'ES256'})}.{_segment([1, 2])}.sig",  # claims not an object
        f"{_segment('text')}.{_segment({})}.sig",  # header not an object
        f"{_segment({'alg': 'ES256'})}.abcde.sig",  # a length base64 cannot have
        f"{_segment({'alg': 'ES256'})}.abc==.sig",  # padding on a wrong length
        f"{_segment({'alg': 'ES256'})}.{base64.urlsafe_b64encode(b'{x').decode()}.sig",
        f"{_segment({'alg': 'ES256'})}.{base64.urlsafe_b64encode(NOT_UTF8).decode()}.sig",
        f"{_segment({'alg': 'ES256'})}.{_segment({'n': 1})[:-2]}.sig",  # cut JSON
        # nesting deeper than the JSON reader's recursion limit
        f"{_segment({'alg': 'ES256'})}.{base64.urlsafe_b64encode(b'[' * 5000).decode()}.s",
        f"{_segment({'alg': 'ES256'})}.{base64.urlsafe_b64encode(b'9' * 5000).decode()}.s",
    ],
)
def test_other_shapes_are_value_errors(token: str) -> None:
    """Anything but three segments of base64url JSON objects raises ValueError."""
    with pytest.raises(ValueError):
        unverified_parts(token)
