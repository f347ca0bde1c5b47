"""Fault injection: misbehaving FHIR servers on loopback (tests/fault_servers.py) against the
engine, with short deadlines from Config. Each test shows one failure behaviour: a hard
deadline that frees everything, fast failure, bulkheads, breakers and admission."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import full_prefetch, make_app, sandbox
from fault_servers import FaultServer, refusing_base
from flask import Flask

from cds_service.fhir.watchdog import WATCHDOG

SIGN = "/cds-services/opioid-lbp-order-sign"
SERVICE = "opioid-lbp-order-sign"
DEADLINE = 1.0


def fault_app(**overrides: Any) -> Flask:
    settings: dict[str, Any] = {
        "fhir_deadline": DEADLINE,
        "fhir_connect_timeout": 0.5,
        "fhir_breaker_failures": 0,
    }
    settings.update(overrides)
    application = make_app(**settings)
    engine = application.extensions["cds_engine"]
    client = engine.loader._client
    seen: list[dict[str, Any]] = []
    real = client.get_json

    def recording(*args: Any) -> tuple[Any, dict[str, Any]]:
        body, call = real(*args)
        seen.append(call)
        return body, call

    client.get_json = recording  # every exchange's call record, also on a 412
    application.extensions["test_calls"] = seen
    return application


@pytest.fixture
def app() -> Iterator[Flask]:
    application = fault_app()
    yield application
    application.extensions["cds_engine"].close()


def fallback_body(base: str) -> dict[str, Any]:
    """An order-sign call that leaves most keys to the FHIR server."""
    body = sandbox("order-sign-oxycodone.json")
    body["fhirServer"] = base
    return body


def prefetched_body(base: str) -> dict[str, Any]:
    """An order-sign call whose data is all prefetched (it needs no FHIR exchange)."""
    body = sandbox("order-sign-oxycodone.json")
    body["fhirServer"] = base
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    return body


def timed(app: Flask, body: dict[str, Any]) -> tuple[Any, float]:
    client = app.test_client()
    started = time.monotonic()
    response = client.post(SIGN, json=body)
    return response, time.monotonic() - started


def evaluate(app: Flask, body: dict[str, Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = app.extensions["cds_engine"].evaluate(SERVICE, body)
    return result, time.monotonic() - started


def outcomes(app: Flask) -> set[str]:
    """The outcomes of the exchanges made so far, then forgets them."""
    seen = app.extensions["test_calls"]
    found = {c.get("outcome") for c in seen}
    seen.clear()
    return found


def settled(app: Flask, within: float = 0.3) -> bool:
    """Nothing left occupied: no exchange in flight, no admitted call, no armed socket."""
    until = time.monotonic() + within
    engine = app.extensions["cds_engine"]
    while time.monotonic() < until:
        if engine.fhir_servers.occupancy() == {"exchanges": 0, "calls": 0} and not WATCHDOG.armed:
            return True
        time.sleep(0.01)
    return False


def eventually(condition: Callable[[], bool], within: float) -> bool:
    until = time.monotonic() + within
    while time.monotonic() < until:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.parametrize("mode", ["hang", "trickle", "trickle-headers"])
def test_stuck_server_gets_412_at_the_deadline_and_nothing_outlives_the_call(
    app: Flask, mode: str
) -> None:
    """A hanging or trickling server (headers or body, one byte every 0.3 s) costs its call a
    412 at the deadline, and at that point no read, thread or socket is still busy."""
    with FaultServer(mode, delay=0.3) as server:
        result, took = evaluate(app, fallback_body(server.base))
        assert result.status == 412
        assert DEADLINE * 0.9 <= took < DEADLINE + 0.4
        assert "deadline" in outcomes(app)
        assert settled(app)
        # the server sees its connections closed by the service, not left open
        assert eventually(lambda: server.open_connections == 0, within=1.0)


def test_trickling_server_does_not_starve_the_next_call_to_a_healthy_server(app: Flask) -> None:
    """Right after a call cut short by a trickling server, a call to a healthy server gets its
    200 (the issue's measured failure: every FHIR thread stayed busy and healthy calls got 412)."""
    with FaultServer("trickle", delay=0.3) as bad, FaultServer("healthy") as good:
        for _ in range(3):
            assert evaluate(app, fallback_body(bad.base))[0].status == 412
        result, took = evaluate(app, fallback_body(good.base))
        assert result.status == 200 and took < DEADLINE


def test_refused_connection_fails_fast(app: Flask) -> None:
    """Nothing listening: 412 well before the deadline, the reads logged as connection errors."""
    result, took = evaluate(app, fallback_body(refusing_base()))
    assert result.status == 412
    assert took < DEADLINE / 2
    assert outcomes(app) == {"connection-error"}


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [("error", "http-error"), ("garbage", "malformed-json"), ("not-http", "connection-error")],
)
def test_failing_server_fails_fast_with_412(app: Flask, mode: str, outcome: str) -> None:
    """500s, a 200 that is not JSON, and bytes that are not HTTP: 412 at once, named in the log."""
    with FaultServer(mode) as server:
        result, took = evaluate(app, fallback_body(server.base))
    assert result.status == 412
    assert took < DEADLINE / 2
    assert outcome in outcomes(app)


def test_slow_server_within_the_deadline_is_waited_for(app: Flask) -> None:
    """A server that answers each read after 0.3 s (under the 1 s deadline) gives a 200."""
    with FaultServer("slow", delay=0.3) as server:
        result, took = evaluate(app, fallback_body(server.base))
    assert result.status == 200
    assert 0.3 <= took < DEADLINE


def test_looping_next_links_stop_at_the_page_cap() -> None:
    """A server whose every page says 'next' to itself: pages capped, data marked partial, 200."""
    app = fault_app(fhir_max_pages=3)
    with FaultServer("loop") as server:
        result, _ = evaluate(app, fallback_body(server.base))
        searches = sum(1 for p in server.paths if "?" in p)
    assert result.status == 200
    assert "medication-orders" in result.log["partial"]
    assert searches == 3 * 8  # eight searched keys (allergies too), three pages each


def test_connect_timeout_outlasts_one_dropped_syn() -> None:
    """A connection attempt whose first SYN is dropped (full accept queue) succeeds: with the
    default 1.5 s connect timeout through TCP's own retry at 1 s; with a 0.5 s one through the
    client's second connect attempt, within the deadline."""

    def attempt(connect_timeout: float) -> tuple[int, float]:
        app = fault_app(fhir_deadline=3.0, fhir_connect_timeout=connect_timeout)
        with FaultServer("healthy", backlog=0, accepting=False) as server:
            fillers = []
            for _ in range(3):  # fill the accept queue: the kernel now drops new SYNs
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", server.port))
                fillers.append(filler)
            time.sleep(0.1)
            threading.Timer(0.3, server.resume_accepting).start()
            body = fallback_body(server.base)
            body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
            del body["prefetch"]["patient"]  # one read: the Patient
            result, took = evaluate(app, body)
            for filler in fillers:
                filler.close()
        app.extensions["cds_engine"].close()
        return result.status, took

    status, took = attempt(1.5)
    assert status == 200 and took >= 0.9  # it did wait for the SYN retry
    status, took = attempt(0.5)
    assert status == 200 and took >= 0.45  # the first attempt timed out, the second worked


def test_breaker_opens_fails_fast_and_probes_after_the_cool_down() -> None:
    """After 3 failed exchanges in a row the server is not called: 412 at once with the reason;
    after the cool-down one probe call goes through and, the server being well, closes it."""
    app = fault_app(fhir_breaker_failures=3, fhir_breaker_cooldown=0.5)
    with FaultServer("error") as server:
        assert evaluate(app, fallback_body(server.base))[0].status == 412
        seen = server.requests
        outcomes(app)
        result, took = evaluate(app, fallback_body(server.base))
        assert result.status == 412 and took < 0.05
        assert server.requests == seen  # not called at all
        assert "failed" in result.body["issue"][0]["diagnostics"]
        assert 0 < int(result.headers["Retry-After"]) <= 1  # what is left of the cool-down
        assert outcomes(app) == set()  # no exchange was even attempted
        server.mode = "healthy"
        time.sleep(0.55)
        result, _ = evaluate(app, fallback_body(server.base))
        assert result.status == 200
        guard = app.extensions["cds_engine"].fhir_servers.guard(server.base)
        assert guard.breaker.state == "closed"


def test_breaker_reopens_when_the_probe_fails() -> None:
    """A failed probe opens the breaker again for a full cool-down."""
    app = fault_app(fhir_breaker_failures=2, fhir_breaker_cooldown=0.3)
    with FaultServer("error") as server:
        evaluate(app, fallback_body(server.base))
        time.sleep(0.35)
        assert evaluate(app, fallback_body(server.base))[0].status == 412  # the probe
        seen = server.requests
        result, took = evaluate(app, fallback_body(server.base))
        assert took < 0.05 and server.requests == seen
        assert "tried again" in result.body["issue"][0]["diagnostics"]


def test_one_bad_server_leaves_healthy_and_prefetched_calls_alone() -> None:
    """Under 12 concurrent calls to a hanging server: prefetched calls answer at once, a call
    to a healthy server answers 200 within the deadline, surplus calls to the bad server get a
    quick 503 with Retry-After and an OperationOutcome, and afterwards nothing stays occupied."""
    app = fault_app(fhir_server_max_calls=2, fhir_max_fallback_calls=3, admission_wait=0.1)
    statuses: list[tuple[int, float, Any]] = []
    with FaultServer("hang") as bad, FaultServer("healthy") as good:
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(timed, app, fallback_body(bad.base)) for _ in range(12)]
            time.sleep(0.3)  # the bad calls are now in flight
            prefetched = [timed(app, prefetched_body(bad.base)) for _ in range(5)]
            healthy, healthy_took = timed(app, fallback_body(good.base))
            for future in futures:
                response, took = future.result()
                statuses.append((response.status_code, took, response))
        assert all(r.status_code == 200 for r, _ in prefetched)
        assert max(took for _, took in prefetched) < 0.3
        assert healthy.status_code == 200 and healthy_took < DEADLINE
        rejected = [(t, r) for s, t, r in statuses if s == 503]
        assert rejected and {s for s, _, _ in statuses} == {412, 503}
        for took, response in rejected:
            assert took < 0.5
            assert response.headers["Retry-After"].isdigit()
            body = response.get_json()
            assert body["resourceType"] == "OperationOutcome"
            assert body["issue"][0]["code"] == "transient"
    assert settled(app)
    app.extensions["cds_engine"].close()


def test_prefetched_call_takes_no_fhir_slot(app: Flask) -> None:
    """A call whose data was prefetched is answered without admission or any FHIR thread."""
    with FaultServer("hang") as server:
        result, took = evaluate(app, prefetched_body(server.base))
        assert result.status == 200 and took < 0.3
        assert server.requests == 0
    assert app.extensions["cds_engine"].fhir_servers.occupancy() == {"exchanges": 0, "calls": 0}
