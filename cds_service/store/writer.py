"""Card-log writes off the request's critical path: a bounded queue and one writer thread.

The hook view only puts an entry on the queue (never blocks, never raises). The thread
collects entries for up to half a second (or 500 of them) and writes them in one
transaction, so the card log costs one database round trip per batch, not per hook call. A
full queue or a failed write loses those entries, counted in cds_card_log_lost_total; after a
failure the thread waits (up to 5 s) before trying again, so a database outage costs a
bounded number of entries and never a hook call. The thread also purges old rows about once
an hour, when the queue is idle.

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
        self._last_purge = time.monotonic() - self._purge_interval  # purge when first idle
        self.lost = 0
        self.written = 0

    def _ensure_running(self) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._reset()  # forked: the parent's thread does not exist here
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._stop.clear()
                    self._thread = threading.Thread(target=self._run, name="card-log", daemon=True)
                    self._thread.start()

    def submit(self, entry: CardLogEntry | PendingEntry) -> None:
        """Queue one hook call's entry; never blocks, never raises."""
        try:
            self._ensure_running()
            self._queue.put_nowait(entry)
        except queue.Full:
            self._lose(1 + card_count(entry), "queue-full")
        except Exception as exc:  # noqa: BLE001 - the hook call must still answer
            log.error(
                "card-log-submit-failed", extra={"error": type(exc).__name__, "where": where(exc)}
            )
            self._lose(1 + card_count(entry), "error")
        # the queue-depth gauge is set by the writer thread after each batch, not per call

    def _lose(self, count: int, reason: str) -> None:
        self.lost += count
        metrics.CARD_LOG_LOST.labels(reason).inc(count)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._maybe_purge(idle=True)
                continue
            batch = [first]
            if self._queue.qsize() < BATCH_SIZE - 1:
                # Let a batch gather without waking this thread on every put (the request
                # threads would pay for the wake-ups); a full batch is written at once.
                self._stop.wait(self._linger)
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = self._built(batch)
            try:
                written = self._store.write_card_log(entries)
                self.written += written
                metrics.CARD_LOG_WRITTEN.inc(written)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - counted; the thread must live on
                failures += 1
                metrics.STORE_FAILURES.labels("card_log").inc()
                self._lose(
                    sum(1 + len(e.cards) for e in entries),
                    "store-unavailable" if isinstance(exc, StoreUnavailable) else "error",
                )
                if not isinstance(exc, StoreUnavailable):
                    log.error(
                        "card-log-write-failed",
                        extra={"error": type(exc).__name__, "where": where(exc)},
                    )
            finally:
                for _ in batch:
                    self._queue.task_done()
                metrics.CARD_LOG_QUEUE.set(self._queue.qsize())
            if failures:
                self._stop.wait(min(MAX_BACKOFF, 0.25 * 2 ** min(failures, 5)))
            else:
                self._maybe_purge(idle=False)

    def _built(self, batch: list[CardLogEntry | PendingEntry]) -> list[CardLogEntry]:
        """The batch's entries, each pending one built here (one that fails to build is
        counted as lost and logged, never raised)."""
        entries: list[CardLogEntry] = []
        for item in batch:
            if not isinstance(item, PendingEntry):
                entries.append(item)
                continue
            try:
                entries.append(item.build())
            except Exception as exc:  # noqa: BLE001 - one bad entry must not lose the batch
                log.error("card-log-entry-failed", extra={"error": type(exc).__name__})
                self._lose(1 + item.card_count, "error")
        return entries

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
        """Write what is queued (up to `timeout`), then stop the thread."""
        if self._pid == os.getpid() and self._thread is not None:
            self._stop.set()  # no more lingering: write what is there
            self._thread.join(timeout)
            self._drain()

    def _drain(self) -> None:
        """Write, in this thread, whatever the stopped writer thread left in the queue."""
        batch: list[CardLogEntry | PendingEntry] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        entries = self._built(batch)
        try:
            written = self._store.write_card_log(entries)
            self.written += written
            metrics.CARD_LOG_WRITTEN.inc(written)
        except Exception:  # noqa: BLE001 - counted, as in the thread
            metrics.STORE_FAILURES.labels("card_log").inc()
            self._lose(sum(1 + len(e.cards) for e in entries), "store-unavailable")
        finally:
            for _ in batch:
                self._queue.task_done()
