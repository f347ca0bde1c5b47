"""Card-log entries built by the writer thread (PendingEntry): written like ready ones, and one
that fails to build is counted as lost without losing the rest of its batch."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

from cds_service.config import Config
from cds_service.store import CardLogWriter, open_store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, PendingEntry


def _entry(card_uuid: str, when: dt.datetime) -> CardLogEntry:
    card = IssuedCard(
        card_uuid,
        "opioid-benzodiazepine",
        "opioid-lbp-order-sign",
        "order-sign",
        "warning",
        when,
        "k" * 64,
        (),
    )
    return CardLogEntry(HookCall(when.date(), "opioid-lbp-order-sign", True), (card,))


def test_pending_entries_are_built_by_the_writer_thread(tmp_path: Path) -> None:
    """A pending entry is built in the writer's thread, not the submitting one, and written;
    a failing build loses only itself (counted with its cards)."""
    store = open_store(Config(data_dir=str(tmp_path)))
    writer = CardLogWriter(store, capacity=10, linger=0.01)
    now = dt.datetime.now(dt.UTC)
    built_in: list[str] = []

    def build(card_uuid: str) -> CardLogEntry:
        built_in.append(threading.current_thread().name)
        return _entry(card_uuid, now)

    def broken() -> CardLogEntry:
        raise ValueError("cannot build")

    writer.submit(PendingEntry(lambda: build("p-1"), 1))
    writer.submit(PendingEntry(broken, 2))
    writer.submit(_entry("r-1", now))
    writer.submit(PendingEntry(lambda: build("p-2"), 1))
    assert writer.flush(10)
    assert sorted(r["card_uuid"] for r in store.issued_cards()) == ["p-1", "p-2", "r-1"]
    assert built_in == ["card-log", "card-log"]
    assert writer.lost == 3  # the broken entry: its call and its two cards
    writer.close()
