"""Authenticating CDS clients as CDS Hooks 2.0 "Trusting CDS Clients" says.

Every discovery, hook and feedback call carries `Authorization: Bearer <JWT>` signed by the
EHR. The service accepts it only when:
- the issuer (`iss`) is on the trusted-issuer list (CDS_TRUSTED_ISSUERS_FILE);
- the signature verifies with that issuer's keys: an inline JWK Set, a JWKS file, or a JWKS
  URL (fetched with a timeout, cached, refreshed on an unknown `kid` at most once per
  cool-down); a token's `jku` is used only if listed in the issuer's `jku_allowlist`, and a
  `jku` that is not listed is never fetched;
- the algorithm is asymmetric (ES256/384/512, RS256/384/512, PS256/384/512), never `none` or
  HS* (an HS256 token "signed" with the public key is refused);
- `aud` equals the public URL of the endpoint called, built from CDS_PUBLIC_BASE_URL, never
  from the Host header;
- `exp`, `nbf` and `iat` hold with a leeway (default 60 s; Epic sets nbf 5 minutes early);
- `jti` has not been seen before (replay cache for the token's lifetime: the shared store, so
  a replay is refused by every worker and replica; when it cannot be consulted the call is
  answered 503, never accepted unchecked);
- `tenant`, when the issuer lists tenants, is one of them.
A failure answers 401 with WWW-Authenticate and a bare "unauthorized"; the reason goes to the
log, never the token.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
from jwt import PyJWK

from cds_service.net import is_https_or_loopback

log = logging.getLogger("cds_service.http.auth")

ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
_KEY_TYPES = {"ES": "EC", "RS": "RSA", "PS": "RSA"}


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the claims of a compact JWS, read without checking anything but their
    shape (base64url JSON objects, three segments): what the verifier needs to pick the
    issuer and the key before PyJWT's verified decode checks the token. One pass of C code
    per segment (PyJWT's own unverified decode tests the alphabet a character at a time, and
    the verified decode does it again). ValueError when the token is not of that shape."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not three segments")
    read: list[dict[str, Any]] = []
    for segment in parts[:2]:
        bare = segment.rstrip("=")
        if (
            not _SEGMENT.fullmatch(segment)
            or len(bare) % 4 == 1
            or (bare != segment and len(segment) % 4)
        ):
            raise ValueError("not base64url")
        try:
            value = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
        except (ValueError, RecursionError):  # binascii, Unicode and JSON errors; too deep
            raise ValueError("not base64url JSON") from None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        read.append(value)
    return read[0], read[1]


class AuthError(Exception):
    """Why a token was refused (logged; never shown to the caller)."""


class AuthConfigError(ValueError):
    """The trusted-issuer configuration cannot be used (raised at start-up)."""


@dataclass(frozen=True)
class Principal:
    """Who called: the verified issuer and what it may make the service do."""

    issuer: str
    tenant: str | None
    fhir_servers: tuple[str, ...]


class ReplayCache(Protocol):
    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> bool:
        """True if (issuer, jti) is new (and now remembered until `expires_at`); False on
        replay. Raises ReplayCacheUnavailable when it cannot tell."""


class InMemoryReplayCache:
    """Per-process replay cache (tests, single-process tools). The service uses the shared
    store (cds_service.store), whose answer holds across workers and replicas."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> bool:
        key = f"{issuer}|{jti}"
        now = time.time()
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                if len(self._seen) >= self._max:
                    return False  # refuse rather than forget: a flood must not enable replays
            previous = self._seen.get(key)
            if previous is not None and previous > now:
                return False
            self._seen[key] = expires_at
            return True


@dataclass
class _RemoteJwks:
    url: str
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = 0.0


class JwksFetcher:
    """Fetches JWK Sets from allowlisted URLs with a timeout; caches them; refreshes on an
    unknown kid no more often than the cool-down."""

    def __init__(
        self,
        timeout: float = 2.0,
        ttl: float = 3600.0,
        cooldown: float = 60.0,
        max_bytes: int = 256 * 1024,
    ) -> None:
        self._timeout = timeout
        self._ttl = ttl
        self._cooldown = cooldown
        self._max_bytes = max_bytes
        self._cache: dict[str, _RemoteJwks] = {}
        self._lock = threading.Lock()

    def _fetch(self, url: str) -> dict[str, Any]:
        session = requests.Session()
        session.trust_env = False
        with session.get(
            url,
            timeout=self._timeout,
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status_code != 200:
                raise AuthError(f"JWKS fetch answered {response.status_code}")
            raw = response.raw.read(self._max_bytes + 1, decode_content=True)
            if len(raw) > self._max_bytes:
                raise AuthError("JWKS document too large")
        return _keys_by_kid(json.loads(raw))

    def key(self, url: str, kid: str | None) -> Any:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.setdefault(url, _RemoteJwks(url))
            stale = now - entry.fetched_at > self._ttl
            missing = _pick(entry.keys, kid) is None
            may_refresh = now - entry.fetched_at > self._cooldown
            if stale or (missing and may_refresh):
                try:
                    entry.keys = self._fetch(url)
                except (requests.RequestException, ValueError, AuthError) as exc:
                    log.warning("jwks-fetch-failed", extra={"reason": type(exc).__name__})
                entry.fetched_at = now
            return _pick(entry.keys, kid)


_MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z


def _epoch(value: Any) -> float | None:
    """A NumericDate claim as seconds, or None when it is not a finite time (a bool, a
    string, NaN, or a number like 10**400 that no float holds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    if not 0 <= seconds <= _MAX_EPOCH:  # NaN fails both comparisons
        return None
    return seconds


def _keys_by_kid(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise AuthConfigError("a JWK Set needs a 'keys' array")
    keys: dict[str, Any] = {}
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or jwk.get("kty") not in {"EC", "RSA"}:
            continue  # symmetric ("oct") or unknown keys are never trusted
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid") or f"#{index}"
        keys[str(kid)] = jwk
    return keys


def _pick(keys: dict[str, Any], kid: str | None) -> Any:
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    keys: dict[str, Any]  # kid -> JWK (inline or from file)
    jwks_url: str | None
    jku_allowlist: tuple[str, ...]
    tenants: tuple[str, ...]
    fhir_servers: tuple[str, ...]


def load_trusted_issuers(path: str) -> dict[str, TrustedIssuer]:
    try:
        entries = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise AuthConfigError(f"CDS_TRUSTED_ISSUERS_FILE: cannot read {path}: {exc}") from None
    if not isinstance(entries, list):
        raise AuthConfigError("CDS_TRUSTED_ISSUERS_FILE must hold a JSON array of issuers")
    issuers: dict[str, TrustedIssuer] = {}
    base = Path(path).parent
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str):
            raise AuthConfigError("each trusted issuer needs an 'iss'")
        keys: dict[str, Any] = {}
        if "jwks" in entry:
            keys = _keys_by_kid(entry["jwks"])
        elif "jwks_file" in entry:
            file = Path(entry["jwks_file"])
            file = file if file.is_absolute() else base / file
            try:
                keys = _keys_by_kid(json.loads(file.read_text("utf-8")))
            except (OSError, ValueError) as exc:
                raise AuthConfigError(f"{entry['iss']}: cannot read jwks_file: {exc}") from None
        jwks_url = entry.get("jwks_url")
        jku = tuple(entry.get("jku_allowlist", ()))
        if not keys and not jwks_url and not jku:
            raise AuthConfigError(
                f"{entry['iss']}: give jwks, jwks_file, jwks_url or jku_allowlist"
            )
        for url in (*([jwks_url] if jwks_url else []), *jku):
            if not is_https_or_loopback(str(url)):
                raise AuthConfigError(f"{entry['iss']}: key URLs must be https: {url}")
        issuers[entry["iss"]] = TrustedIssuer(
            entry["iss"],
            keys,
            jwks_url,
            jku,
            tuple(entry.get("tenants", ())),
            tuple(s.rstrip("/") for s in entry.get("fhir_servers", ())),
        )
    return issuers


class Authenticator:
    def __init__(
        self,
        issuers: dict[str, TrustedIssuer],
        public_base_url: str,
        leeway: float = 60.0,
        replay_cache: ReplayCache | None = None,
        fetcher: JwksFetcher | None = None,
        max_lifetime: float = 300.0,
    ) -> None:
        self._max_lifetime = max_lifetime
        self._issuers = issuers
        self._base = public_base_url.rstrip("/")
        self._leeway = leeway
        self._replay = replay_cache or InMemoryReplayCache()
        self._fetcher = fetcher or JwksFetcher()
        # (id of a JWK dict, alg) -> (that dict, its parsed key): parsing a key costs more
        # than checking a signature with it; the dict is held, so its id is never reused
        self._parsed: dict[tuple[int, str], tuple[Any, PyJWK]] = {}

    def _parsed_key(self, jwk: Any, alg: str) -> PyJWK:
        held = self._parsed.get((id(jwk), alg))
        if held is not None and held[0] is jwk:
            return held[1]
        key = PyJWK(jwk, algorithm=alg)
        if len(self._parsed) >= 256:  # keys refreshed many times over: start again
            self._parsed = {}
        self._parsed[(id(jwk), alg)] = (jwk, key)
        return key

    def audience_for(self, path: str) -> str:
        return f"{self._base}{path}"

    def verify(self, authorization: str | None, path: str) -> Principal:
        if not authorization:
            raise AuthError("no Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 16_384:
            raise AuthError("not a Bearer token")
        try:
            # header and claims read to find the issuer and key (the verified decode below,
            # PyJWT's, is the check)
            header, unverified = unverified_parts(token)
        except ValueError:
            raise AuthError("malformed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            raise AuthError("algorithm not allowed")
        issuer = self._issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise AuthError("issuer not trusted")
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        jwk = self._key_for(issuer, header, kid)
        if jwk is None:
            raise AuthError("no key for this kid")
        if jwk.get("kty") != _KEY_TYPES[alg[:2]]:
            raise AuthError("key type does not match the algorithm")
        if jwk.get("alg") not in (None, alg):
            raise AuthError("key is for another algorithm")
        try:
            key = self._parsed_key(jwk, alg)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience_for(path),
                issuer=issuer.iss,
                leeway=self._leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from None
        exp = _epoch(claims.get("exp"))
        iat = _epoch(claims.get("iat"))
        if exp is None or iat is None:
            raise AuthError("exp or iat is not a time")
        if iat > time.time() + self._leeway:
            raise AuthError("token issued in the future")
        if exp - iat > self._max_lifetime + self._leeway:
            raise AuthError("token lifetime too long")
        tenant = claims.get("tenant")
        if issuer.tenants and (not isinstance(tenant, str) or tenant not in issuer.tenants):
            raise AuthError("tenant not allowed")
        jti = claims["jti"]
        # RFC 7519: a string; control characters are refused (PostgreSQL cannot store a NUL)
        if not isinstance(jti, str) or not jti or not jti.isprintable():
            raise AuthError("jti is not a printable string")
        if not self._replay.check_and_store(issuer.iss, jti, exp + self._leeway):
            raise AuthError("replayed jti")
        return Principal(
            issuer.iss, tenant if isinstance(tenant, str) else None, issuer.fhir_servers
        )

    def _key_for(self, issuer: TrustedIssuer, header: dict[str, Any], kid: str | None) -> Any:
        jku = header.get("jku")
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku_allowlist:
                raise AuthError("jku not on the issuer's allowlist")  # never fetched
            return self._fetcher.key(jku, kid)
        local = _pick(issuer.keys, kid)
        if local is not None:
            return local
        if issuer.jwks_url:
            return self._fetcher.key(issuer.jwks_url, kid)
        return None
