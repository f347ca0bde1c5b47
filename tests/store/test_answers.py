"""One decision, one answer (docs/cards.md): a card shown at order-select and answered through
feedback is not shown again at order-sign for the same unchanged draft in the same encounter;
a changed drug or dose, or another encounter, is evaluated afresh; two replicas sharing
PostgreSQL agree; the store down means the card is shown; a site can switch it off."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, CheckedClient, close_app, make_app, read_bundle
from flask import Flask
from servers import PostgresServer

from cds_service.config import Config
from cds_service.hooks.bundle_request import request_from_bundle

SELECT = "/cds-services/opioid-lbp-order-select"
SIGN = "/cds-services/opioid-lbp-order-sign"
KEY = "answers-test-pseudonym-key-0123456789"
CO = "opioid-benzodiazepine"
START = "opioid-start-chronic-lbp"
BUNDLE = read_bundle(FIXTURES / "demo" / "demo-1-chronic-lbp-oxycodone-with-alprazolam.json")


def body(hook: str, encounter: str = "enc-1", tablets: float = 1) -> dict[str, Any]:
    """The demo patient's oxycodone order (chronic LBP, alprazolam current) as a hook call."""
    bundle = copy.deepcopy(BUNDLE)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource.get("status") == "draft":
            dose = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
            dose["value"] = tablets
    request = request_from_bundle(bundle, hook)
    if encounter:
        request["context"]["encounterId"] = encounter
    return request


def rules(response: Any) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def answer(client: CheckedClient, card: dict[str, Any], outcome: str = "overridden") -> None:
    item: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": outcome,
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
    }
    if outcome == "overridden":
        item["overrideReason"] = {"reason": card["overrideReasons"][0]}
    else:
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    response = client.post(SELECT + "/feedback", {"feedback": [item]})
    assert response.status_code == 200


def flush(app: Flask) -> None:
    assert app.extensions["cds_card_log"].flush(10)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(data_dir=str(tmp_path / "data"))
    yield app
    close_app(app)


def test_an_answered_card_is_not_shown_again_at_order_sign(sqlite_app: Flask) -> None:
    """order-select -> override the co-prescription card -> order-sign for the same draft:
    that card is not repeated; the card nobody answered still is."""
    client = CheckedClient(sqlite_app.test_client())
    first = client.post(SELECT, body("order-select"))
    assert rules(first) == [CO, START]
    flush(sqlite_app)
    answer(client, first.get_json()["cards"][0])
    again = client.post(SIGN, body("order-sign"))
    assert rules(again) == [START]
    # the start card now carries the safer alternative the answered card had offered
    labels = [s["label"] for s in again.get_json()["cards"][0]["suggestions"]]
    assert labels[0].startswith("Replace oxycodone with naproxen")


def test_an_accepted_suggestion_also_answers_the_card(sqlite_app: Flask) -> None:
    """Feedback "accepted" answers the decision too."""
    client = CheckedClient(sqlite_app.test_client())
    first = client.post(SELECT, body("order-select"))
    flush(sqlite_app)
    answer(client, first.get_json()["cards"][1], "accepted")
    assert rules(client.post(SIGN, body("order-sign"))) == [CO]


def test_a_changed_dose_or_another_encounter_is_a_new_decision(sqlite_app: Flask) -> None:
    """A changed dose, or the same draft in another encounter, is evaluated afresh; without
    feedback nothing is suppressed."""
    client = CheckedClient(sqlite_app.test_client())
    first = client.post(SELECT, body("order-select"))
    assert rules(client.post(SIGN, body("order-sign"))) == [CO, START]  # not answered yet
    flush(sqlite_app)
    answer(client, first.get_json()["cards"][0])
    assert rules(client.post(SIGN, body("order-sign", tablets=2))) == [CO, START]
    assert rules(client.post(SIGN, body("order-sign", encounter="enc-2"))) == [CO, START]
    assert rules(client.post(SIGN, body("order-sign"))) == [START]


def test_without_an_encounter_the_same_user_and_day_is_the_scope(sqlite_app: Flask) -> None:
    """The CDS Hooks sandbox sends no encounterId: the same user on the same day counts as
    one encounter."""
    client = CheckedClient(sqlite_app.test_client())
    first = client.post(SELECT, body("order-select", encounter=""))
    flush(sqlite_app)
    answer(client, first.get_json()["cards"][0])
    assert rules(client.post(SIGN, body("order-sign", encounter=""))) == [START]
    other_user = body("order-sign", encounter="")
    other_user["context"]["userId"] = "Practitioner/someone-else"
    assert rules(client.post(SIGN, other_user)) == [CO, START]


def test_an_answer_right_after_the_card_is_kept_whatever_the_card_log_timing(
    tmp_path: Path,
) -> None:
    """order-select, feedback and order-sign back to back, with the card log still lingering
    over its batch (not yet written): the answered card is not shown again. The decision
    link is written before the card leaves, not by the card-log writer."""
    from cds_service.store import CardLogWriter

    app = make_app(data_dir=str(tmp_path / "data"))
    store = app.extensions["cds_store"]
    app.extensions["cds_card_log"].close()
    held = CardLogWriter(store, 100, linger=3600)  # a batch that is not written during the test
    app.extensions["cds_card_log"] = held
    try:
        client = CheckedClient(app.test_client())
        first = client.post(SELECT, body("order-select"))
        assert rules(first) == [CO, START]
        answer(client, first.get_json()["cards"][0])
        assert held.written == 0  # the issued cards are still waiting in the writer
        assert rules(client.post(SIGN, body("order-sign"))) == [START]
    finally:
        close_app(app)


def test_an_answer_counts_with_the_card_log_off(tmp_path: Path) -> None:
    """CDS_CARD_LOG=off (no issued-card log at all): an answered decision is still not asked
    again, since the decision link does not depend on the card log."""
    app = make_app(data_dir=str(tmp_path / "data"), card_log=False)
    try:
        client = CheckedClient(app.test_client())
        first = client.post(SELECT, body("order-select"))
        answer(client, first.get_json()["cards"][0])
        assert rules(client.post(SIGN, body("order-sign"))) == [START]
    finally:
        app.extensions["cds_engine"].close()
        app.extensions["cds_store"].close()


def test_the_store_down_while_linking_never_fails_the_hook(
    sqlite_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision link that cannot be written is counted and the hook still answers 200 with
    its cards (the card may be asked again: the safe default)."""
    from cds_service.store import StoreUnavailable

    def down(*_: Any) -> None:
        raise StoreUnavailable("decisions: database unavailable")

    monkeypatch.setattr(sqlite_app.extensions["cds_store"], "record_decisions", down)
    client = CheckedClient(sqlite_app.test_client())
    first = client.post(SELECT, body("order-select"))
    assert first.status_code == 200 and rules(first) == [CO, START]


def test_a_site_can_switch_it_off(tmp_path: Path) -> None:
    """CDS_ONE_ANSWER_PER_DECISION=false: every call shows every card."""
    app = make_app(data_dir=str(tmp_path / "data"), one_answer_per_decision=False)
    client = CheckedClient(app.test_client())
    first = client.post(SELECT, body("order-select"))
    flush(app)
    answer(client, first.get_json()["cards"][0])
    assert rules(client.post(SIGN, body("order-sign"))) == [CO, START]
    close_app(app)


def test_the_store_keeps_no_identifier(sqlite_app: Flask) -> None:
    """The decision table holds digests only: no patient, encounter or user id."""
    client = CheckedClient(sqlite_app.test_client())
    client.post(SELECT, body("order-select", encounter="enc-secret-77"))
    flush(sqlite_app)
    store = sqlite_app.extensions["cds_store"]
    from cds_service.store.schema import card_decision

    rows = store._rows(card_decision.select())
    assert len(rows) == 2
    text = json.dumps(rows, default=str)
    for secret in ("enc-secret-77", "demo-rivera", "Practitioner/example"):
        assert secret not in text


# --- PostgreSQL: two replicas, and the store down ---------------------------------------


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer) -> Iterator[tuple[Flask, Flask, PostgresServer]]:
    url = postgres.new_database("ans", migrated=True)
    one = make_app(database_url=url, pseudonym_key=KEY, database_timeout=1.0)
    two = make_app(database_url=url, pseudonym_key=KEY, database_timeout=1.0)
    yield one, two, postgres
    close_app(one)
    close_app(two)


def test_two_replicas_on_postgresql_agree(replicas: tuple[Flask, Flask, PostgresServer]) -> None:
    """The card is shown by replica one, answered through replica two, and neither repeats
    it at order-sign."""
    one, two, _ = replicas
    a, b = CheckedClient(one.test_client()), CheckedClient(two.test_client())
    first = a.post(SELECT, body("order-select", encounter="pg-1"))
    assert rules(first) == [CO, START]
    flush(one)
    answer(b, first.get_json()["cards"][0])
    assert rules(b.post(SIGN, body("order-sign", encounter="pg-1"))) == [START]
    assert rules(a.post(SIGN, body("order-sign", encounter="pg-1"))) == [START]


def test_replicas_agree_on_an_answer_given_at_once(
    replicas: tuple[Flask, Flask, PostgresServer],
) -> None:
    """Replica one shows the card, replica two takes the answer straight away (the card log
    not flushed) and replica one's order-sign does not repeat it: the link is in the
    database before the card leaves."""
    one, two, _ = replicas
    a, b = CheckedClient(one.test_client()), CheckedClient(two.test_client())
    first = a.post(SELECT, body("order-select", encounter="pg-3"))
    assert rules(first) == [CO, START]
    answer(b, first.get_json()["cards"][0])
    assert rules(a.post(SIGN, body("order-sign", encounter="pg-3"))) == [START]


def test_with_the_store_down_the_card_is_shown(
    replicas: tuple[Flask, Flask, PostgresServer],
) -> None:
    """An answered decision, then the database stops: order-sign shows the card again (the
    safe default) and still answers 200; back up, the answer counts again."""
    one, _, server = replicas
    a = CheckedClient(one.test_client())
    first = a.post(SELECT, body("order-select", encounter="pg-2"))
    flush(one)
    answer(a, first.get_json()["cards"][0])
    assert rules(a.post(SIGN, body("order-sign", encounter="pg-2"))) == [START]
    server.stop("immediate")
    try:
        down = a.post(SIGN, body("order-sign", encounter="pg-2"))
        assert down.status_code == 200
        assert rules(down) == [CO, START]
    finally:
        server.start()
    assert rules(a.post(SIGN, body("order-sign", encounter="pg-2"))) == [START]


def test_the_answers_lookup_is_right_for_any_number_of_keys(tmp_path: Path) -> None:
    """Store.answered finds exactly the answered keys whether a call brings one, several or
    more keys than it keeps prepared statements for, and reusing a statement mixes no keys."""
    import datetime as dt
    import hashlib

    from cds_service.store import open_store
    from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard

    def key(index: int) -> str:
        return hashlib.sha256(f"decision-{index}".encode()).hexdigest()

    store = open_store(Config(data_dir=str(tmp_path / "data")))
    now = dt.datetime.now(dt.UTC)
    cards = tuple(
        IssuedCard(
            card_uuid=f"card-{i}",
            rule_id=CO,
            service_id="opioid-lbp-order-select",
            hook="order-select",
            indicator="warning",
            issued_at=now,
            patient_key="0" * 64,
            suggestions=(),
            decision=key(i),
        )
        for i in range(40)
    )
    store.write_card_log([CardLogEntry(HookCall(now.date(), "s", True), cards)])
    answered = {i for i in range(40) if i % 3 == 0}
    store.add_feedback(
        "opioid-lbp-order-select",
        [
            {
                "card": f"card-{i}",
                "outcome": "overridden",
                "acceptedSuggestions": [],
                "overrideReason": "palliative",
                "outcomeTimestamp": "t",
            }
            for i in sorted(answered)
        ],
    )
    try:
        for count in (1, 2, 3, 2, 1, 17, 25, 40, 17):
            for start in (0, 1, 40 - count):
                indices = range(start, start + count)
                expected = {key(i) for i in indices if i in answered}
                assert store.answered([key(i) for i in indices]) == expected
        assert store.answered([key(100), key(101)]) == set()
        assert store.answered([]) == set()
    finally:
        store.close()


def test_each_thread_keeps_one_connection_and_a_broken_one_is_replaced(tmp_path: Path) -> None:
    """On a SQLite file the answers query and the decision links run on each thread's own
    connection: reused call after call, seeing another thread's links at once, replaced after
    a failed statement, and closed with the store."""
    import datetime as dt
    import hashlib
    import sqlite3
    import threading

    from cds_service.store import StoreUnavailable, open_store
    from cds_service.store.engine import Prepared

    store = open_store(Config(data_dir=str(tmp_path / "data"), worker_threads=4))
    now = dt.datetime.now(dt.UTC)
    key = hashlib.sha256(b"decision").hexdigest()
    assert store.answered([key]) == set()
    first = store._local.connection
    store.record_decisions({"card-1": key}, now)
    assert store._local.connection is first  # reused, not checked out again
    assert not first.in_transaction  # committed: nothing left open

    seen: list[Any] = []

    def other_thread() -> None:
        store.record_decisions({"card-2": key}, now)
        seen.append(store._local.connection)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen and seen[0] is not first
    store.add_feedback(
        "opioid-lbp-order-select",
        [
            {
                "card": "card-2",
                "outcome": "overridden",
                "acceptedSuggestions": [],
                "outcomeTimestamp": "t",
                "overrideReason": "palliative",
            }
        ],
    )
    assert store.answered([key]) == {key}  # the other thread's link, read on this one

    broken: Prepared = ("SELECT no_such_column FROM card_decision", False, [], {})
    with pytest.raises(StoreUnavailable):
        store._run_hot("answers", broken, {})
    assert store.answered([key]) == {key}
    assert store._local.connection is not first  # the failed connection was dropped
    with pytest.raises(sqlite3.ProgrammingError):
        first.cursor()  # and closed

    current = store._local.connection
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        current.cursor()
