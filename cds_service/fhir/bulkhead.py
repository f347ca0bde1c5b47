"""Isolation between FHIR servers: bulkheads, circuit breakers and admission of fallback calls.

Per FHIR base URL (per worker process) there is a ServerGuard with
- its own small thread pool for exchanges (CDS_FHIR_SERVER_MAX_EXCHANGES threads), so a slow
  or hostile server only ever occupies its own threads;
- a bounded number of hook calls that may wait on that server at once
  (CDS_FHIR_SERVER_MAX_CALLS);
- a circuit breaker: after CDS_FHIR_BREAKER_FAILURES failed exchanges in a row the server is
  not called for CDS_FHIR_BREAKER_COOLDOWN seconds (calls that need it get a 412 at once, with
  the reason); then one call is let through as a probe, and its outcome closes or reopens it.
Across servers, at most CDS_FHIR_MAX_FALLBACK_CALLS hook calls per process wait on FHIR at
once (default half the worker's threads), so request threads stay free for calls whose data
was prefetched. One EHR normally has one FHIR server, so by default one server may use every
fallback slot (CDS_FHIR_SERVER_MAX_CALLS=0).

A call that finds every slot of its server taken joins a short queue (as many places as the
server has slots, CDS_FHIR_SERVER_MAX_WAITING) and waits at most CDS_ADMISSION_WAIT seconds,
and never past what its own deadline leaves for the fetch. It is answered 503 with
Retry-After at once when the queue is full, or when the server's recent calls say the wait
would outlast that budget (a slow server: the average duration of its recent calls times the
rounds ahead of this one), so a slow or failing server is still refused quickly while a
healthy one queues its bursts instead of refusing them.

Calls whose data was prefetched never come here: they use no FHIR thread and no slot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from cds_service.config import Config
from cds_service.errors import CdsError

T = TypeVar("T")

_MIN_FETCH = 1.0  # seconds of its deadline a call keeps for the fetch itself
_EWMA = 0.2  # weight of the latest call in a server's average call duration

# Exchange outcomes (FhirClient call records) that say the server is not working.
_FAILURES = frozenset({"timeout", "deadline", "connection-error", "malformed-json"})


def is_server_failure(call: dict[str, Any]) -> bool | None:
    """True / False for an exchange that says whether the server works; None when the exchange
    never reached the server (it was skipped because the request's deadline had passed)."""
    outcome = call.get("outcome")
    if outcome == "not-started":
        return None
    status = call.get("status")
    if isinstance(status, int) and (status >= 500 or status == 429):
        return True
    return outcome in _FAILURES


class Saturated(CdsError):
    """The service is at its limit for calls that wait on FHIR servers: 503 + Retry-After."""

    def __init__(self, retry_after: int, what: str) -> None:
        super().__init__(
            503,
            f"The service is busy with {what}; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class BreakerOpen(Exception):
    """The FHIR server is failing and is not called until its cool-down has passed."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, probe_timeout: float) -> None:
        self._threshold = failures  # 0 disables the breaker
        self._cooldown = cooldown
        self._probe_timeout = probe_timeout
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probe_since is not None else "open"

    def allow(self) -> None:
        """Return if a call may use the server; raise BreakerOpen with the reason if not."""
        if self._threshold <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if self._opened_at is None:
                return
            if self._probe_since is not None and now - self._probe_since < self._probe_timeout:
                raise BreakerOpen(
                    f"the FHIR server failed {self._failures} exchanges in a "
                    "row and is being probed again",
                    1,
                )
            wait = self._opened_at + self._cooldown - now
            if wait > 0:
                seconds = max(1, round(wait))
                raise BreakerOpen(
                    f"the FHIR server failed {self._failures} exchanges in a row; "
                    f"it is tried again in {seconds} s",
                    seconds,
                )
            self._probe_since = now  # this call is the probe

    def record(self, failed: bool) -> None:
        if self._threshold <= 0:
            return
        with self._lock:
            if not failed:
                self._failures = 0
                self._opened_at = None
                self._probe_since = None
                return
            self._failures += 1
            if self._probe_since is not None or self._failures >= self._threshold:
                self._opened_at = time.monotonic()
                self._probe_since = None


class ServerGuard:
    """Everything kept per FHIR base URL."""

    def __init__(self, config: Config) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, config.fhir_server_max_exchanges), thread_name_prefix="fhir"
        )
        fallback = config.fhir_max_fallback_calls or 4
        self.slots = max(1, config.fhir_server_max_calls or fallback)
        self.max_waiting = max(0, config.fhir_server_max_waiting or self.slots)
        self.calls = threading.BoundedSemaphore(self.slots)
        self.average_call = 0.0  # seconds an admitted call held its slot (moving average)
        self.breaker = CircuitBreaker(
            config.fhir_breaker_failures, config.fhir_breaker_cooldown, config.fhir_deadline + 1.0
        )
        self._lock = threading.Lock()
        self.active_exchanges = 0
        self.admitted_calls = 0
        self.waiting = 0
        self.last_used = time.monotonic()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        def run() -> T:
            with self._lock:
                self.active_exchanges += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.active_exchanges -= 1

        return self.executor.submit(run)

    def record(self, calls: list[dict[str, Any]]) -> None:
        """Feed the breaker with what a fetch's exchanges say about the server."""
        for call in calls:
            failed = is_server_failure(call)
            if failed is not None:
                self.breaker.record(failed)

    @property
    def idle(self) -> bool:
        with self._lock:
            return self.active_exchanges == 0 and self.admitted_calls == 0


class FhirServers:
    """The guards of the FHIR servers this process talks to (at most CDS_FHIR_MAX_SERVERS;
    the least recently used idle one is dropped to make room)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._guards: OrderedDict[str, ServerGuard] = OrderedDict()
        self._lock = threading.Lock()
        # 0 = automatic: `cds-service serve` sets half its --threads; 4 elsewhere.
        self._fallback = threading.BoundedSemaphore(config.fhir_max_fallback_calls or 4)

    @staticmethod
    def key(base: str) -> str:
        return base.rstrip("/").lower()

    def guard(self, base: str) -> ServerGuard:
        key = self.key(base)
        with self._lock:
            guard = self._guards.get(key)
            if guard is not None:
                self._guards.move_to_end(key)
                return guard
            if len(self._guards) >= max(1, self._config.fhir_max_servers):
                victim = next((k for k, g in self._guards.items() if g.idle), None)
                if victim is None:
                    raise Saturated(self._config.retry_after, "calls to other FHIR servers")
                self._guards.pop(victim).executor.shutdown(wait=False)
            guard = self._guards[key] = ServerGuard(self._config)
            return guard

    def _budget(self, deadline: float | None) -> float:
        """How long a call may wait for a slot: CDS_ADMISSION_WAIT, and never so long that
        its own deadline leaves less than the fetch needs."""
        wait = max(0.0, self._config.admission_wait)
        if deadline is not None:
            keep = min(_MIN_FETCH, self._config.fhir_deadline / 2)
            wait = min(wait, deadline - keep - time.monotonic())
        return max(0.0, wait)

    @contextmanager
    def admit(self, base: str, deadline: float | None = None) -> Iterator[ServerGuard]:
        """A slot for one hook call that needs `base`: BreakerOpen when the server is failing,
        Saturated when no slot frees up in time (see the module docstring)."""
        guard = self.guard(base)
        guard.breaker.allow()
        wait = self._budget(deadline)
        until = time.monotonic() + wait
        busy = "calls to this FHIR server"
        if not guard.calls.acquire(blocking=False):
            with guard._lock:
                rounds = guard.waiting // guard.slots + 1
                hopeless = guard.waiting >= guard.max_waiting or (
                    guard.average_call * rounds > wait
                )
                if not hopeless:
                    guard.waiting += 1
            if hopeless:
                raise Saturated(self._config.retry_after, busy)
            try:
                admitted = guard.calls.acquire(timeout=wait)
            finally:
                with guard._lock:
                    guard.waiting -= 1
            if not admitted:
                raise Saturated(self._config.retry_after, busy)
        started = time.monotonic()
        try:
            if not self._fallback.acquire(timeout=max(0.0, until - time.monotonic())):
                raise Saturated(self._config.retry_after, "calls that wait on FHIR servers")
            with guard._lock:
                guard.admitted_calls += 1
            try:
                yield guard
            finally:
                now = time.monotonic()
                with guard._lock:
                    guard.admitted_calls -= 1
                    guard.last_used = now
                    held = now - started
                    guard.average_call = (
                        held
                        if guard.average_call == 0.0
                        else (1 - _EWMA) * guard.average_call + _EWMA * held
                    )
                self._fallback.release()
        finally:
            guard.calls.release()

    def occupancy(self) -> dict[str, int]:
        """Exchanges in flight and calls admitted, over all servers (0/0 when idle)."""
        with self._lock:
            guards = list(self._guards.values())
        return {
            "exchanges": sum(g.active_exchanges for g in guards),
            "calls": sum(g.admitted_calls for g in guards),
        }

    def close(self) -> None:
        with self._lock:
            guards = list(self._guards.values())
            self._guards.clear()
        for guard in guards:
            guard.executor.shutdown(wait=False, cancel_futures=True)
