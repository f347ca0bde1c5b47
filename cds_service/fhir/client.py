"""Outbound FHIR reads for prefetch keys the client did not fill.

Only servers on the allowlist are ever contacted (the service must not become a tool for
reaching arbitrary hosts), redirects are never followed, the bearer token goes only to the
named server's origin, every exchange ends by the request's deadline whatever the server does
(fhir/watchdog.py shuts the socket down), and responses are size-capped. Nothing here logs
URLs, tokens or content.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cds_service.config import Config
from cds_service.fhir.read import JSON
from cds_service.fhir.watchdog import WATCHDOG, SocketWatchdog
from cds_service.net import is_loopback_host


class _DeadlinePassed(Exception):
    """The exchange's deadline passed (raised between reads, or after the watchdog's cut)."""


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


class _Watched:
    """The deadline of the exchange running on this thread, and the watchdog tokens of the
    sockets it opened (read by the urllib3 connection classes below)."""

    local = threading.local()

    @classmethod
    def clamp(cls, timeout: Any) -> Any:
        """A connect timeout that ends by the deadline (the second attempt included)."""
        deadline: float | None = getattr(cls.local, "deadline", None)
        if deadline is None or not isinstance(timeout, (int, float)):
            return timeout
        return max(0.001, min(float(timeout), deadline - time.monotonic()))

    @classmethod
    def arm(cls, sock: socket.socket) -> None:
        deadline: float | None = getattr(cls.local, "deadline", None)
        if deadline is not None:
            cls.local.tokens.append(cls.local.watchdog.arm(sock, deadline))


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        self.timeout = _Watched.clamp(self.timeout)
        sock = super()._new_conn()
        _Watched.arm(sock)  # armed before any TLS or HTTP byte is exchanged
        return sock


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        self.timeout = _Watched.clamp(self.timeout)
        sock = super()._new_conn()
        _Watched.arm(sock)
        return sock


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


class FhirClient:
    """GETs with a hard deadline: connect, headers and body together end by the deadline
    whatever the server does. The socket is armed on the watchdog as soon as it exists
    (fhir/watchdog.py shuts it down at the deadline, which wakes a read blocked on a
    trickling server), each read waits at most CDS_FHIR_READ_TIMEOUT, and a refused or reset
    connect is retried once. Connections are not reused (each exchange has its own socket,
    armed for its own deadline)."""

    def __init__(self, config: Config, watchdog: SocketWatchdog = WATCHDOG) -> None:
        # urllib3 logs retries with the URL, which names the patient: never let it through.
        logging.getLogger("urllib3").setLevel(logging.CRITICAL)
        self._config = config
        self._watchdog = watchdog
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never route patient data through an ambient proxy
            session.max_redirects = 0
            adapter = _WatchedAdapter(
                pool_maxsize=1,
                max_retries=Retry(
                    total=1,
                    connect=1,
                    read=0,
                    status=0,
                    other=0,
                    redirect=0,
                    backoff_factor=0,
                    raise_on_status=False,
                    raise_on_redirect=False,
                ),
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def get_json(
        self, url: str, token: str | None, deadline: float, resource_type: str
    ) -> tuple[Any, dict[str, Any]]:
        """One GET; returns (parsed JSON or None, call record). Never raises."""
        started = time.monotonic()
        record: dict[str, Any] = {"resource": resource_type}
        remaining = deadline - started
        if remaining <= 0.01:
            record["outcome"] = "not-started"
            return None, record
        headers = {"Accept": "application/fhir+json, application/json", "Connection": "close"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = (
            min(self._config.fhir_connect_timeout, remaining),
            min(self._config.fhir_read_timeout, remaining),
        )
        body: Any = None
        watched = _Watched.local
        watched.deadline, watched.tokens, watched.watchdog = deadline, [], self._watchdog
        try:
            with self._session().get(
                url, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            ) as response:
                record["status"] = response.status_code
                if response.status_code != 200:
                    record["outcome"] = "http-error"
                else:
                    raw = self._read_capped(response, deadline)
                    if raw is None:
                        record["outcome"] = "too-large"
                    else:
                        body = json.loads(raw)
                        record["outcome"] = "ok"
        except (requests.RequestException, _DeadlinePassed, OSError) as exc:
            if time.monotonic() >= deadline - 0.005:
                record["outcome"] = "deadline"  # the watchdog cut the exchange at the deadline
            elif isinstance(exc, requests.Timeout):
                record["outcome"] = "timeout"
            else:
                record["outcome"] = "connection-error"
        except (ValueError, RecursionError):
            record["outcome"] = "malformed-json"
            body = None
        finally:
            for token_id in watched.tokens:
                self._watchdog.disarm(token_id)
            watched.deadline, watched.tokens = None, []
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
            if size > cap:
                return None
            chunks.append(chunk)
        if time.monotonic() >= deadline:
            raise _DeadlinePassed()  # the body ended because the watchdog cut it
        return b"".join(chunks)

    def fetch(
        self, base: str, relative: str, token: str | None, deadline: float, resource_type: str
    ) -> FetchOutcome:
        """Read `relative` under `base`, following Bundle next links on the same origin."""
        outcome = FetchOutcome()
        body, call = self.get_json(f"{base}/{relative.lstrip('/')}", token, deadline, resource_type)
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

    def follow_pages(
        self,
        base: str,
        bundle: JSON,
        token: str | None,
        deadline: float,
        resource_type: str,
        outcome: FetchOutcome,
    ) -> None:
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
