"""Store hardening: owner-only SQLite files whatever existed before, clear start-up errors
for short or published pseudonym keys, the CLI's message for out-of-range report dates,
feedback written in short bounded transactions."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Any

import pytest

from cds_service.config import Config, ConfigError
from cds_service.store import db as store_db
from cds_service.store import open_store


def test_database_files_are_private_in_a_pre_existing_directory(tmp_path: Path) -> None:
    """A data directory that already existed as 0755 with a 0644 database becomes 0700 with
    0600 files when the store opens."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    first = open_store(Config(data_dir=str(data)))
    first.close()
    database = data / "cds.sqlite3"
    database.chmod(0o644)
    data.chmod(0o755)
    store = open_store(Config(data_dir=str(data)))
    store.ping()
    store.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.glob("cds.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_new_database_file_is_never_readable_by_others(tmp_path: Path) -> None:
    """A fresh data directory gets a 0600 database even under a permissive umask."""
    import os

    previous = os.umask(0o000)
    try:
        store = open_store(Config(data_dir=str(tmp_path / "fresh")))
        store.ping()
        store.close()
    finally:
        os.umask(previous)
    for path in (tmp_path / "fresh").glob("cds.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


@pytest.mark.parametrize(
    "key,words",
    [
        ("short", "at least 16 bytes"),
        ("local-demo-pseudonym-key-not-for-production", "example key"),
    ],
)
def test_a_short_or_published_key_is_a_clear_start_up_error(
    tmp_path: Path, key: str, words: str
) -> None:
    """CDS_PSEUDONYM_KEY under 16 bytes, or the key once shipped in docker-compose.yml, stops
    start-up with a ConfigError naming the variable (no traceback from deep inside)."""
    with pytest.raises(ConfigError, match="CDS_PSEUDONYM_KEY") as raised:
        open_store(Config(data_dir=str(tmp_path), pseudonym_key=key))
    assert words in str(raised.value)


def test_a_short_key_file_is_a_clear_start_up_error(tmp_path: Path) -> None:
    """A key file holding fewer than 16 bytes is a ConfigError naming CDS_PSEUDONYM_KEY_FILE."""
    path = tmp_path / "key"
    path.write_text("tiny\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="CDS_PSEUDONYM_KEY_FILE"):
        open_store(Config(data_dir=str(tmp_path), pseudonym_key_file=str(path)))


def test_report_with_an_out_of_range_date_is_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cds-service report --until 9999-12-31` exits 2 with a message, not a traceback."""
    from cds_service.cli import main

    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path))
    assert main(["report", "--until", "9999-12-31"]) == 2
    assert "outside the dates a report covers" in capsys.readouterr().err


def test_feedback_is_written_in_bounded_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 items are written in transactions of at most FEEDBACK_BATCH items, so a large
    POST never holds the write lock for all of them at once."""
    store = open_store(Config(data_dir=str(tmp_path)))
    opened: list[str] = []
    original = store._begin

    def counting(operation: str) -> Any:
        opened.append(operation)
        return original(operation)

    monkeypatch.setattr(store, "_begin", counting)
    items = [
        {
            "card": f"card-{i}",
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-23T10:00:00Z",
            "acceptedSuggestions": [],
            "overrideReason": "palliative",
        }
        for i in range(100)
    ]
    assert store.add_feedback("svc", items, now=dt.datetime.now(dt.UTC)) == 100
    assert opened.count("feedback") == -(-100 // store_db.FEEDBACK_BATCH)
    assert store_db.FEEDBACK_BATCH <= 25
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0005_keeps_old_feedback_and_allows_a_second_answer(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Feedback stored under 0002 survives the upgrade, a different answer to the same card
    (same outcome and timestamp, another reason) is then a new row, a resend is not, and
    the downgrade keeps one row per (card, outcome, timestamp)."""
    from alembic import command
    from sqlalchemy import text

    from cds_service.store.engine import database_url, make_engine
    from cds_service.store.migrate import alembic_config, upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.sqlite3"
    else:
        url = request.getfixturevalue("postgres").new_database("f")
    config = Config(database_url=url, pseudonym_key="p" * 32)
    engine = make_engine(database_url(config), 5.0, statement_timeout=False)
    upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO feedback (card_uuid, outcome, outcome_timestamp, service_id, "
                "accepted_suggestions, override_reason, received_at, card_issued) VALUES "
                "('c-1', 'overridden', '2026-11-23T10:00:00Z', 'svc', '[]', 'palliative', "
                ":at, false)"
            ),
            {"at": dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)},
        )
    upgrade(engine)
    engine.dispose()
    store = open_store(config)
    item = {
        "card": "c-1",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
        "acceptedSuggestions": [],
        "overrideReason": "taper-in-progress",
    }
    assert store.add_feedback("svc", [item]) == 1
    assert store.add_feedback("svc", [item]) == 0
    reasons = sorted(r["override_reason"] for r in store.feedback_items())
    assert reasons == ["palliative", "taper-in-progress"]
    alembic = alembic_config()
    with store.engine.begin() as connection:
        alembic.attributes["connection"] = connection
        command.downgrade(alembic, "0002")
    with store.engine.begin() as connection:
        rows = connection.execute(text("SELECT override_reason FROM feedback")).all()
    assert [r[0] for r in rows] == ["taper-in-progress"]  # the latest answer kept
    store.close()
