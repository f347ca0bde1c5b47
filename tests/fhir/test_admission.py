"""Admission sized to one EHR with one FHIR server: a healthy server's bursts queue instead of
being refused, waits end within the request's own deadline, and a slow server is still
refused at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_servers import FaultServer
from test_faults import fallback_body, fault_app, timed

from cds_service.config import Config
from cds_service.fhir.bulkhead import FhirServers, Saturated


def test_eight_clients_on_one_healthy_server_get_no_refusal() -> None:
    """8 concurrent clients, 64 fallback calls to one FHIR server answering in 40 ms, with
    the default slot and queue limits: no 503 (the old limits refused about half of them at
    once). The admission wait is 20 times one call measured in this run, so a loaded machine's
    slow calls cannot decide it: only the limits can."""
    with FaultServer("slow", delay=0.04) as server:
        body = fallback_body(server.base)
        probe = fault_app(fhir_deadline=3.0)
        one = min(timed(probe, body)[1] for _ in range(3))  # one call, uncontended
        probe.extensions["cds_engine"].close()
        wait = max(Config().admission_wait, 20 * one)
        app = fault_app(fhir_deadline=2 * wait + 3.0, admission_wait=wait)

        def client(_: int) -> list[int]:
            return [timed(app, body)[0].status_code for _ in range(8)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = [s for batch in pool.map(client, range(8)) for s in batch]
    assert len(statuses) == 64
    assert statuses.count(503) == 0, statuses
    app.extensions["cds_engine"].close()


def _hold(servers: FhirServers, base: str, seconds: float) -> threading.Thread:
    entered = threading.Event()

    def run() -> None:
        with servers.admit(base):
            entered.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert entered.wait(5)
    return thread


def test_a_wait_ends_within_the_request_deadline() -> None:
    """With every slot taken, a call whose deadline leaves 0.2 s beyond what the fetch needs
    waits about 0.2 s, not the full admission wait, then gets 503."""
    config = Config(fhir_max_fallback_calls=1, admission_wait=2.0, fhir_deadline=3.0)
    servers = FhirServers(config)
    holder = _hold(servers, "http://127.0.0.1:1/fhir", 1.5)
    started = time.monotonic()
    with pytest.raises(Saturated), servers.admit("http://127.0.0.1:1/fhir", started + 1.2):
        pass
    took = time.monotonic() - started
    assert 0.1 < took < 1.0  # the full admission wait would be 2 s
    holder.join()
    servers.close()


def test_a_queued_call_is_admitted_when_a_slot_frees() -> None:
    """A call that finds the only slot taken waits in the queue and gets it when it frees."""
    config = Config(fhir_max_fallback_calls=1, admission_wait=2.0)
    servers = FhirServers(config)
    holder = _hold(servers, "http://127.0.0.1:1/fhir", 0.2)
    with servers.admit("http://127.0.0.1:1/fhir") as guard:
        assert guard.admitted_calls == 1
    holder.join()
    servers.close()


def test_a_slow_server_is_refused_at_once_once_its_pace_is_known() -> None:
    """After calls to a server took about 0.5 s each, a call that would have to wait two
    rounds within a 0.6 s budget is refused at once instead of waiting."""
    config = Config(fhir_max_fallback_calls=1, admission_wait=0.6, fhir_server_max_waiting=4)
    servers = FhirServers(config)
    base = "http://127.0.0.1:1/fhir"
    _hold(servers, base, 0.5).join()  # the server's pace: 0.5 s per call
    holder = _hold(servers, base, 1.0)
    queued = threading.Thread(target=lambda: _try(servers, base))
    queued.start()
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(Saturated), servers.admit(base):
        pass
    assert time.monotonic() - started < 0.3  # waiting would take the whole 0.6 s budget
    holder.join()
    queued.join()
    servers.close()


def _try(servers: FhirServers, base: str) -> None:
    try:
        with servers.admit(base):
            pass
    except Saturated:
        pass
