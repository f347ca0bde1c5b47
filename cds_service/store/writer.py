"""Card-log writes off the request's critical path: a bounded queue and one writer thread.

The hook view only puts an entry on the queue (never blocks, never raises). The thread
collects entries for up to half a second (or 500 of them) and writes them in one
transaction, so the card log costs one database round trip per batch, not per hook call. A
failed write is retried with backoff (0.2 s doubling to 5 s) and its entries stay queued;
entries are lost only when the bounded queue (CDS_CARD_LOG_QUEUE) is full, or when shutdown
cannot write them within its deadline: both counted in cds_card_log_lost_total (reason
queue-full / shutdown) and logged. A database outage therefore costs at most what overflows
the queue, and never a hook call. SIGTERM and normal shutdown flush (gunicorn's worker_exit
calls close()). The thread also purges old rows about once an hour, when the queue is idle.

Gunicorn forks workers after create_app: a worker starts its own thread (and queue) on first
use.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from cds_service import metrics
from cds_service.logs import where
from cds_service.store.cardlog import CardLogEntry, PendingEntry, card_count
from cds_service.store.db import Store
from cds_service.store.errors import StoreUnavailable

log = logging.getLogger("cds_service.store")

BATCH_SIZE = 500
LINGER = 0.5  # seconds a batch may wait for more entries: one transaction, not one per call
PURGE_INTERVAL = 3600.0
MAX_BACKOFF = 5.0
# Seconds the idle thread waits for an entry before it looks at the stop flag and the purge
# clock, so close() may wait this long for it. Read at each wait: a test seam (tests/conftest.py
# shortens it, or every test app's teardown would wait for it).
IDLE_POLL = 0.5


class CardLogWriter:
    def __init__(
        self,
        store: Store,
        capacity: int,
        purge_interval: float = PURGE_INTERVAL,
        linger: float = LINGER,
    ) -> None:
        self._store = store
        self._capacity = capacity
        self._purge_interval = purge_interval
        self._linger = linger
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.Queue[CardLogEntry | PendingEntry] = queue.Queue(self._capacity)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hurry = threading.Event()  # set at shutdown: stop lingering for more entries
        self._last_purge = time.monotonic() - self._purge_interval  # purge when first idle
        self.lost = 0
        self.written = 0
        self._held: list[CardLogEntry] = []
        self._bug = False
        self._last_full_log = 0.0

    def _ensure_running(self) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._reset()  # forked: the parent's thread does not exist here
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._stop.clear()
                    self._hurry.clear()
                    self._thread = threading.Thread(target=self._run, name="card-log", daemon=True)
                    self._thread.start()

    def submit(self, entry: CardLogEntry | PendingEntry) -> None:
        """Queue one hook call's entry; never blocks, never raises. The queue-depth gauge is
        set by the writer thread (each batch it takes and writes), not here: in multiprocess
        mode every gauge write is a pid check and an mmap write on the request thread."""
        try:
            self._ensure_running()
            self._queue.put_nowait(entry)
        except queue.Full:
            metrics.CARD_LOG_QUEUE.set(self._queue.qsize())
            self._lose(1 + card_count(entry), "queue-full")
            now = time.monotonic()
            if now - self._last_full_log > 10.0:  # logged at most every 10 s, counted always
                self._last_full_log = now
                log.error("card-log-queue-full", extra={"reason": f"capacity {self._capacity}"})
        except Exception as exc:  # noqa: BLE001 - the hook call must still answer
            log.error(
                "card-log-submit-failed", extra={"error": type(exc).__name__, "where": where(exc)}
            )
            self._lose(1 + card_count(entry), "error")

    def _lose(self, count: int, reason: str) -> None:
        self.lost += count
        metrics.CARD_LOG_LOST.labels(reason).inc(count)

    def _run(self) -> None:
        failures = 0
        batch: list[CardLogEntry] = []  # taken from the queue (built), not yet written
        while not self._stop.is_set():
            if not batch:
                try:
                    batch = self._built([self._queue.get(timeout=IDLE_POLL)])
                except queue.Empty:
                    self._maybe_purge(idle=True)
                    continue
                if self._queue.qsize() < BATCH_SIZE - 1:
                    # Let a batch gather without waking this thread on every put (the request
                    # threads would pay for the wake-ups); a full batch is written at once.
                    self._hurry.wait(self._linger)
            self._fill(batch)
            if self._write(batch):
                batch = []
                failures = 0
                self._maybe_purge(idle=False)
                continue
            # Keep the batch and retry with backoff: entries are only ever lost when the
            # bounded queue is full (submit counts them) or at shutdown (close counts them).
            failures += 1
            if self._bug and failures >= 3:
                batch = self._write_one_by_one(batch)  # a bug, not an outage: isolate it
            self._stop.wait(min(MAX_BACKOFF, 0.1 * 2 ** min(failures, 6)))
        self._held = batch  # close() writes or counts what the stopped thread still held

    def _fill(self, batch: list[CardLogEntry]) -> None:
        metrics.CARD_LOG_QUEUE.set(self._queue.qsize() + len(batch))  # the backlog found
        taken: list[CardLogEntry | PendingEntry] = []
        while len(batch) + len(taken) < BATCH_SIZE:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch += self._built(taken)

    def _built(self, items: list[CardLogEntry | PendingEntry]) -> list[CardLogEntry]:
        """The entries, each pending one built here, in the writer thread, off the request's
        critical path; one that fails to build is counted lost and logged, never raised."""
        entries: list[CardLogEntry] = []
        for item in items:
            if not isinstance(item, PendingEntry):
                entries.append(item)
                continue
            try:
                entries.append(item.build())
            except Exception as exc:  # noqa: BLE001 - one bad entry must not lose the batch
                log.error("card-log-entry-failed", extra={"error": type(exc).__name__})
                self._lose(1 + item.card_count, "error")
                self._queue.task_done()
        return entries

    def _write_one_by_one(self, batch: list[CardLogEntry]) -> list[CardLogEntry]:
        """After repeated failures that are not an outage: write entries singly and drop the
        ones that still fail (counted "error"); returns what is left to retry."""
        left: list[CardLogEntry] = []
        for entry in batch:
            self._bug = False
            if self._write([entry]):
                continue
            if self._bug:
                self._lose(1 + len(entry.cards), "error")
                self._done([entry])
            else:
                left.append(entry)  # the database went away meanwhile: retry later
        return left

    def _write(self, batch: list[CardLogEntry]) -> bool:
        """Write one batch; True when written (its entries are then done), False to retry."""
        try:
            written = self._store.write_card_log(batch)
        except Exception as exc:  # noqa: BLE001 - counted; the thread must live on
            metrics.STORE_FAILURES.labels("card_log").inc()
            self._bug = not isinstance(exc, StoreUnavailable)
            if not isinstance(exc, StoreUnavailable):
                log.error(
                    "card-log-write-failed",
                    extra={"error": type(exc).__name__, "where": where(exc)},
                )
            return False
        self.written += written
        metrics.CARD_LOG_WRITTEN.inc(written)
        self._done(batch)
        return True

    def _done(self, batch: list[CardLogEntry]) -> None:
        for _ in batch:
            self._queue.task_done()
        metrics.CARD_LOG_QUEUE.set(self._queue.qsize())

    def _maybe_purge(self, idle: bool) -> None:
        """Purge when idle once the interval has passed (under constant load, after twice
        the interval), so purging never delays queued entries in ordinary traffic."""
        now = time.monotonic()
        if now - self._last_purge < self._purge_interval * (1 if idle else 2):
            return
        self._last_purge = now
        try:
            self._store.purge()
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            metrics.STORE_FAILURES.labels("purge").inc()
            if not isinstance(exc, StoreUnavailable):
                log.error("purge-failed", extra={"error": type(exc).__name__, "where": where(exc)})

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued entry has been written or counted as lost."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, retrying until `timeout` (SIGTERM and normal shutdown:
        gunicorn's worker_exit), then stop the thread; what still could not be written is
        counted lost ("shutdown") and logged."""
        if self._pid != os.getpid() or self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._hurry.set()
        self.flush(max(0.0, timeout - 0.5))
        self._stop.set()  # no more lingering or backoff: the thread hands over what it held
        self._thread.join(max(0.1, deadline - time.monotonic()))
        batch = list(getattr(self, "_held", []))
        self._held = []
        self._fill_all(batch)
        failures = 0
        while batch:
            chunk = batch[:BATCH_SIZE]
            if self._write(chunk):
                del batch[:BATCH_SIZE]
                continue
            failures += 1
            if time.monotonic() + 0.1 * failures > deadline:
                break
            time.sleep(0.1 * failures)
        if batch:
            count = sum(1 + len(e.cards) for e in batch)
            self._lose(count, "shutdown")
            log.error("card-log-not-flushed", extra={"reason": f"{count} entries lost"})
            self._done(batch)

    def _fill_all(self, batch: list[CardLogEntry]) -> None:
        taken: list[CardLogEntry | PendingEntry] = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch += self._built(taken)
