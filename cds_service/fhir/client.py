"""Outbound FHIR reads for prefetch keys the client did not fill.

Only servers on the allowlist are ever contacted (the service must not become a tool for
reaching arbitrary hosts), redirects are never followed, the bearer token goes only to the
named server's origin, every call is bounded by connect/read timeouts and the request's
overall deadline, and responses are size-capped. Nothing here logs URLs, tokens or content.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from cds_service.config import Config
from cds_service.fhir.read import JSON
from cds_service.net import is_loopback_host


@dataclass
class FetchOutcome:
    """What one key's fetch produced; `calls` feeds the request log (no URLs, no content)."""

    body: Any = None
    ok: bool = False
    partial: bool = False
    error: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


class FhirAccessPolicy:
    """Decides whether a fhirServer named in a request may be contacted."""

    def __init__(self, config: Config) -> None:
        self._allow_http = config.fhir_allow_http
        self._any = "*" in config.fhir_allowlist
        self._loopback = "loopback" in config.fhir_allowlist
        self._bases = tuple(
            b.rstrip("/").lower() for b in config.fhir_allowlist if b not in {"*", "loopback"}
        )

    def allows(self, base: str | None, issuer_bases: tuple[str, ...] = ()) -> bool:
        """Whether `base` may be called: on the global allowlist, or among the FHIR servers
        the verified issuer may name; https unless loopback (or CDS_FHIR_ALLOW_HTTP)."""
        if not base:
            return False
        try:
            parts = urlsplit(base)
        except ValueError:
            return False
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if scheme not in {"http", "https"} or not host or parts.username or parts.password:
            return False
        loopback = is_loopback_host(host)
        if scheme == "http" and not (loopback or self._allow_http):
            return False
        if self._any or (self._loopback and loopback):
            return True
        normal = base.rstrip("/").lower()
        bases = (*self._bases, *(b.rstrip("/").lower() for b in issuer_bases))
        return any(normal == b or normal.startswith(b + "/") for b in bases)


class FhirClient:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never route patient data through an ambient proxy
            session.max_redirects = 0
            self._local.session = session
        return session

    def get_json(self, url: str, token: str | None, deadline: float,
                 resource_type: str) -> tuple[Any, dict[str, Any]]:
        """One GET; returns (parsed JSON or None, call record). Never raises."""
        started = time.monotonic()
        record: dict[str, Any] = {"resource": resource_type}
        remaining = deadline - started
        if remaining <= 0.01:
            record["outcome"] = "deadline"
            return None, record
        headers = {"Accept": "application/fhir+json, application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = (min(self._config.fhir_connect_timeout, remaining),
                   min(self._config.fhir_read_timeout, remaining))
        body: Any = None
        try:
            with self._session().get(url, headers=headers, timeout=timeout,
                                     allow_redirects=False, stream=True) as response:
                record["status"] = response.status_code
                if response.status_code != 200:
                    record["outcome"] = "http-error"
                else:
                    raw = self._read_capped(response, deadline)
                    if raw is None:
                        record["outcome"] = "too-large-or-slow"
                    else:
                        body = json.loads(raw)
                        record["outcome"] = "ok"
        except requests.Timeout:
            record["outcome"] = "timeout"
        except requests.RequestException:
            record["outcome"] = "connection-error"
        except (ValueError, RecursionError):
            record["outcome"] = "malformed-json"
            body = None
        record["ms"] = round((time.monotonic() - started) * 1000, 1)
        return body, record

    def _read_capped(self, response: requests.Response, deadline: float) -> bytes | None:
        cap = self._config.fhir_max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cap:
            return None
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > cap or time.monotonic() > deadline:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def fetch(self, base: str, relative: str, token: str | None, deadline: float,
              resource_type: str) -> FetchOutcome:
        """Read `relative` under `base`, following Bundle next links on the same origin."""
        outcome = FetchOutcome()
        body, call = self.get_json(f"{base}/{relative.lstrip('/')}", token, deadline,
                                   resource_type)
        outcome.calls.append(call)
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            outcome.error = call.get("outcome", "unreadable")
            if call.get("outcome") == "ok":
                outcome.error = "not-a-resource"
            return outcome
        if body.get("resourceType") == "OperationOutcome":
            outcome.error = "operation-outcome"
            return outcome
        outcome.body = body
        outcome.ok = True
        if body.get("resourceType") == "Bundle":
            self.follow_pages(base, body, token, deadline, resource_type, outcome)
        return outcome

    def follow_pages(self, base: str, bundle: JSON, token: str | None, deadline: float,
                     resource_type: str, outcome: FetchOutcome) -> None:
        """Read further pages up to the page cap into a new Bundle (outcome.body). The given
        Bundle is never changed: after a deadline the request thread keeps using it while this
        thread may still be reading."""
        from cds_service.fhir.read import next_link

        pages = 1
        url = next_link(bundle)
        first = bundle.get("entry")
        entries = list(first) if isinstance(first, list) else []
        outcome.body = {**bundle, "entry": entries}
        while url:
            if pages >= self._config.fhir_max_pages or _origin(url) != _origin(base):
                outcome.partial = True
                return
            page, call = self.get_json(url, token, deadline, resource_type)
            call["page"] = pages + 1
            outcome.calls.append(call)
            if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
                outcome.partial = True
                return
            more = page.get("entry")
            if isinstance(more, list):
                entries.extend(more)
            pages += 1
            url = next_link(page)
