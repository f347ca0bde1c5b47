"""Two `cds-service serve` replicas sharing a throwaway PostgreSQL server: replays, duplicate
feedback and restarts behave as one service."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import card_ids_for, feedback_item
from jwt_keys import BASE, ISS, JWKS, token
from servers import PostgresServer, Service, cards_body, start_all, stop_all

from cds_service.config import Config
from cds_service.store import Store, open_store

SIGN = "/cds-services/opioid-lbp-order-sign"
FEEDBACK = SIGN + "/feedback"
PSEUDONYM_KEY = "replica-test-pseudonym-key-0123456789"
LATER = "2026-11-23T11:00:00+01:00"


@pytest.fixture(scope="module")
def replicas(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Service]]:
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("replicas")
    issuers = home / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    env = {
        "CDS_DATABASE_URL": postgres.url,
        "CDS_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "CDS_AUTH": "required",
        "CDS_PUBLIC_BASE_URL": BASE,
        "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        "XDG_DATA_HOME": str(home),
    }
    upgrade = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "db", "upgrade"],
        env={**Service(env).env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert postgres.password not in upgrade.stdout + upgrade.stderr
    services = [Service(env), Service(env)]
    start_all(services)
    try:
        yield services
    finally:
        stop_all(services)


@pytest.fixture(scope="module")
def store(postgres: PostgresServer) -> Iterator[Store]:
    opened = open_store(Config(database_url=postgres.url, pseudonym_key=PSEUDONYM_KEY))
    yield opened
    opened.close()


def post(service: Service, path: str, body: Any, bearer: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {bearer or token(path=path)}"}
    return requests.post(service.base + path, json=body, headers=headers, timeout=30)


def wait_for_cards(store: Store, uuids: set[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in store.issued_cards() if r["card_uuid"] in uuids]
        if len(rows) == len(uuids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def feedback_body(
    card: str, outcome: str = "overridden", at: str = "2026-11-23T10:00:00Z"
) -> dict[str, Any]:
    item = feedback_item(card_ids_for(PSEUDONYM_KEY), outcome, at=at, reason=None, card=card)
    return {"feedback": [item]}


def test_a_token_accepted_by_one_replica_is_refused_by_the_other(replicas: list[Service]) -> None:
    """The replay cache is shared: a jti used on replica A is a replay on replica B (and the
    other way round)."""
    first, second = replicas
    for accepting, other in ((first, second), (second, first)):
        bearer = token(path=SIGN)
        accepted = post(accepting, SIGN, cards_body(), bearer)
        assert accepted.status_code == 200 and accepted.json()["cards"]
        replay = post(other, SIGN, cards_body(), bearer)
        assert replay.status_code == 401
        assert replay.json()["resourceType"] == "OperationOutcome"
        assert post(accepting, SIGN, cards_body(), bearer).status_code == 401


def test_concurrent_duplicate_feedback_over_both_replicas_is_stored_once(
    replicas: list[Service], store: Store
) -> None:
    """16 identical feedback posts sent at once, alternating between the replicas: all are
    answered 200 and the item is stored exactly once."""
    card = card_ids_for(PSEUDONYM_KEY).card_uuid("opioid-lbp-order-sign", "opioid-benzodiazepine")
    body = feedback_body(card)
    tokens = [token(path=FEEDBACK) for _ in range(16)]
    barrier = threading.Barrier(16)

    def send(index: int) -> int:
        barrier.wait(10)
        return post(replicas[index % 2], FEEDBACK, body, tokens[index]).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [200] * 16
    rows = [r for r in store.feedback_items() if r["card_uuid"] == card]
    assert len(rows) == 1
    assert rows[0]["card_issued"] is False  # issued (its tag checks), not logged: flagged


def test_feedback_and_the_card_log_survive_a_restart(replicas: list[Service], store: Store) -> None:
    """Cards issued and feedback given before both replicas restart are still there after,
    a resent item is still stored once, and feedback after the restart finds its rule."""
    first, second = replicas
    response = post(first, SIGN, cards_body())
    cards = response.json()["cards"]
    uuids = {c["uuid"] for c in cards}
    rules = {c["uuid"]: c["source"]["topic"]["code"] for c in cards}
    assert len(wait_for_cards(store, uuids)) == len(cards)
    assert post(second, FEEDBACK, feedback_body(cards[0]["uuid"])).status_code == 200
    old_token = token(path=SIGN)
    assert post(first, SIGN, cards_body(), old_token).status_code == 200

    for service in replicas:
        service.stop()
    for service in replicas:
        service.start()

    assert post(second, SIGN, cards_body(), old_token).status_code == 401  # still a replay
    assert post(first, FEEDBACK, feedback_body(cards[0]["uuid"])).status_code == 200  # resent
    assert post(second, FEEDBACK, feedback_body(cards[1]["uuid"], at=LATER)).status_code == 200
    logged = {r["card_uuid"]: r for r in store.issued_cards() if r["card_uuid"] in uuids}
    assert {u: r["rule_id"] for u, r in logged.items()} == rules
    items = [r for r in store.feedback_items() if r["card_uuid"] in uuids]
    assert sorted((r["card_uuid"], r["outcome"]) for r in items) == sorted(
        [(cards[0]["uuid"], "overridden"), (cards[1]["uuid"], "overridden")]
    )
    for item in items:
        assert item["card_issued"] is True
        assert item["rule_id"] == rules[item["card_uuid"]]


def test_card_log_rows_carry_no_patient_identifier(
    replicas: list[Service], store: Store, postgres: PostgresServer
) -> None:
    """Every replica writes the same pseudonymous patient key, and no table holds the
    patient id or the patient's drug names."""
    from servers import DRUG_NAMES, PATIENT_ID

    keys = set()
    for index, service in enumerate(replicas):
        body = cards_body()
        # its own encounter: earlier tests answered this patient's cards (one decision, one
        # answer would not show them again in the same encounter)
        body["context"]["encounterId"] = f"identifier-test-{index}"
        cards = post(service, SIGN, body).json()["cards"]
        rows = wait_for_cards(store, {c["uuid"] for c in cards})
        keys |= {r["patient_key"] for r in rows}
    assert len(keys) == 1 and PATIENT_ID not in next(iter(keys))
    import psycopg

    with psycopg.connect(
        host="127.0.0.1",
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        dbname=postgres.database,
    ) as connection:
        for table in ("issued_card", "feedback", "hook_call_count", "replay_cache"):
            dump = json.dumps(
                [
                    list(map(str, row))
                    for row in connection.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
                ]
            ).lower()
            assert PATIENT_ID.lower() not in dump
            for drug in DRUG_NAMES:
                assert drug not in dump, (table, drug)
