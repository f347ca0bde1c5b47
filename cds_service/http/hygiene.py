"""Keep-alive stays usable after an early error on a request whose body was never read.

A 404, 405, 415 or 413 is answered before the body is read. gunicorn discards at most 64 KiB
of leftover body before it reuses a connection; past that it closes the connection although
its response said keep-alive, and the client's next call on that connection fails. So after
every response, an unread body is drained (up to CDS_HTTP_DRAIN_MAX_BYTES, within
CDS_HTTP_DRAIN_SECONDS) and the connection stays open; a larger, chunked or stalled body
makes the response say `Connection: close` instead (gunicorn's own flag, set through its
pre_request hook, since a WSGI app may not send hop-by-hop headers itself).

A view that read the whole body says so with `mark_body_read()`: with MAX_CONTENT_LENGTH
set, Werkzeug wraps gunicorn's input in a `LimitedStream(..., is_max=True)` whose
`is_exhausted` stays false after the full body was read, which used to close the connection
after every successful hook or feedback call.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import LimitedStream

from cds_service.config import Config

_current = threading.local()


def remember_request(worker: Any, req: Any) -> None:
    """gunicorn pre_request hook: keep gunicorn's request object for this thread, so the app
    can ask gunicorn to close the connection after the response."""
    _current.req = req


def _force_close(environ: dict[str, Any]) -> None:
    req = getattr(_current, "req", None)
    if req is not None and environ.get("gunicorn.socket") is not None:
        req.force_close()


BODY_READ = "cds_service.body_read"


def mark_body_read(environ: dict[str, Any]) -> None:
    """The view read the request body to its end: the connection can be reused as it is."""
    environ[BODY_READ] = True


def _unread_bytes(req: Request, status: int) -> int | None:
    """Bytes of body still unread (0 = none), or None when that cannot be known (chunked)."""
    if req.environ.get(BODY_READ):
        return 0
    length = req.content_length
    chunked = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
    if not length and not chunked:
        return 0
    stream = req.__dict__.get("stream")  # set only if the view opened the body
    if stream is not None and status != 413:
        if isinstance(stream, LimitedStream):
            return 0 if stream.is_exhausted else None
        return 0  # an unlimited (chunked) stream the view read to its end
    return length if length and not chunked else None


def _drain(environ: dict[str, Any], length: int, seconds: float) -> bool:
    """Read and discard `length` bytes of body; False when that did not finish in time."""
    sock = environ.get("gunicorn.socket")
    previous = sock.gettimeout() if sock is not None else None
    until = time.monotonic() + seconds
    stream = LimitedStream(environ["wsgi.input"], length)
    try:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return False
            if sock is not None:
                sock.settimeout(left)
            if not stream.read(256 * 1024):
                return stream.is_exhausted
    except (OSError, ValueError, ClientDisconnected):
        return False
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)


def install(app: Flask, config: Config) -> None:
    @app.after_request
    def settle_unread_body(response: Response) -> Response:
        unread = _unread_bytes(request, response.status_code)
        if unread == 0:
            return response
        environ = request.environ
        if (
            unread is None
            or unread > config.http_drain_max_bytes
            or not _drain(environ, unread, config.http_drain_seconds)
        ):
            _force_close(environ)
        return response
