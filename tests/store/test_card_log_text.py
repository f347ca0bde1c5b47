"""The card log's JSON and date-time columns: stored as the text SQLAlchemy's own conversions
write (json.dumps, SQLite's date-time format), so every reader sees what it saw before."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

from sqlalchemy import JSON, DateTime

from cds_service.config import Config
from cds_service.store import open_store
from cds_service.store.card_writes import stdlib_json_text
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, OrderCall
from cds_service.store.engine import database_url


def test_stdlib_json_text_is_json_dumps() -> None:
    """The reusable encoder gives json.dumps' text for the card log's value shapes, escapes,
    non-ASCII text and lone surrogates included."""
    values = [
        [],
        ["a", "b"],
        [{"uuid": "u-1", "key": None, "label": 'Replace {drug} "x" \\ é \ud800'}],
        {"nested": [1, 2.5, True, None]},
        ["patient", "encounter:e1", "rule", ["oxycodone|5|30"]],
    ]
    for value in values:
        assert stdlib_json_text(value) == json.dumps(value)


def test_card_log_columns_hold_the_text_sqlalchemy_writes(tmp_path: Path) -> None:
    """A written entry's JSON and date-time columns are byte for byte what SQLAlchemy's
    JSON and DateTime conversions give for the same values."""
    config = Config(data_dir=str(tmp_path))
    store = open_store(config)
    when = dt.datetime(2026, 12, 7, 10, 30, 5, 123456, tzinfo=dt.UTC)
    suggestions = ({"uuid": "s-1", "key": "swap", "label": "Replace {drug} with naproxen é"},)
    card = IssuedCard(
        "c-1",
        "opioid-start-chronic-lbp",
        "opioid-lbp-order-sign",
        "order-sign",
        "warning",
        when,
        "k" * 64,
        suggestions,
        covers=("first-line-therapy-not-tried",),
        decision="d" * 64,
    )
    order = OrderCall(
        when, "opioid-lbp-order-sign", "order-sign", "d" * 64, True, "e" * 64,
        ("x" * 64,), ("x" * 64, "y" * 64), ("opioid",), None,
    )  # fmt: skip
    store.write_card_log(
        [CardLogEntry(HookCall(when.date(), "opioid-lbp-order-sign", True, order), (card,))]
    )
    dialect = store.engine.dialect
    as_json = JSON().dialect_impl(dialect).bind_processor(dialect)
    as_time = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert as_json is not None and as_time is not None
    with sqlite3.connect(str(database_url(config).database)) as db:
        stored = db.execute(
            "SELECT suggestions, covers, issued_at FROM issued_card WHERE card_uuid = 'c-1'"
        ).fetchone()
        drafts = db.execute(
            "SELECT decision_drafts, draft_keys, classes FROM order_call"
        ).fetchone()
    assert stored == (
        as_json([dict(s) for s in suggestions]),
        as_json(list(card.covers)),
        as_time(when),
    )
    assert drafts == tuple(
        as_json(list(v)) for v in (order.decision_drafts, order.draft_keys, order.classes)
    )
    assert store.issued_cards()[0]["suggestions"] == [dict(s) for s in suggestions]
    store.close()
