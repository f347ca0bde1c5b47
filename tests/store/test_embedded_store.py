"""The embedded default (SQLite in the data directory) under `cds-service serve` with two
gunicorn workers: shared replay cache, card log and feedback, across a restart."""

from __future__ import annotations

import json
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from jwt_keys import BASE, ISS, JWKS, token
from servers import DRUG_NAMES, PATIENT_ID, Service, cards_body, free_port

from cds_service.config import Config
from cds_service.store import open_store

SIGN = "/cds-services/opioid-lbp-order-sign"
FEEDBACK = SIGN + "/feedback"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="module")
def service(home: Path) -> Iterator[Service]:
    issuers = home / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    server = Service(
        {
            "CDS_AUTH": "required",
            "CDS_PUBLIC_BASE_URL": BASE,
            "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
            "XDG_DATA_HOME": str(home / "xdg"),
            "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"),
            "CDS_OPS_PORT": str(free_port()),
        },
        workers=2,
    )
    server.start()
    yield server
    server.stop()


def _refusals_by_process(metrics_dir: Path) -> dict[str, float]:
    """Replay refusals counted by each process, read from its own multiprocess file."""
    from prometheus_client import CollectorRegistry, multiprocess

    counts = {}
    for file in metrics_dir.glob("counter_*.db"):
        alone = metrics_dir.parent / f"one-{file.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        value = registry.get_sample_value("cds_auth_failures_total", {"reason": "replayed-jti"})
        counts[file.stem] = value or 0.0
        shutil.rmtree(alone)
    return counts


def test_the_data_directory_is_created_with_an_owner_only_key(service: Service, home: Path) -> None:
    """First start creates the data directory, the SQLite file and a 0600 pseudonym key."""
    data = home / "xdg" / "opioid-lbp-cds"
    assert (data / "cds.sqlite3").is_file()
    key = data / "pseudonym.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) == 64
    assert requests.get(service.base + "/readyz", timeout=5).status_code == 200
    ops_port = service.env["CDS_OPS_PORT"]
    assert requests.get(f"http://127.0.0.1:{ops_port}/readyz", timeout=5).status_code == 200


def test_a_replay_is_refused_by_every_worker(service: Service, home: Path) -> None:
    """One token, accepted once, then replayed over fresh connections until both workers have
    answered: every replay is refused, by each of the two worker processes."""
    bearer = token(path=SIGN)
    headers = {"Authorization": f"Bearer {bearer}", "Connection": "close"}
    first = requests.post(service.base + SIGN, json=cards_body(), headers=headers, timeout=30)
    assert first.status_code == 200

    def replay(_: int) -> int:
        return requests.post(
            service.base + SIGN, json=cards_body(), headers=headers, timeout=30
        ).status_code

    statuses: list[int] = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # at most 160 replays
            statuses += pool.map(replay, range(16))
            refusing = [p for p, n in _refusals_by_process(home / "metrics").items() if n]
            if len(refusing) >= 2:
                break
    assert set(statuses) == {401}
    assert len(refusing) == 2, refusing


def test_feedback_and_the_card_log_survive_a_restart(service: Service, home: Path) -> None:
    """With the embedded default, cards issued and feedback stored before a restart are in
    the database after it; resent feedback is still stored once; nothing names the patient."""
    cards = requests.post(
        service.base + SIGN,
        json=cards_body(),
        timeout=30,
        headers={"Authorization": f"Bearer {token(path=SIGN)}"},
    ).json()["cards"]
    item = {
        "feedback": [
            {
                "card": cards[0]["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-23T10:00:00Z",
                "overrideReason": {"reason": {"code": "taper-in-progress"}},
            }
        ]
    }
    unknown = {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "accepted",
                "outcomeTimestamp": "2026-11-23T10:00:00Z",
            }
        ]
    }
    for body, status in ((item, 200), (unknown, 400)):  # a card never issued: refused
        assert (
            requests.post(
                service.base + FEEDBACK,
                json=body,
                timeout=30,
                headers={"Authorization": f"Bearer {token(path=FEEDBACK)}"},
            ).status_code
            == status
        )
    service.stop()
    service.start()
    assert (
        requests.post(
            service.base + FEEDBACK,
            json=item,
            timeout=30,
            headers={"Authorization": f"Bearer {token(path=FEEDBACK)}"},
        ).status_code
        == 200
    )
    store = open_store(Config(data_dir=str(home / "xdg" / "opioid-lbp-cds")))
    try:
        deadline = time.monotonic() + 10
        while True:
            logged = {r["card_uuid"]: r for r in store.issued_cards()}
            if all(c["uuid"] in logged for c in cards) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for card in cards:
            assert logged[card["uuid"]]["rule_id"] == card["source"]["topic"]["code"]
        rows = {r["card_uuid"]: r for r in store.feedback_items()}
        assert len(rows) == 1
        assert rows[cards[0]["uuid"]]["card_issued"] is True
        assert rows[cards[0]["uuid"]]["rule_id"] == cards[0]["source"]["topic"]["code"]
        assert rows[cards[0]["uuid"]]["override_reason"] == "taper-in-progress"
        assert unknown["feedback"][0]["card"] not in rows
        assert sum(r["calls"] for r in store.hook_call_counts()) >= 2
    finally:
        store.close()
    data = home / "xdg" / "opioid-lbp-cds"
    raw = b"".join(p.read_bytes() for p in data.glob("cds.sqlite3*")).lower()
    assert PATIENT_ID.encode().lower() not in raw
    for drug in DRUG_NAMES:
        assert drug.encode() not in raw
