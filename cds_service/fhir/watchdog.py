"""A hard deadline for blocking socket work: at the deadline the socket is shut down.

A per-read socket timeout never fires while a server trickles one byte at a time, and a
deadline checked between reads is never reached while one read call (http.client's header
parsing, for instance) keeps receiving. So one watchdog thread per process keeps the armed
sockets in a heap; when a deadline passes it calls shutdown(SHUT_RDWR) on that socket, which
wakes any thread blocked in recv/send on it at once (the read sees end-of-stream or an error).
The owner disarms before it closes the socket, under the same lock, so the watchdog never
touches a file descriptor that has been closed (and perhaps reused).
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time


class SocketWatchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # token -> file descriptor
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.fired = 0  # sockets cut at their deadline (for tests and benchmarks)

    def arm(self, sock: socket.socket, deadline: float) -> int:
        """Shut `sock` down at `deadline` (time.monotonic()) unless disarmed first."""
        token = next(self._tokens)
        with self._lock:
            self._ensure_thread()
            self._armed[token] = sock.fileno()
            heapq.heappush(self._heap, (deadline, token))
            self._lock.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._lock:
            self._armed.pop(token, None)

    @property
    def armed(self) -> int:
        """How many sockets are armed now (0 when no exchange is in flight)."""
        with self._lock:
            return len(self._armed)

    def _ensure_thread(self) -> None:
        # A gunicorn worker is forked from a master that may have armed before: threads do
        # not survive fork, so the thread is (re)started in the process that needs it.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="fhir-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed: forget it
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, token = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._lock.wait(delay)
                    continue
                heapq.heappop(self._heap)
                fd = self._armed.pop(token, None)
                if fd is not None:
                    _shutdown(fd)
                    self.fired += 1


def _shutdown(fd: int) -> None:
    """shutdown(2) on a descriptor the caller still owns (the socket object stays in charge of
    closing it; a TLS socket's original object may already be detached, hence the fd)."""
    try:
        borrowed = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        borrowed.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        borrowed.detach()


WATCHDOG = SocketWatchdog()
