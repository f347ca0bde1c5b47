"""The card-log writer keeps entries through failed writes (retry with backoff), drops only
when its bounded queue is full, isolates an entry that fails for a reason other than an
outage, and flushes at shutdown, counting what it could not write."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from cds_service.config import Config
from cds_service.store import CardLogWriter, open_store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard
from cds_service.store.db import Store
from cds_service.store.errors import StoreUnavailable


def _lost(reason: str) -> float:
    return REGISTRY.get_sample_value("cds_card_log_lost_total", {"reason": reason}) or 0.0


def _entry(card_uuid: str) -> CardLogEntry:
    when = dt.datetime.now(dt.UTC)
    card = IssuedCard(
        card_uuid, "opioid-benzodiazepine", "svc", "order-sign", "warning", when, "k" * 64, ()
    )
    return CardLogEntry(HookCall(when.date(), "svc", True), (card,))


class FlakyStore:
    """Wraps a real store; the first `failures` writes raise StoreUnavailable (or `error`)."""

    def __init__(self, store: Store, failures: int, error: type[Exception] = StoreUnavailable):
        self.store = store
        self.failures = failures
        self.error = error
        self.attempts = 0
        self.poison: set[str] = set()
        self.lock = threading.Lock()

    def write_card_log(self, entries: Sequence[CardLogEntry]) -> int:
        with self.lock:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                raise self.error("down")
        if any(c.card_uuid in self.poison for e in entries for c in e.cards):
            raise ValueError("poison")
        return self.store.write_card_log(entries)

    def purge(self) -> dict[str, int]:
        return {}


def test_failed_writes_are_retried_until_they_succeed(tmp_path: Path) -> None:
    """Three failed writes in a row lose nothing: every entry is written once the store is
    back, and nothing is counted lost."""
    store = open_store(Config(data_dir=str(tmp_path)))
    flaky = FlakyStore(store, failures=3)
    writer = CardLogWriter(flaky, capacity=1000, linger=0.01)  # type: ignore[arg-type]
    before = sum(_lost(r) for r in ("store-unavailable", "error", "queue-full", "shutdown"))
    for index in range(50):
        writer.submit(_entry(f"r-{index}"))
    assert writer.flush(30)
    assert flaky.attempts >= 4
    assert len(store.issued_cards()) == 50
    assert writer.lost == 0
    after = sum(_lost(r) for r in ("store-unavailable", "error", "queue-full", "shutdown"))
    assert after == before
    writer.close()
    store.close()


def test_an_entry_that_fails_for_a_bug_is_isolated_and_counted(tmp_path: Path) -> None:
    """An entry that keeps failing with an error other than an outage is dropped alone
    (counted "error") after a few tries; the rest of its batch is written."""
    store = open_store(Config(data_dir=str(tmp_path)))
    flaky = FlakyStore(store, failures=0)
    flaky.poison = {"bad"}
    writer = CardLogWriter(flaky, capacity=1000, linger=0.2)  # type: ignore[arg-type]
    before = _lost("error")
    for name in ("good-1", "bad", "good-2"):
        writer.submit(_entry(name))
    assert writer.flush(30)
    assert {r["card_uuid"] for r in store.issued_cards()} == {"good-1", "good-2"}
    assert _lost("error") - before == 2  # the card and its hook-call count
    writer.close()
    store.close()


def test_shutdown_writes_what_is_queued(tmp_path: Path) -> None:
    """close() writes the queued entries (SIGTERM goes through gunicorn's worker_exit)."""
    store = open_store(Config(data_dir=str(tmp_path)))
    writer = CardLogWriter(store, capacity=1000, linger=5.0)  # would linger past the test
    for index in range(30):
        writer.submit(_entry(f"s-{index}"))
    writer.close(timeout=5.0)
    assert len(store.issued_cards()) == 30
    store.close()


def test_shutdown_counts_what_it_cannot_write(tmp_path: Any) -> None:
    """With the store down at shutdown the entries are counted lost as "shutdown"."""
    store = open_store(Config(data_dir=str(tmp_path)))
    flaky = FlakyStore(store, failures=10**6)
    writer = CardLogWriter(flaky, capacity=1000, linger=0.01)  # type: ignore[arg-type]
    before = _lost("shutdown")
    for index in range(3):
        writer.submit(_entry(f"d-{index}"))
    writer.close(timeout=1.0)
    assert _lost("shutdown") - before == 6
    assert writer.pending() == 0
    store.close()
