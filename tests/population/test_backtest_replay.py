"""The backtest replays each historical order as the order-sign call the EHR would have made
that day, through the service's own engine: its cards equal what the HTTP API answers for the
record truncated to that date."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SIGN, CheckedClient, make_app

from cds_service.config import Config
from cds_service.hooks.bundle_request import request_from_bundle
from cds_service.population.generate import generate, load_templates
from cds_service.population.replay import (
    SIGN_SERVICE,
    Options,
    entered_on,
    record_as_of,
    replay_bundle,
)
from cds_service.population.run import Run, execute
from cds_service.population.source import Item, export_files, read_file, relative_name
from cds_service.population.worker import EngineSpec, replayer

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("duckdb")

SAMPLE = ROOT / "fixtures" / "bulk" / "sample"
KEY = b"k" * 32


def _config(tmp_path: Path) -> Config:
    return Config().with_overrides(
        {"pseudonym_key": KEY.decode(), "data_dir": str(tmp_path / "data")}
    )


def _patients(source: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The export read back per patient, plainly (no DuckDB), in file and line order."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for path in export_files(source):
        for item in read_file(path, relative_name(path, source)):
            assert isinstance(item, Item)
            if item.kind == "resource":
                out[item.key].append((item.full_url, json.loads(item.text)))
    return out


def _strip(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = json.dumps(cards)
    for card in cards:
        text = text.replace(card["uuid"], "CARD")
        for suggestion in card.get("suggestions", []):
            text = text.replace(suggestion["uuid"], "SUGGESTION")
    stripped: list[dict[str, Any]] = json.loads(text)
    return stripped


TEMPLATES = load_templates(ROOT / "fixtures" / "fhir")


@pytest.fixture(scope="module")
def fixture_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of every fixture patient once (dates shifted, references in every form)."""
    export = tmp_path_factory.mktemp("fixture-export")
    generate(export, len(TEMPLATES), 1)
    return export


@pytest.fixture(scope="module")
def fixture_run(fixture_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fixture-run")
    execute(Run(fixture_export, out, workers=1), _config(out))
    return out


def test_the_export_holds_every_fixture_patient_once(fixture_export: Path) -> None:
    """The generator's first N patients are the N fixture patients, each once."""
    patients = _patients(fixture_export)
    assert len(patients) == len(TEMPLATES) >= 60
    assert sum(1 for p in patients.values() for _, r in p if r["resourceType"] == "Patient") == len(
        TEMPLATES
    )


def test_the_committed_sample_reads_cleanly() -> None:
    """fixtures/bulk/sample (`backtest generate --patients 81 --seed 1`) is a clean export."""
    patients = _patients(SAMPLE)
    assert len(patients) >= 60
    for path in export_files(SAMPLE):
        assert all(isinstance(i, Item) for i in read_file(path, relative_name(path, SAMPLE)))


def test_every_replayed_order_gets_the_cards_order_sign_returns_over_http(
    fixture_export: Path, fixture_run: Path
) -> None:
    """For every fixture patient and each of its replayed orders, the cards in the backtest's
    table are those the HTTP order-sign call returns for the record truncated to the order's
    day (today = that day), and the engine called with that date answers the same cards."""
    app = make_app(card_log=False, database_url="sqlite://")
    client = CheckedClient(app.test_client())
    engine = app.extensions["cds_engine"]
    base_config = engine.config
    replay = replayer(EngineSpec(KEY, Options()))
    cards = defaultdict(list)
    for row in pq.read_table(fixture_run / "cards.parquet").to_pylist():
        cards[row["order_key"]].append(row)
    orders = {r["order_key"]: r for r in pq.read_table(fixture_run / "orders.parquet").to_pylist()}
    compared_patients = set()
    firing = 0
    for patient, entries in _patients(fixture_export).items():
        patient_key = replay.pseudonym("patient", patient)
        for order, day, _ in replay.orders(entries):
            body = request_from_bundle(replay_bundle(entries, order, day), "order-sign")
            engine.config = base_config.with_overrides({"today": day.isoformat()})
            try:
                response = client.post(SIGN, body)
            finally:
                engine.config = base_config
            assert response.status_code == 200
            http_cards = response.get_json()["cards"]
            direct = replay.engine.evaluate(SIGN_SERVICE, body, today=day)
            assert _strip(direct.body["cards"]) == _strip(http_cards)
            order_key = replay.pseudonym("order", f"{patient_key}/{order['id']}")
            assert orders[order_key]["order_date"] == day
            shown = [
                c for c in sorted(cards[order_key], key=lambda c: c["rank"]) if not c["silent"]
            ]
            assert [(c["rule"], c["indicator"], c["covered_rules"]) for c in shown] == [
                (
                    c["source"]["topic"]["code"],
                    c["indicator"],
                    c.get("extension", {}).get("opioid-lbp-cds.covers", []),
                )
                for c in http_cards
            ]
            compared_patients.add(patient)
            firing += bool(http_cards)
    assert len(compared_patients) >= 50
    assert firing >= 30


def test_the_record_is_truncated_to_the_order_day() -> None:
    """Nothing entered after the order's day is in the replayed record, the order itself is
    the only draft, and a condition resolved later is still active on the day."""
    entries: list[tuple[str, dict[str, Any]]] = [
        ("", {"resourceType": "Patient", "id": "p"}),
        ("", {"resourceType": "MedicationRequest", "id": "old", "status": "completed",
              "authoredOn": "2024-01-01", "subject": {"reference": "Patient/p"}}),
        ("", {"resourceType": "MedicationRequest", "id": "now", "status": "active",
              "authoredOn": "2024-03-01", "subject": {"reference": "Patient/p"}}),
        ("", {"resourceType": "MedicationRequest", "id": "later", "status": "active",
              "authoredOn": "2024-05-01", "subject": {"reference": "Patient/p"}}),
        ("", {"resourceType": "Condition", "id": "c", "recordedDate": "2023-01-01",
              "abatementDateTime": "2024-04-01",
              "clinicalStatus": {"coding": [{"code": "resolved"}]}}),
        ("", {"resourceType": "MedicationDispense", "id": "d", "whenHandedOver": "2024-03-02"}),
    ]  # fmt: skip
    order = entries[2][1]
    assert isinstance(order, dict)
    bundle = replay_bundle(entries, order, dt.date(2024, 3, 1))
    resources = [e["resource"] for e in bundle["entry"]]
    ids = [r["id"] for r in resources]
    assert ids == ["p", "old", "c", "now"]
    assert [r["status"] for r in resources if r["resourceType"] == "MedicationRequest"] == [
        "completed",
        "draft",
    ]
    condition = resources[2]
    assert "abatementDateTime" not in condition
    assert condition["clinicalStatus"]["coding"][0]["code"] == "active"
    assert all(
        (entered_on(r) or dt.date.min) <= dt.date(2024, 3, 1)
        for _, r in record_as_of(entries, dt.date(2024, 3, 1))
    )


def test_allergies_are_replayed_as_they_stood_on_the_order_day() -> None:
    """An allergy recorded before the order day is in the replayed record (it bars the
    alternative as over HTTP); one recorded after it is not."""
    entries: list[tuple[str, dict[str, Any]]] = [
        ("", {"resourceType": "Patient", "id": "p"}),
        ("", {"resourceType": "AllergyIntolerance", "id": "before", "recordedDate": "2024-01-05"}),
        ("", {"resourceType": "AllergyIntolerance", "id": "after", "recordedDate": "2024-06-01"}),
        ("", {"resourceType": "AllergyIntolerance", "id": "onset", "onsetDateTime": "2023-02-01"}),
    ]
    kept = [r["id"] for _, r in record_as_of(entries, dt.date(2024, 3, 1))]
    assert kept == ["p", "before", "onset"]
