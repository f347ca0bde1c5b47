"""The store in-process: what the card log keeps (and never keeps), feedback linking,
atomic replay claims, retention, the pseudonym key, the bounded writer, configuration, and
the operations endpoints."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CheckedClient,
    card_ids_for,
    check_body,
    feedback_item,
    make_app,
    rule_ids,
    shipped,
)
from jwt_keys import BASE, ISS, JWKS, token
from prometheus_client import REGISTRY
from servers import DRUG_NAMES, PATIENT_ID, cards_body, free_port

from cds_service.config import Config, ConfigError, from_env
from cds_service.store import CardLogWriter, Store, StoreUnavailable, database_url, open_store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, OrderCall

SIGN = "/cds-services/opioid-lbp-order-sign"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def app_in(tmp_path: Path, **overrides: Any) -> Any:
    return make_app(data_dir=str(tmp_path / "data"), **overrides)


def _entry(card_uuid: str, when: dt.datetime, rule: str = "opioid-benzodiazepine") -> CardLogEntry:
    card = IssuedCard(
        card_uuid,
        rule,
        "opioid-lbp-order-sign",
        "order-sign",
        "warning",
        when,
        "k" * 64,
        ({"uuid": "s-1", "key": "naloxone", "label": "Co-prescribe"},),
    )
    order = OrderCall(
        when, "opioid-lbp-order-sign", "order-sign", "d" * 64, True, "e" * 64, (), (), (), None
    )
    return CardLogEntry(HookCall(when.date(), "opioid-lbp-order-sign", True, order), (card,))


def test_card_log_keeps_rule_indicator_suggestions_and_a_pseudonym_only(tmp_path: Path) -> None:
    """Each returned card is logged with its uuid, rule, indicator, suggestion ids and
    template labels and an HMAC patient key; the database never holds the patient id or the
    patient's drug names."""
    app = app_in(tmp_path)
    client = CheckedClient(app.test_client())
    response = client.post(SIGN, cards_body())
    cards = response.get_json()["cards"]
    # co-prescription; the LBP card also covering first-line
    assert len(shipped([c["source"]["topic"]["code"] for c in cards])) == 2
    assert app.extensions["cds_card_log"].flush(10)
    store: Store = app.extensions["cds_store"]
    rows = {r["card_uuid"]: r for r in store.issued_cards()}
    assert set(rows) == {c["uuid"] for c in cards}
    key = (tmp_path / "data" / "pseudonym.key").read_bytes().strip()
    expected_key = hmac.new(key, f"\x1f{PATIENT_ID}".encode(), hashlib.sha256).hexdigest()
    for card in cards:
        row = rows[card["uuid"]]
        assert row["rule_id"] == card["source"]["topic"]["code"]
        assert row["indicator"] == card["indicator"]
        assert (row["service_id"], row["hook"]) == ("opioid-lbp-order-sign", "order-sign")
        assert row["patient_key"] == expected_key
        assert [s["uuid"] for s in row["suggestions"]] == [
            s["uuid"] for s in card.get("suggestions", [])
        ]
        assert all(s["key"] and s["label"] for s in row["suggestions"])
    labels = {s["label"] for r in rows.values() for s in r["suggestions"]}
    assert "Remove the draft {drug} order" in labels
    assert store.hook_call_counts()[0]["calls"] == 1
    assert store.hook_call_counts()[0]["calls_with_cards"] == 1
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("cds.sqlite3*")).lower()
    assert PATIENT_ID.lower().encode() not in raw
    for drug in DRUG_NAMES:
        assert drug.encode() not in raw


def test_feedback_is_linked_to_its_card_even_when_it_arrives_first(tmp_path: Path) -> None:
    """Feedback for a logged card carries its rule; feedback that beats its card into the
    log is linked when the card is written; an unknown uuid stays flagged."""
    store = open_store(Config(data_dir=str(tmp_path)))
    now = dt.datetime.now(dt.UTC)
    store.write_card_log([_entry("card-a", now)])
    item = {
        "outcome": "accepted",
        "outcomeTimestamp": "t",
        "acceptedSuggestions": ["s-1"],
        "overrideReason": "",
    }
    assert (
        store.add_feedback(
            "svc",
            [{**item, "card": "card-a"}, {**item, "card": "card-b"}, {**item, "card": "never"}],
        )
        == 3
    )
    assert store.add_feedback("svc", [{**item, "card": "card-a"}]) == 0
    store.write_card_log([_entry("card-b", now, rule="opioid-start-chronic-lbp")])
    rows = {r["card_uuid"]: r for r in store.feedback_items()}
    assert (rows["card-a"]["rule_id"], rows["card-a"]["card_issued"]) == (
        "opioid-benzodiazepine",
        True,
    )
    assert (rows["card-b"]["rule_id"], rows["card-b"]["card_issued"]) == (
        "opioid-start-chronic-lbp",
        True,
    )
    assert (rows["never"]["rule_id"], rows["never"]["card_issued"]) == (None, False)
    assert rows["card-a"]["accepted_suggestions"] == ["s-1"]


def test_replay_claims_are_atomic_across_connections(tmp_path: Path) -> None:
    """Sixteen threads over two independent stores on one SQLite file claim the same jti at
    once: exactly one wins; an expired claim can be taken again; long jtis are hashed."""
    stores = [open_store(Config(data_dir=str(tmp_path))) for _ in range(2)]
    barrier = threading.Barrier(16)
    results: list[bool] = []
    lock = threading.Lock()

    def claim(index: int) -> None:
        barrier.wait(10)
        won = stores[index % 2].claim_jti(ISS, "jti-1", time.time() + 60)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]
    assert stores[0].claim_jti(ISS, "old", time.time() - 1)
    assert stores[1].claim_jti(ISS, "old", time.time() + 60)  # the earlier claim had expired
    assert not stores[0].claim_jti(ISS, "old", time.time() + 60)
    assert stores[0].claim_jti("https://other.example.org", "jti-1", time.time() + 60)
    long_jti = "x" * 5000
    assert stores[0].claim_jti(ISS, long_jti, time.time() + 60)
    assert not stores[1].claim_jti(ISS, long_jti, time.time() + 60)


def test_retention_purges_old_rows_and_expired_tokens(tmp_path: Path) -> None:
    """Rows older than CDS_RETENTION_DAYS and replay entries of expired tokens are deleted;
    newer ones stay."""
    store = open_store(Config(data_dir=str(tmp_path), retention_days=30))
    now = dt.datetime.now(dt.UTC)
    store.write_card_log(
        [_entry("old", now - dt.timedelta(days=31)), _entry("new", now - dt.timedelta(days=29))]
    )
    item = {
        "outcome": "accepted",
        "outcomeTimestamp": "t",
        "acceptedSuggestions": [],
        "overrideReason": "",
    }
    store.add_feedback("svc", [{**item, "card": "old"}], now=now - dt.timedelta(days=40))
    store.add_feedback("svc", [{**item, "card": "new"}], now=now)
    store.claim_jti(ISS, "expired", time.time() - 5)
    store.claim_jti(ISS, "live", time.time() + 300)
    purged = store.purge(now)
    assert purged == {
        "issued_card": 1,
        "feedback": 1,
        "order_call": 1,
        "hook_call_count": 1,
        "replay_cache": 1,
    }
    assert [r["card_uuid"] for r in store.issued_cards()] == ["new"]
    assert [r["card_uuid"] for r in store.feedback_items()] == ["new"]
    assert store.replay_entries() == 1


def test_pseudonym_key_is_generated_once_owner_only(tmp_path: Path) -> None:
    """The embedded default creates the data directory and a 0600 key on first start and
    reuses it; a configured key replaces it; PostgreSQL needs a configured key."""
    data = tmp_path / "new" / "dir"
    first = open_store(Config(data_dir=str(data)))
    key_file = data / "pseudonym.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = open_store(Config(data_dir=str(data)))
    assert first.pseudonymizer.patient_key("f", "p") == second.pseudonymizer.patient_key("f", "p")
    assert first.pseudonymizer.patient_key("f", "p") != first.pseudonymizer.patient_key("g", "p")
    configured = open_store(Config(data_dir=str(data), pseudonym_key="k" * 32))
    assert configured.pseudonymizer.patient_key("f", "p") != first.pseudonymizer.patient_key(
        "f", "p"
    )
    with pytest.raises(ConfigError, match="CDS_PSEUDONYM_KEY"):
        open_store(Config(database_url=f"postgresql://u:p@127.0.0.1:{free_port()}/db"))


def test_database_urls_are_read_as_given() -> None:
    """A plain postgresql:// (or postgres://) URL is driven by psycopg 3; the default is the
    SQLite file in the data directory; other databases are refused by name."""
    assert (
        database_url(Config(database_url="postgresql://u:p@db:5432/cds")).drivername
        == "postgresql+psycopg"
    )
    assert (
        database_url(Config(database_url="postgres://u:p@db/cds")).drivername
        == "postgresql+psycopg"
    )
    assert str(database_url(Config(data_dir="/srv/cds"))) == "sqlite:////srv/cds/cds.sqlite3"
    with pytest.raises(ConfigError, match="mysql"):
        database_url(Config(database_url="mysql://u:p@db/cds"))


def test_store_settings_come_from_the_environment(tmp_path: Path) -> None:
    """CDS_DATABASE_URL, CDS_DATA_DIR, retention, card log and ops access are read (and
    checked) from the environment; secrets never appear in the Config's repr."""
    config = from_env(
        {
            "CDS_DATABASE_URL": "postgresql://u:secret-pw@h/db",
            "CDS_PSEUDONYM_KEY": "secret-key-material",
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_RETENTION_DAYS": "90",
            "CDS_CARD_LOG": "off",
            "CDS_OPS_ALLOW": "loopback,10.0.0.0/8",
            "CDS_OPS_PORT": "9090",
        }
    )
    assert (config.data_dir, config.retention_days, config.card_log) == (str(tmp_path), 90, False)
    assert config.ops_allow == ("loopback", "10.0.0.0/8") and config.ops_port == 9090
    assert "secret" not in repr(config)
    assert from_env({"HOME": str(tmp_path)}).data_dir == str(
        tmp_path / ".local" / "share" / "opioid-lbp-cds"
    )
    for bad in (
        {"CDS_OPS_ALLOW": "the office"},
        {"CDS_RETENTION_DAYS": "0"},
        {"CDS_OPS_PORT": "70000"},
    ):
        with pytest.raises(ConfigError):
            from_env(bad)


def test_a_full_queue_or_a_locked_database_loses_entries_but_never_blocks(tmp_path: Path) -> None:
    """While the writer waits on a locked database, submissions past the queue's capacity
    are counted as lost without blocking; the waiting entries are written once the lock
    goes."""
    store = open_store(Config(data_dir=str(tmp_path), database_timeout=5.0))
    writer = CardLogWriter(store, capacity=2)
    blocker = sqlite3.connect(tmp_path / "cds.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    now = dt.datetime.now(dt.UTC)
    lost_before = metric("cds_card_log_lost_total", reason="queue-full")
    try:
        writer.submit(_entry("w-0", now))
        deadline = time.monotonic() + 5
        while writer._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer has taken the first entry and waits on the lock
        started = time.monotonic()
        for index in range(1, 5):
            writer.submit(_entry(f"w-{index}", now))
        assert time.monotonic() - started < 0.5
        assert writer.lost == 4  # two entries (card + call count each) did not fit
        assert metric("cds_card_log_lost_total", reason="queue-full") - lost_before == 4
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert writer.flush(10)
    assert sorted(r["card_uuid"] for r in store.issued_cards()) == ["w-0", "w-1", "w-2"]
    writer.close()


def _ops_status(app: Any, path: str, base_url: str = "http://localhost", **environ: str) -> int:
    response = app.test_client().get(path, environ_base=environ, base_url=base_url)
    if response.status_code != 200:
        assert response.get_json()["resourceType"] == "OperationOutcome"
    return int(response.status_code)


def test_ops_endpoints_answer_loopback_without_a_token(tmp_path: Path) -> None:
    """/healthz, /readyz and /metrics need no EHR token but answer only allowed callers
    (loopback by default, a listed network, or the ops port); others get 404."""
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    app = app_in(tmp_path, auth="required", public_base_url=BASE, trusted_issuers_file=str(issuers))
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}
    metrics_text = client.get("/metrics").get_data(as_text=True)
    assert "cds_hook_calls_total" in metrics_text and "cds_card_log_queue_depth" in metrics_text
    assert _ops_status(app, "/cds-services") == 401  # the CDS API itself still needs a token
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _ops_status(app, path, **remote) == 404
    listed = app_in(tmp_path, ops_allow=("10.0.0.0/8",))
    assert _ops_status(listed, "/metrics", **remote) == 200
    assert _ops_status(listed, "/metrics") == 404  # loopback no longer listed
    port = app_in(tmp_path, ops_allow=(), ops_port=9090)
    assert _ops_status(port, "/readyz", "http://cds.internal:9090", **remote) == 200
    assert _ops_status(port, "/readyz", **remote) == 404


def test_metrics_count_hooks_cards_412s_and_auth_failures(tmp_path: Path) -> None:
    """Hook calls by status, cards by rule and indicator, 412s and refused tokens by reason
    are counted."""
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    app = app_in(tmp_path, auth="required", public_base_url=BASE, trusted_issuers_file=str(issuers))
    client = CheckedClient(app.test_client())
    service = "opioid-lbp-order-sign"
    before = {
        "ok": metric("cds_hook_calls_total", service=service, status="200"),
        "412": metric("cds_hook_missing_data_total", service=service),
        "card": metric("cds_cards_total", rule="opioid-benzodiazepine", indicator="warning"),
        "replay": metric("cds_auth_failures_total", reason="replayed-jti"),
        "alg": metric("cds_auth_failures_total", reason="algorithm"),
    }
    bearer = token()
    assert (
        client.post(SIGN, cards_body(), headers={"Authorization": f"Bearer {bearer}"}).status_code
        == 200
    )
    assert (
        client.post(SIGN, cards_body(), headers={"Authorization": f"Bearer {bearer}"}).status_code
        == 401
    )
    assert (
        client.post(
            SIGN,
            cards_body(),
            headers={"Authorization": f"Bearer {token(alg='RS384', kid='ec-1')}"},
        ).status_code
        == 401
    )
    no_data = cards_body()
    no_data["prefetch"].pop("meds")
    assert (
        client.post(SIGN, no_data, headers={"Authorization": f"Bearer {token()}"}).status_code
        == 412
    )
    assert metric("cds_hook_calls_total", service=service, status="200") - before["ok"] == 1
    assert metric("cds_hook_missing_data_total", service=service) - before["412"] == 1
    assert (
        metric("cds_cards_total", rule="opioid-benzodiazepine", indicator="warning")
        - before["card"]
        == 1
    )
    assert metric("cds_auth_failures_total", reason="replayed-jti") - before["replay"] == 1
    assert metric("cds_auth_failures_total", reason="key-type-does-not-match") >= 1


def test_unreachable_store_fails_the_replay_check_closed_but_not_hooks(tmp_path: Path) -> None:
    """With the database down: an authenticated call is 503 (never accepted unchecked),
    feedback is 503 with Retry-After, readiness is 503, and unauthenticated hooks still
    answer 200 with cards."""
    down = f"postgresql://cds:pw@127.0.0.1:{free_port()}/cds"
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    common = {"database_url": down, "pseudonym_key": "k" * 32, "database_timeout": 1.0}
    secured = make_app(
        auth="required", public_base_url=BASE, trusted_issuers_file=str(issuers), **common
    ).test_client()
    response = secured.post(SIGN, json=cards_body(), headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 503 and response.headers["Retry-After"]
    check_body(503, response.get_json())
    assert "replay" in response.get_json()["issue"][0]["diagnostics"]
    app = make_app(**common)
    client = app.test_client()
    lost_before = metric("cds_card_log_lost_total", reason="store-unavailable")
    assert len(shipped(rule_ids(client.post(SIGN, json=cards_body())))) == 2
    feedback = client.post(
        SIGN + "/feedback",
        json={"feedback": [feedback_item(card_ids_for(app))]},
    )
    assert feedback.status_code == 503 and feedback.headers["Retry-After"]
    check_body(503, feedback.get_json())
    assert _ops_status(app, "/readyz") == 503
    writer = app.extensions["cds_card_log"]
    assert not writer.flush(1.5)  # kept and retried while the database is down, not dropped
    assert metric("cds_card_log_lost_total", reason="store-unavailable") == lost_before
    shutdown_before = metric("cds_card_log_lost_total", reason="shutdown")
    writer.close(timeout=0.5)  # shutdown cannot write them: counted, not silently gone
    lost = metric("cds_card_log_lost_total", reason="shutdown") - shutdown_before
    assert lost == 3  # two cards and the hook-call count
    with pytest.raises(StoreUnavailable):
        app.extensions["cds_store"].ping()


def test_db_command_upgrades_and_reports_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cds-service db upgrade` creates the schema, `db current` reports it, `db purge`
    applies retention; an unreachable database is reported without its password."""
    from cds_service.cli import main

    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path}/x/cds.sqlite3")
    assert main(["db", "current"]) == 1  # nothing there yet
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current"]) == 0
    assert main(["db", "purge"]) == 0
    assert "schema at 0006_key_ids" in capsys.readouterr().out
    monkeypatch.setenv(
        "CDS_DATABASE_URL", f"postgresql://cds:hunter2-pw@127.0.0.1:{free_port()}/cds"
    )
    monkeypatch.setenv("CDS_DATABASE_TIMEOUT", "1")
    assert main(["db", "upgrade"]) == 2
    captured = capsys.readouterr()
    assert "OperationalError" in captured.err and "hunter2-pw" not in captured.err + captured.out
