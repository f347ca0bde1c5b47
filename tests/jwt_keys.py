"""Signing keys and tokens for the tests that authenticate (keys generated per run)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from conftest import SIGN
from cryptography.hazmat.primitives.asymmetric import ec, rsa

BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"
DISCOVERY = "/cds-services"
JKU = "https://ehr.example.org/.well-known/jwks.json"
OTHER_JKU = "https://evil.example.com/jwks.json"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP384R1())


def jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.ECAlgorithm
        if isinstance(key, ec.EllipticCurvePublicKey)
        else jwt.algorithms.RSAAlgorithm
    )
    data: dict[str, Any] = json.loads(algorithm.to_jwk(key))
    data.update(kid=kid, use="sig")
    return data


JWKS = {"keys": [jwk(EC_KEY.public_key(), "ec-1"), jwk(RSA_KEY.public_key(), "rsa-1")]}


def token(
    alg: str = "ES384", kid: str = "ec-1", key: Any = None, path: str = SIGN, **claims: Any
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISS,
        "aud": BASE + path,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    if key is None:
        key = EC_KEY if alg.startswith("ES") else RSA_KEY
    headers: dict[str, Any] = {"kid": kid, "typ": "JWT"}
    jku = payload.pop("_jku", None)
    if jku:
        headers["jku"] = jku
    return jwt.encode(payload, key, algorithm=alg, headers=headers)
