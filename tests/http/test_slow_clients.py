"""Slow clients against a real `cds-service serve`: connections that send their headers or
bodies a byte at a time cost a socket, never a request thread, so ordinary calls keep their
idle latency; such connections are cut after the header timeout or below the body rate."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fault_servers import FaultServer
from servers import Service, cards_body, start_all, stop_all

from cds_service.http.server import _Complete, request_extent

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fhir"))
from test_faults import fallback_body

SIGN = "/cds-services/opioid-lbp-order-sign"


HEADER_TIMEOUT, BODY_GRACE = 2.0, 1.0  # seconds: short, so the cuts come soon


def _served(home: Path) -> Service:
    return Service(
        {
            "XDG_DATA_HOME": str(home),
            "CDS_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "CDS_HTTP_BODY_GRACE": str(BODY_GRACE),
            "CDS_CARD_LOG": "false",
        },
        workers=1,
        threads=4,
    )


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    """Two identical servers, started side by side: one for the slow clients, and one no
    slow client touches, whose latency, measured in turn with the other's, is what the
    machine gives at that moment."""
    served = [_served(tmp_path_factory.mktemp(name)) for name in ("slow", "control")]
    start_all(served)
    yield served
    stop_all(served)


class SlowLoris:
    """`headers` connections sending one header line at a time and `bodies` connections
    sending a body one byte at a time, each reopened when the server cuts it."""

    def __init__(self, port: int, headers: int, bodies: int, interval: float = 0.5) -> None:
        self.port = port
        self.kinds = ["header"] * headers + ["body"] * bodies
        self.interval = interval
        self.stop = threading.Event()
        self.reopened = 0
        self.answers: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, kind: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if kind == "header":
            sock.sendall(f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        else:
            sock.sendall(
                f"POST {SIGN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n{".encode()
            )
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        sockets = [self._open(kind) for kind in self.kinds]
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(sockets):
            selector.register(sock, selectors.EVENT_READ, index)
        while not self.stop.is_set():
            for index, sock in enumerate(sockets):
                with contextlib.suppress(OSError):
                    sock.send(b"X-a: b\r\n" if self.kinds[index] == "header" else b" ")
            deadline = time.monotonic() + self.interval
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    index = key.data
                    old = sockets[index]
                    try:
                        data = old.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        self.answers.append(data[:12])
                    selector.unregister(old)
                    old.close()
                    sockets[index] = self._open(self.kinds[index])
                    selector.register(sockets[index], selectors.EVENT_READ, index)
                    self.reopened += 1
        for sock in sockets:
            sock.close()

    def __enter__(self) -> SlowLoris:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _latencies(services: list[Service], count: int) -> tuple[list[list[float]], int]:
    """`count` ordinary hook calls to each service, taking turns: each one's latencies (so
    all see the same moments of the machine's load) and the failures."""
    body = json.dumps(cards_body())
    sessions = [requests.Session() for _ in services]
    took: list[list[float]] = [[] for _ in services]
    failures = 0
    for _ in range(count):
        for index, service in enumerate(services):
            started = time.perf_counter()
            try:
                response = sessions[index].post(
                    service.base + SIGN,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
                failures += response.status_code != 200
            except requests.RequestException:
                failures += 1
            took[index].append(time.perf_counter() - started)
    return took, failures


def test_slow_headers_and_bodies_do_not_slow_ordinary_calls(twins: list[Service]) -> None:
    """100 slow-header and 50 slow-body connections held open (reopened when cut) against
    one worker with 4 threads: ordinary calls, taking turns with calls to an identical server
    no slow client touches, keep its median latency within 2x (plus 10 ms of scheduling
    noise), with no failure; the slow connections are cut (408)."""
    service, control = twins
    _latencies([service, control], 5)  # warm up
    with SlowLoris(service.port, headers=100, bodies=50) as attack:
        time.sleep(0.5)  # every slow connection is open and trickling
        started = time.monotonic()
        (busy, calm), failures = _latencies([service, control], 40)
        # past the header timeout and the body grace, so the cuts have come
        time.sleep(max(0.0, HEADER_TIMEOUT + BODY_GRACE + 0.5 - (time.monotonic() - started)))
    assert failures == 0
    assert statistics.median(busy) <= 2 * statistics.median(calm) + 0.010, (
        statistics.median(calm),
        statistics.median(busy),
    )
    assert attack.reopened >= 100  # the server cut the slow connections (408) ...
    assert any(answer.startswith(b"HTTP/1.1 408") for answer in attack.answers)


def test_request_extent_finds_whole_requests() -> None:
    """Content-Length and chunked bodies are whole only when every byte is there; an
    oversized Content-Length is reported as such."""
    head = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
    assert request_extent(head + b"abc", 100) is None
    done = request_extent(head + b"abcde" + b"GET", 100)
    assert isinstance(done, _Complete) and done.size == len(head) + 5
    assert request_extent(head, 4) == -5
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert request_extent(chunked + b"3\r\nabc\r\n", 100) is None
    whole = request_extent(chunked + b"3\r\nabc\r\n0\r\n\r\n", 100)
    assert isinstance(whole, _Complete) and whole.size == len(chunked) + 13
    assert request_extent(b"GET / HTTP/1.1\r\nHost: x", 100) is None
    get = request_extent(b"GET / HTTP/1.1\r\n\r\n", 100)
    assert isinstance(get, _Complete) and get.size == 18


def test_a_request_over_the_byte_budget_waits_then_gets_503(tmp_path: Path) -> None:
    """With the worker's byte budget taken by a call waiting on a hanging FHIR server, a
    second call of the same size waits for the budget, then gets 503 with Retry-After and
    an OperationOutcome; once the first call is done, calls are answered again."""
    body_a = json.dumps(fallback_body("http://127.0.0.1:1/fhir")).encode()
    with FaultServer("hang") as fhir:
        body = json.dumps(fallback_body(fhir.base)).encode()
        served = Service(
            {
                "XDG_DATA_HOME": str(tmp_path),
                "CDS_CARD_LOG": "false",
                "CDS_FHIR_DEADLINE": "4",
                "CDS_WORKER_INFLIGHT_BYTES": str(len(body) + len(body_a) // 2),
                "CDS_HTTP_INFLIGHT_WAIT": "1",
            },
            workers=1,
            threads=4,
        )
        served.start()
        try:
            first = threading.Thread(
                target=lambda: requests.post(
                    served.base + SIGN,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
            )
            first.start()
            time.sleep(0.5)  # the first call holds the budget while its FHIR server hangs
            started = time.monotonic()
            second = requests.post(
                served.base + SIGN,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            waited = time.monotonic() - started
            assert second.status_code == 503
            assert second.headers["Retry-After"].isdigit()
            assert second.json()["resourceType"] == "OperationOutcome"
            assert 0.8 < waited < 3.5
            first.join()
            after = requests.post(
                served.base + SIGN,
                data=json.dumps(cards_body()),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert after.status_code == 200
        finally:
            served.stop()
