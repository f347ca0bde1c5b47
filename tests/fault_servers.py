"""Misbehaving FHIR servers on loopback, for the fault-injection tests and the benchmark.

Each server listens on 127.0.0.1 (port chosen by the OS) and serves every connection in its
own thread until stop(). Modes:
- healthy: answers Patient reads and searches with small valid JSON;
- slow: healthy, after `delay` seconds;
- hang: reads the request and never answers;
- trickle: sends the status line, headers and body one byte every `delay` seconds;
- trickle-headers: like trickle, the headers never finish;
- error: answers 500 with an OperationOutcome;
- garbage: answers 200 with bytes that are not JSON;
- not-http: answers bytes that are not HTTP at all;
- loop: every search is a Bundle whose next link points back to itself.
`refusing_base()` gives a loopback base where nothing listens (connections are refused).
Every loop here is bounded in time by `max_seconds` and ends by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any, Self

MODES = (
    "healthy",
    "slow",
    "hang",
    "trickle",
    "trickle-headers",
    "error",
    "garbage",
    "not-http",
    "loop",
)


def _read_request(conn: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return parts[1] if len(parts) > 1 else "/"


class FaultServer:
    def __init__(
        self,
        mode: str,
        delay: float = 0.3,
        max_seconds: float = 60.0,
        backlog: int = 128,
        accepting: bool = True,
    ) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.delay = delay
        self.max_seconds = max_seconds
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(backlog)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.requests = 0
        self.paths: list[str] = []
        self._accept_gate = threading.Event()
        if accepting:
            self._accept_gate.set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def pause_accepting(self) -> None:
        self._accept_gate.clear()

    def resume_accepting(self) -> None:
        self._accept_gate.set()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def stop(self) -> None:
        self._stop.set()
        self._accept_gate.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        until = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < until:
            self._accept_gate.wait(timeout=0.1)
            if not self._accept_gate.is_set():
                continue
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn, until), daemon=True).start()

    def _serve(self, conn: socket.socket, until: float) -> None:
        try:
            conn.settimeout(5)
            path = _read_request(conn)
            with self._lock:
                self.requests += 1
                self.paths.append(path)
            self._answer(conn, path, until)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _answer(self, conn: socket.socket, path: str, until: float) -> None:
        mode = self.mode
        if mode == "hang":
            while not self._stop.is_set() and time.monotonic() < until:
                conn.settimeout(0.1)
                try:
                    if conn.recv(1024) == b"":
                        return  # the client gave up and closed
                except TimeoutError:
                    continue
            return
        if mode == "slow":
            self._stop.wait(self.delay)
        status, body = self._response(path)
        if mode == "error":
            status, body = (
                500,
                json.dumps(
                    {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "exception"}],
                    }
                ).encode(),
            )
        elif mode == "garbage":
            body = b'{"resourceType": "Bundle", "entry": [ <<< not json'
        elif mode == "not-http":
            conn.sendall(b"\x16\x03\x01 this is not HTTP \x00\xff\r\n\r\n")
            return
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        if mode in {"trickle", "trickle-headers"}:
            payload = head + body if mode == "trickle" else head[:-2] + b"X-Pad: " + b"a" * 4096
            for i in range(len(payload)):
                if self._stop.is_set() or time.monotonic() >= until:
                    return
                conn.sendall(payload[i : i + 1])
                self._stop.wait(self.delay)
            return
        conn.sendall(head + body)

    def _response(self, path: str) -> tuple[int, bytes]:
        resource = path.lstrip("/").split("?", 1)[0].split("/")
        if resource[0] == "Patient" and len(resource) > 1:
            return 200, json.dumps(
                {"resourceType": "Patient", "id": resource[1], "birthDate": "1970-01-01"}
            ).encode()
        if resource[0] == "Medication" and len(resource) > 1:
            return 200, json.dumps(
                {
                    "resourceType": "Medication",
                    "id": resource[1],
                    "code": {"text": "acetaminophen 500 MG Oral Tablet"},
                }
            ).encode()
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
        if self.mode == "loop":
            bundle["link"] = [{"relation": "next", "url": f"{self.base}{path}"}]
        return 200, json.dumps(bundle).encode()


def refusing_base() -> str:
    """A loopback base URL on which nothing listens."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


class ServedService:
    """A real `cds-service serve` on loopback (gunicorn), stopped by stop() / the with block."""

    def __init__(
        self, env: dict[str, str] | None = None, workers: int = 1, threads: int = 8
    ) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cli = Path(sys.executable).with_name("cds-service")
        self.process = subprocess.Popen(
            [
                str(cli),
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            env={**os.environ, "CDS_LOG_LEVEL": "WARNING", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(30.0)

    def _wait_ready(self, seconds: float) -> None:
        import http.client

        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if self.process.poll() is not None:
                raise RuntimeError("cds-service serve exited")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/cds-services")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("cds-service serve did not start")

    def worker_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the master)."""
        with open(
            f"/proc/{self.process.pid}/task/{self.process.pid}/children", encoding="ascii"
        ) as f:
            return [int(p) for p in f.read().split()]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except Exception:  # noqa: BLE001 - last resort, our own child only
                self.process.kill()
                self.process.wait(timeout=5)
