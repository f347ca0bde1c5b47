"""Pseudonym key rotation: a key ring, a key id with each row, `cds-service db rotate-key`."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import SIGN, CheckedClient, close_app, feedback_item, make_app, shipped
from servers import PATIENT_ID, PostgresServer, cards_body

from cds_service.config import Config, ConfigError
from cds_service.store import Store, open_store
from cds_service.store.pseudonym import Pseudonymizer, key_id, rekey

K0 = b"first-pseudonym-key-0123456789abcdef"
K1 = b"second-pseudonym-key-0123456789abcdef"
FEEDBACK = SIGN + "/feedback"


def _sign(app: Any) -> list[dict[str, Any]]:
    response = CheckedClient(app.test_client()).post(SIGN, cards_body())
    assert response.status_code == 200
    assert app.extensions["cds_card_log"].flush(10)
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def _rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(query).fetchall()


def test_a_ring_of_one_key_is_the_key_as_before_and_later_keys_rekey_its_result() -> None:
    """A single key gives the same HMAC as before rotation existed; a ring of two gives the
    first key's HMAC re-keyed by the second, which rekey_from reproduces from the stored
    value alone (no patient id); an id outside the ring is not re-keyed."""
    old = hmac.new(K0, f"https://fhir\x1f{PATIENT_ID}".encode(), hashlib.sha256).hexdigest()
    one, two = Pseudonymizer(K0), Pseudonymizer((K0, K1))
    assert one.patient_key("https://fhir/", PATIENT_ID) == old
    assert two.patient_key("https://fhir", PATIENT_ID) == rekey(K1, old) != old
    assert two.rekey_from(None, old) == two.rekey_from(key_id(K0), old) == rekey(K1, old)
    assert two.rekey_from(key_id(K1), rekey(K1, old)) == rekey(K1, old)  # already current
    assert two.rekey_from("0123456789abcdef", old) is None
    assert (one.key_id, two.key_id, two.key_ids) == (
        key_id(K0),
        key_id(K1),
        (key_id(K0), key_id(K1)),
    )
    assert two.key("encounter", "https://fhir", "e1") == rekey(
        K1, one.key("encounter", "https://fhir", "e1")
    )
    assert two.derived_keys(b"card-ids")[1] == one.derived_key(b"card-ids")
    assert two.derived_key(b"card-ids") != one.derived_key(b"card-ids")


def test_the_ring_comes_from_previous_keys_or_the_key_file_and_is_checked(tmp_path: Path) -> None:
    """CDS_PSEUDONYM_PREVIOUS_KEYS (oldest first) precede CDS_PSEUDONYM_KEY, a key file holds
    one key a line; a short or repeated key in the ring, or previous keys without a current
    one, stop start-up with a message naming the setting."""
    from cds_service.store.keys import pseudonymizer_for

    env = Config(
        database_url="sqlite://", pseudonym_key=K1.decode(), pseudonym_previous_keys=K0.decode()
    )
    assert pseudonymizer_for(env).key_ids == (key_id(K0), key_id(K1))
    ring = tmp_path / "ring.key"
    ring.write_bytes(K0 + b"\n# rotated 2026-12-07\n" + K1 + b"\n")
    ring.chmod(0o600)
    assert pseudonymizer_for(
        Config(database_url="sqlite://", pseudonym_key_file=str(ring))
    ).key_id == key_id(K1)
    bad = [
        Config(
            database_url="sqlite://", pseudonym_key=K1.decode(), pseudonym_previous_keys="short"
        ),
        Config(
            database_url="sqlite://", pseudonym_key=K1.decode(), pseudonym_previous_keys=K1.decode()
        ),
        Config(database_url="sqlite://", pseudonym_previous_keys=K0.decode()),
    ]
    for config in bad:
        with pytest.raises(ConfigError, match="CDS_PSEUDONYM"):
            pseudonymizer_for(config)


def test_rotation_keeps_one_pseudonym_per_patient_and_the_old_cards_feedback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `db rotate-key --new-key-file` and a restart, new cards carry the new key id,
    the rows written before (including rows from before key ids, NULL) are re-keyed so the
    same patient has one pseudonym, feedback on a card shown before the rotation is still
    accepted, nothing is lost and the patient id is stored nowhere."""
    from cds_service.cli import main

    data = tmp_path / "data"
    database = data / "cds.sqlite3"
    app = make_app(data_dir=str(data))
    before = _sign(app)
    order = _sign(app)  # a second call: order_call rows too
    close_app(app)
    old_id = key_id((data / "pseudonym.key").read_bytes().strip())
    assert {r[0] for r in _rows(database, "SELECT key_id FROM issued_card")} == {old_id}
    # rows from before migration 0006 have no key id: they are the ring's first key
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE order_call SET key_id = NULL")
    cards_before = len(_rows(database, "SELECT card_uuid FROM issued_card"))
    new_key = tmp_path / "new.key"
    new_key.write_bytes(K1 + b"\n")
    monkeypatch.setenv("CDS_DATA_DIR", str(data))
    assert main(["db", "rotate-key", "--new-key-file", str(new_key)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed.splitlines()[-1])
    assert result["key_id"] == key_id(K1)
    assert result["rekeyed"]["issued_card"] == cards_before
    assert result["rekeyed"]["order_call"] == 2 and result["rekeyed"]["unknown"] == 0
    assert main(["db", "rotate-key"]) == 0  # again: nothing left to re-key
    assert json.loads(capsys.readouterr().out)["rekeyed"]["issued_card"] == 0

    app = make_app(data_dir=str(data))
    try:
        after = _sign(app)
        client = CheckedClient(app.test_client())
        from conftest import card_ids_for

        old_card = next(
            c for c in before if c["source"]["topic"]["code"] == "opioid-benzodiazepine"
        )
        item = feedback_item(card_ids_for(app), "accepted", card=old_card["uuid"])
        item["acceptedSuggestions"] = [{"id": old_card["suggestions"][0]["uuid"]}]
        assert client.post(FEEDBACK, {"feedback": [item]}).status_code == 200
        assert shipped([c["source"]["topic"]["code"] for c in after])
    finally:
        close_app(app)
    rows = _rows(database, "SELECT card_uuid, patient_key, key_id, prescriber_key FROM issued_card")
    assert len(rows) == cards_before + len(after)  # nothing lost
    assert {r[2] for r in rows} == {key_id(K1)}
    assert len({r[1] for r in rows}) == 1  # one patient, one pseudonym across the rotation
    calls = _rows(database, "SELECT encounter_key, key_id, draft_keys FROM order_call")
    assert {c[1] for c in calls} == {key_id(K1)} and len(calls) == 3
    assert len({c[0] for c in calls}) == 1  # the same encounter before and after
    assert len({c[2] for c in calls}) == 1  # the same drafts, keyed the same
    assert _rows(database, "SELECT count(*) FROM feedback") == [(1,)]
    raw = b"".join(p.read_bytes() for p in data.glob("cds.sqlite3*")).lower()
    assert PATIENT_ID.lower().encode() not in raw
    assert len(order) == len(before)


def test_rotate_key_refuses_what_it_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the key in CDS_PSEUDONYM_KEY, --new-key-file explains the environment route; a
    short new key is refused; rows under a key id that is not in the ring are left as they
    are and reported (exit 1)."""
    from cds_service.cli import main

    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDS_PSEUDONYM_KEY", K0.decode())
    new_key = tmp_path / "new.key"
    new_key.write_bytes(K1)
    assert main(["db", "rotate-key", "--new-key-file", str(new_key)]) == 2
    assert "CDS_PSEUDONYM_PREVIOUS_KEYS" in capsys.readouterr().err
    new_key.write_bytes(b"short")
    monkeypatch.delenv("CDS_PSEUDONYM_KEY")
    assert main(["db", "rotate-key", "--new-key-file", str(new_key)]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err
    app = make_app(data_dir=str(tmp_path / "data"))
    _sign(app)
    close_app(app)
    database = tmp_path / "data" / "cds.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE issued_card SET key_id = 'ffffffffffffffff'")
    kept = _rows(database, "SELECT patient_key FROM issued_card")
    assert main(["db", "rotate-key"]) == 1
    assert json.loads(capsys.readouterr().out)["rekeyed"]["unknown"] == len(kept)
    assert _rows(database, "SELECT patient_key FROM issued_card") == kept


def _report_without_keys(store: Store) -> dict[str, Any]:
    import datetime as dt

    from decision_seed import DAYS, FIRST_DAY, FIRST_LINE

    from cds_service.analytics.report import Period, build_report, context_for
    from cds_service.rules.registry import default_rules
    from cds_service.settings import load_settings

    rules = default_rules()
    settings = load_settings(
        {r.id: r.settings_type for r in rules},
        overrides={"rules": {FIRST_LINE: {"mode": "silent"}}},
    )
    context = context_for(rules, settings.rules, knowledge_version="test-knowledge")
    period = Period(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    report = build_report(store, context, period)
    report.pop("database", None)
    report.pop("generated_at", None)
    return report


@pytest.fixture(params=["sqlite", "postgresql"])
def rotated(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Config, Config]:
    """Configs of one database before (K0) and after (K0, K1) a rotation."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cds.sqlite3"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database("rot")
    return (
        Config(database_url=url, pseudonym_key=K0.decode()),
        Config(database_url=url, pseudonym_key=K1.decode(), pseudonym_previous_keys=K0.decode()),
    )


def test_the_report_answers_the_same_after_rotation(rotated: tuple[Config, Config]) -> None:
    """The governance report over a seeded store (patients, prescribers, decisions, acted-on
    and feedback) is the same after every row is re-keyed to a new key (SQLite and
    PostgreSQL)."""
    from decision_seed import make_decision_seed, write_decision_seed

    from cds_service.store.engine import database_url, make_engine
    from cds_service.store.migrate import upgrade

    first, second = rotated
    engine = make_engine(database_url(first), 5.0, statement_timeout=False)
    upgrade(engine)
    engine.dispose()
    store = open_store(first)
    write_decision_seed(store, make_decision_seed())
    expected = _report_without_keys(store)
    keyed_before = store.key_ids()
    store.close()
    store = open_store(second)
    try:
        done = store.rotate_keys(batch=7)  # several transactions per table
        assert done["unknown"] == 0
        assert sum(done.values()) == sum(keyed_before.values())
        assert store.key_ids() == {key_id(K1): sum(keyed_before.values())}
        assert _report_without_keys(store) == expected
    finally:
        store.close()
