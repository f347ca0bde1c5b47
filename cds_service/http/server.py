"""The WSGI server behind `cds-service serve`: gunicorn's gthread worker, except that the
errors gunicorn answers itself (a request line or header over its limits, a malformed request,
an unsupported transfer coding) are sent as a FHIR OperationOutcome like every other error of
the service, not as gunicorn's HTML page, and are logged as fixed words (the status and the
exception type), never with the request line, a header or the client's address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn import http, util  # type: ignore[import-untyped]
from gunicorn.http import errors as http_errors  # type: ignore[import-untyped]
from gunicorn.http.unreader import SocketUnreader  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from cds_service.errors import operation_outcome, unexpected_error

log = logging.getLogger("cds_service.http.server")

# gunicorn exception -> (status, reason phrase, what the OperationOutcome says)
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (
        http_errors.LimitRequestLine,
        414,
        "URI Too Long",
        "The request line (method and URL) is longer than this service accepts",
    ),
    (
        http_errors.LimitRequestHeaders,
        431,
        "Request Header Fields Too Large",
        "The request headers are too many or too large",
    ),
    (
        http_errors.UnsupportedTransferCoding,
        501,
        "Not Implemented",
        "The request's transfer coding is not supported",
    ),
    (
        http_errors.ExpectationFailed,
        417,
        "Expectation Failed",
        "The request's Expect header cannot be met",
    ),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "Request forbidden"),
)
# Headers the application tried to send are the application's fault: those are bugs (500).
_APPLICATION_FAULTS = (
    http_errors.InvalidResponseHeader,
    http_errors.InvalidResponseHeaderName,
    http_errors.ConfigurationProblem,
)


def error_answer(exc: BaseException) -> tuple[int, str, str]:
    """(status, reason phrase, diagnostics) for an exception gunicorn's worker caught. A
    request gunicorn could not parse is the client's error; anything else is a bug, logged as
    unexpected with an error id that the 500's diagnostics carry."""
    if isinstance(exc, http_errors.ParseException) and not isinstance(exc, _APPLICATION_FAULTS):
        status, reason, message = next(
            ((s, r, m) for kind, s, r, m in _CLIENT_ERRORS if isinstance(exc, kind)),
            (400, "Bad Request", "The HTTP request is malformed"),
        )
        log.warning("server-refused", extra={"status": status, "error": type(exc).__name__})
        return status, reason, message
    _, body = unexpected_error(log, "server-unexpected-error", exc)
    return 500, "Internal Server Error", str(body["issue"][0]["diagnostics"])


def http_error(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> bytes:
    """A complete HTTP/1.1 response whose body is the OperationOutcome."""
    body = json.dumps(operation_outcome(status, message), separators=(",", ":")).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class OperationOutcomeWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn gthread worker whose own error answers are OperationOutcome JSON."""

    def handle_error(self, _req: Any, client: Any, _addr: Any, exc: BaseException) -> None:
        status, reason, message = error_answer(exc)
        try:
            util.write_nonblock(client, http_error(status, reason, message))
        except Exception:  # noqa: BLE001 - the client is gone; nothing more to tell it
            log.debug("error-not-sent", extra={"status": status})


# --- slow clients: requests are read whole on the worker's event loop --------------------------


@dataclass(frozen=True)
class FrontLimits:
    """How the worker reads requests before a thread is committed (see BufferingWorker)."""

    header_timeout: float = 10.0  # seconds for the request line and headers, from first byte
    body_min_rate: int = 32 * 1024  # bytes per second a body must average after the grace
    body_grace: float = 5.0  # seconds a body may take before its rate is checked
    max_body_bytes: int = 16 * 1024 * 1024  # a larger body is not buffered
    inflight_bytes: int = 16 * 1024 * 1024  # request bytes one worker holds at once
    inflight_wait: float = 10.0  # seconds a request may wait for that budget, then 503
    retry_after: int = 2

    @classmethod
    def from_config(cls, config: Any) -> FrontLimits:
        return cls(
            header_timeout=config.http_header_timeout,
            body_min_rate=config.http_body_min_rate,
            body_grace=config.http_body_grace,
            max_body_bytes=config.max_body_bytes,
            inflight_bytes=config.worker_inflight_bytes or config.max_body_bytes,
            inflight_wait=config.http_inflight_wait,
            retry_after=config.retry_after,
        )


_HEADER_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024  # past this without a blank line: gunicorn's own limits answer (431)


class _Complete:
    """A request is whole in the buffer (`size` bytes), or cannot be judged here (the thread
    and gunicorn's parser answer it: malformed framing, oversized headers)."""

    def __init__(self, size: int) -> None:
        self.size = size


def request_extent(data: bytes | bytearray, max_body: int) -> _Complete | int | None:
    """How much of `data` the first request takes: _Complete(size) when it is all there,
    None when more bytes are needed, or -N when its Content-Length N is over `max_body`."""
    end = data.find(_HEADER_END)
    if end < 0:
        return _Complete(len(data)) if len(data) > _MAX_HEAD else None
    head = bytes(data[:end]).split(b"\r\n")
    body_start = end + 4
    length: int | None = None
    chunked = False
    for line in head[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return _Complete(body_start)  # gunicorn answers the malformed header
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        return _chunked_extent(data, body_start)
    if length is None or length <= 0:
        return _Complete(body_start)
    if length > max_body:
        return -length
    return _Complete(body_start + length) if len(data) >= body_start + length else None


def _chunked_extent(data: bytes | bytearray, position: int) -> _Complete | None:
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return _Complete(len(data)) if len(data) - position > 1024 else None
        size_text = bytes(data[position:line_end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return _Complete(line_end)  # malformed: gunicorn answers it
        if size == 0:
            trailer = line_end + 2
            # trailers end with an empty line: "0\r\n\r\n" or "0\r\n<trailers>\r\n\r\n"
            if data[trailer : trailer + 2] == b"\r\n":
                return _Complete(trailer + 2)
            end = data.find(_HEADER_END, trailer)
            return _Complete(end + 4) if end >= 0 else None
        position = line_end + 2 + size + 2
        if len(data) < position:
            return None


@dataclass(eq=False)
class _Reading:
    conn: Any
    buffer: bytearray
    started: float
    head_done: float | None = None
    waiting_since: float | None = None  # complete, waiting for the byte budget
    size: int = 0
    continued: bool = False
    registered: bool = False  # its socket is in the poller


class HeldUnreader(SocketUnreader):  # type: ignore[misc]
    """gunicorn's socket unreader for a connection whose request the worker has read whole:
    the bytes are held once with a read position, so an application reading the body 64 KiB
    at a time pays one copy of each piece. gunicorn's own Unreader rebuilds its buffer from
    everything still unread on every read: a 4.5 MB body pushed back with unread() and read
    in 64 KiB pieces copied about 0.5 GB (a fifth of a 5,000-order call). Past the held
    bytes it reads the socket as gunicorn does; what a read leaves buffered stays in
    gunicorn's buffer, and held bytes always come first (nothing is buffered behind them)."""

    piece = 64 * 1024  # the most a read without a size returns: one "chunk" of the source

    def __init__(self, sock: Any, buffered: bytes = b"") -> None:
        super().__init__(sock)
        self._held = buffered
        self._at = 0

    def _take(self, size: int) -> bytes:
        data: bytes = self._held[self._at : self._at + size]
        self._at += len(data)
        if self._at >= len(self._held):
            self._held, self._at = b"", 0
        return data

    def read(self, size: int | None = None, read_ahead: int | None = None) -> bytes:
        if not self._held:
            return bytes(super().read(size, read_ahead))
        if size is not None and not isinstance(size, int):
            raise TypeError("size parameter must be an int or long.")
        if size == 0:
            return b""
        if size is None or size < 0:
            return self._take(self.piece)
        data = self._take(size)
        if len(data) < size:  # the held bytes ran out: the rest from the socket
            ahead = None if read_ahead is None else max(0, read_ahead - len(data))
            data += super().read(size - len(data), ahead)
        return data

    def unread(self, data: bytes) -> None:
        if not data:
            return
        size = len(data)
        if size <= self._at and self._held[self._at - size : self._at] == data:
            self._at -= size  # what was just read, put back: only the position moves
            return
        rest = self._held[self._at :] + super().take_buffered()
        self._held, self._at = bytes(data) + rest, 0

    def spill(self) -> None:
        """Hand what is still held (a pipelined request behind the one answered) to
        gunicorn's own buffer, where gthread looks for it after an answer: bytes already
        read no longer make the socket readable to the poller."""
        if self._held:
            rest = self._held[self._at :]
            self._held, self._at = b"", 0
            super().unread(rest)

    def take_buffered(self) -> bytes:
        data = self._held[self._at :] + super().take_buffered()
        self._held, self._at = b"", 0
        return bytes(data)


class BufferingWorker(OperationOutcomeWorker):
    """gthread worker that reads each request whole on its event loop before a thread is
    committed: headers within `header_timeout`, a body at `body_min_rate` on average after
    `body_grace` (else 408 and the connection closed), a Content-Length over the body limit
    handed over with its headers only (the app refuses it without reading it), a chunked body
    past the limit answered 413, and at most `inflight_bytes` of requests held or handled at once
    (a request that does not fit waits, or gets 503 with Retry-After after `inflight_wait`).
    Slow clients therefore cost a socket and a buffer, never a request thread."""

    limits = FrontLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading: dict[int, _Reading] = {}
        self._waiting: deque[_Reading] = deque()
        self._inflight = 0  # bytes of requests dispatched to threads and not yet finished

    # gunicorn hands every connection with a request to come through here
    def enqueue_req(self, conn: Any) -> None:
        if getattr(conn, "cds_ready", False) or self.cfg.is_ssl or conn.is_http2:
            conn.cds_ready = False
            super().enqueue_req(conn)
            return
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        state = _Reading(conn, bytearray(leftover), time.monotonic())
        conn.sock.setblocking(False)
        self._reading[id(conn)] = state
        # the socket is mostly readable already (a keep-alive connection that woke the poller,
        # a new one whose request came with it): one read now saves a turn of the poller
        if self._progress(state) or state.waiting_since is not None or self._pull(state):
            return
        if state.waiting_since is None:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, state))
            state.registered = True

    def _readable(self, state: _Reading, _sock: Any) -> None:
        self._pull(state)

    def _pull(self, state: _Reading) -> bool:
        """One read without waiting; True once the connection left the reading state."""
        try:
            data = state.conn.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._drop(state, None)
            return True
        state.buffer += data
        return self._progress(state)

    def _progress(self, state: _Reading) -> bool:
        """Look at what arrived; True once the connection left the reading state."""
        extent = request_extent(state.buffer, self.limits.max_body_bytes)
        if state.head_done is None and state.buffer.find(_HEADER_END) >= 0:
            state.head_done = time.monotonic()
            if not state.continued and b"100-continue" in bytes(state.buffer[:_MAX_HEAD]).lower():
                state.continued = True  # the client waits for this before sending the body
                self._send(state, b"HTTP/1.1 100 Continue\r\n\r\n")
        if extent is None and len(state.buffer) <= self.limits.max_body_bytes + _MAX_HEAD:
            return False
        if isinstance(extent, int):
            # a Content-Length over the limit: the app answers (413, or 404/405/415 first)
            # from the headers without reading the body, then drains a drainable one (within
            # CDS_HTTP_DRAIN_SECONDS) or closes the connection: no thread waits on its bytes
            extent = _Complete(state.buffer.find(_HEADER_END) + 4)
        if extent is None or isinstance(extent, int):
            self._drop(state, (413, "Content Too Large", "The request body is too large"))
            return True
        state.size = len(state.buffer)
        return self._admit(state)

    def _admit(self, state: _Reading) -> bool:
        if self._inflight and self._inflight + state.size > self.limits.inflight_bytes:
            if state.waiting_since is None:
                state.waiting_since = time.monotonic()
                self._waiting.append(state)
                self._unregister(state)  # its socket is not read meanwhile (backpressure)
            return False
        self._inflight += state.size
        self._unregister(state)
        self._reading.pop(id(state.conn), None)
        conn = state.conn
        conn.cds_bytes = state.size
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True
        if not isinstance(conn.parser.unreader, HeldUnreader):
            conn.parser.unreader = HeldUnreader(conn.sock, conn.parser.unreader.take_buffered())
        conn.parser.unreader.unread(bytes(state.buffer))
        conn.data_ready = True
        conn.cds_ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)
        return True

    def finish_request(self, conn: Any, fs: Any) -> None:
        self._inflight -= getattr(conn, "cds_bytes", 0)
        conn.cds_bytes = 0
        unreader = getattr(conn.parser, "unreader", None)
        if isinstance(unreader, HeldUnreader):
            unreader.spill()  # gthread then serves a pipelined request at once
        super().finish_request(conn, fs)
        while self._waiting:
            state = self._waiting[0]
            if self._inflight and self._inflight + state.size > self.limits.inflight_bytes:
                break
            self._waiting.popleft()
            self._admit(state)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        limits = self.limits
        for state in list(self._reading.values()):
            if state.waiting_since is not None:
                if now - state.waiting_since > limits.inflight_wait:
                    self._drop(
                        state,
                        (503, "Service Unavailable", "The service is busy; retry shortly"),
                        {"Retry-After": str(limits.retry_after)},
                    )
                continue
            if state.head_done is None:
                if now - state.started > limits.header_timeout:
                    self._drop(
                        state, (408, "Request Timeout", "The request headers came too slowly")
                    )
                continue
            elapsed = now - state.head_done - limits.body_grace
            received = len(state.buffer) - state.buffer.find(_HEADER_END) - 4
            if elapsed > 0 and received < limits.body_min_rate * elapsed:
                self._drop(state, (408, "Request Timeout", "The request body came too slowly"))

    def _send(self, state: _Reading, data: bytes) -> None:
        with contextlib.suppress(OSError):
            state.conn.sock.send(data)

    def _unregister(self, state: _Reading) -> None:
        if not state.registered:  # (the selector's KeyError for it formats the socket)
            return
        state.registered = False
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(state.conn.sock)

    def _drop(
        self,
        state: _Reading,
        answer: tuple[int, str, str] | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Close a connection still being read, with an error answer when there is one."""
        self._unregister(state)
        self._reading.pop(id(state.conn), None)
        if state in self._waiting:
            self._waiting.remove(state)
        if answer is not None:
            status, reason, message = answer
            log.warning("server-refused", extra={"status": status, "error": "slow-or-large"})
            self._send(state, http_error(status, reason, message, headers))
        self.nr_conns -= 1
        state.conn.close()


def front_worker(limits: FrontLimits) -> type[BufferingWorker]:
    """The worker class `cds-service serve` gives gunicorn, with its limits."""
    return type("CdsWorker", (BufferingWorker,), {"limits": limits})
