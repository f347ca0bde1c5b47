"""`cds-service serve` on loopback: every non-2xx that gunicorn or the app sends, including the
ones gunicorn answers itself (an over-long URL or header), is a FHIR OperationOutcome, and the
server's log never repeats what the client sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import check_body, sandbox

MARKER = "Zyzzyva"  # client-supplied text that must never reach the server's log
LIMIT = 4096


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes or the body ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = _headers(head)
                if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, _headers(head), body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = _free_port()
    env = {**os.environ, "CDS_MAX_BODY_BYTES": str(LIMIT), "CDS_TODAY": "2026-11-23"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            "1",
            "--threads",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            status, _, _ = _exchange(
                port, b"GET /cds-services HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("cds-service serve did not start")
        time.sleep(0.2)
    yield port, process
    process.terminate()
    process.wait(timeout=10)


def _outcome(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers.get("content-type", "").startswith("application/json"), (status, body)
    document: dict[str, Any] = json.loads(body)
    check_body(status, document)
    return document


@pytest.mark.parametrize(
    "name,request_bytes,expected",
    [
        (
            "long URL",
            b"GET /cds-services?q=" + MARKER.encode() * 1500 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
        ),
        (
            "long header",
            b"GET /cds-services HTTP/1.1\r\nHost: localhost\r\nX-Big: "
            + MARKER.encode() * 1500
            + b"\r\n\r\n",
            431,
        ),
        (
            "too many headers",
            b"GET /cds-services HTTP/1.1\r\nHost: localhost\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, MARKER.encode()) for i in range(150))
            + b"\r\n",
            431,
        ),
        ("garbage request line", MARKER.encode() + b"\x01 nonsense\r\n\r\n", 400),
        (
            "bad chunk size",
            b"POST /cds-services/opioid-lbp-order-sign HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n"
            + MARKER.encode()
            + b"\r\n0\r\n\r\n",
            400,
        ),
        (
            "unknown path",
            b"GET /" + MARKER.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            404,
        ),
    ],
)
def test_server_errors_are_operation_outcomes(
    server: tuple[int, Any], name: str, request_bytes: bytes, expected: int
) -> None:
    """gunicorn's own refusals and the app's errors alike: the status and an OperationOutcome."""
    status, headers, body = _exchange(server[0], request_bytes)
    assert status == expected, (name, body[:200])
    _outcome(status, headers, body)


def _chunked(payload: bytes, size: int = 1000) -> bytes:
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_chunked_body_over_the_limit_is_413(server: tuple[int, Any]) -> None:
    """A chunked body larger than CDS_MAX_BODY_BYTES is 413, not "invalid JSON"; one under the
    limit is read whole and answered."""
    head = (
        b"POST /cds-services/opioid-lbp-order-sign HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    big = json.dumps({"padding": MARKER * LIMIT}).encode()
    status, headers, body = _exchange(server[0], head + _chunked(big))
    assert status == 413
    _outcome(status, headers, body)
    small = json.dumps(sandbox("patient-view.json")).encode()
    assert len(small) < LIMIT
    status, headers, body = _exchange(server[0], head + _chunked(small, 100))
    assert status == 400  # read whole and parsed: a patient-view body on the order-sign service
    assert "unexpected hook" in _outcome(status, headers, body)["issue"][0]["diagnostics"]


def test_pipelined_requests_are_all_answered(server: tuple[int, Any]) -> None:
    """Requests sent back to back on one connection before any answer (HTTP/1.1 pipelining)
    are answered in order without waiting for the client to send anything more."""
    port, _ = server
    get = b"GET /cds-services HTTP/1.1\r\nHost: localhost\r\n\r\n"
    post = (
        b"POST /cds-services/opioid-lbp-patient-view HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(get + post + get)
        data = b""
        while data.count(b"HTTP/1.1 ") < 3:
            chunk = sock.recv(65536)  # a hang here (timeout) is the failure
            if not chunk:
                break
            data += chunk
    statuses = [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert statuses[0] == 200 and statuses[2] == 200, statuses
    assert statuses[1] == 400, statuses  # {} is not a hook request: answered, not dropped


def test_server_log_never_repeats_client_text(server: tuple[int, subprocess.Popen[str]]) -> None:
    """After all the refusals above, the server's log holds none of the client's text."""
    port, process = server
    _exchange(port, b"GET /cds-services?" + MARKER.encode() * 2000 + b" HTTP/1.1\r\n\r\n")
    process.terminate()
    _, stderr = process.communicate(timeout=10)
    assert "server-refused" in stderr
    assert MARKER not in stderr
    assert "<html" not in stderr.lower()
