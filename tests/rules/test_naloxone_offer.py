"""opioid-naloxone-offer ships silent: its cards are never returned, they are logged, and
`cds-service report` shows the rule as silent with its would-be counts; a co-prescription card
carries the naloxone offer instead (say it once)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, SERVICE, CheckedClient, fixture_request, make_app

RULE = "opioid-naloxone-offer"
FOLDER = FIXTURES / RULE
CASES: dict[str, Any] = json.loads((FOLDER / "cases.json").read_text("utf-8"))


def test_the_rule_ships_silent_with_enough_fixtures() -> None:
    """Packaged settings put the rule in silent mode; it has at least 8 firing and 10 silent
    fixtures."""
    from cds_service.settings import packaged_defaults

    assert packaged_defaults()["rules"][RULE]["mode"] == "silent"
    assert sum(n.startswith("fires-") for n in CASES) >= 8
    assert sum(n.startswith("silent-") for n in CASES) >= 10


def test_silent_cards_reach_the_report_as_would_be_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every firing fixture sent through the API: no naloxone-offer card is returned, the
    silent ones are logged, and `cds-service report` lists the rule as silent with those
    cards (and the ones a co-prescription card covered) and no feedback."""
    from cds_service.cli import main

    app = make_app(data_dir=str(tmp_path / "data"))
    client = CheckedClient(app.test_client())
    silent_expected = covered_expected = 0
    for name, case in CASES.items():
        body = fixture_request(FOLDER, name, case)
        response = client.post(f"/cds-services/{SERVICE[case['hook']]}", body)
        codes = [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]
        assert RULE not in codes, name
        silent_expected += RULE in case.get("silent_fires", [])
        covered_expected += RULE in case.get("covered", [])
    assert app.extensions["cds_card_log"].flush(10)
    app.extensions["cds_card_log"].close()
    app.extensions["cds_store"].close()
    app.extensions["cds_engine"].close()

    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert main(["report", "--since", today, "--until", today, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = [r for r in report["rules"] if r["rule"] == RULE]
    assert rows and all(r["mode"] == "silent" for r in rows)
    assert sum(r["silent_cards"] for r in rows) == silent_expected >= 6
    assert sum(r["covered_cards"] for r in rows) == covered_expected >= 2
    assert sum(r["cards"] for r in rows) == silent_expected + covered_expected
    assert sum(r["accepted"] + r["overridden"] for r in rows) == 0


def test_the_co_prescription_card_says_it_once(client: CheckedClient) -> None:
    """With a benzodiazepine current, the shown co-prescription card carries the naloxone
    suggestion and names the naloxone rule it covers; no second naloxone offer is logged."""
    name = "fires-oxycodone-with-current-alprazolam.json"
    case = CASES[name]
    body = fixture_request(FOLDER, name, case)
    cards = client.post(f"/cds-services/{SERVICE[case['hook']]}", body).get_json()["cards"]
    co = cards[0]
    assert co["source"]["topic"]["code"] == "opioid-benzodiazepine"
    assert RULE in co["extension"]["opioid-lbp-cds.covers"]
    labels = [s["label"] for c in cards for s in c.get("suggestions", [])]
    assert labels.count("Co-prescribe naloxone 4 mg nasal spray") == 1


def test_turned_on_it_shows_its_card(tmp_path: Path) -> None:
    """A site that switches the rule to active sees the card, with the naloxone suggestion
    and the order's MME/day."""
    from conftest import TODAY, shared_knowledge

    from cds_service import create_app
    from cds_service.config import Config

    app = create_app(
        Config(today=TODAY, data_dir=str(tmp_path / "data")),
        knowledge=shared_knowledge(),
        settings_overrides={"rules": {RULE: {"mode": "active"}}},
    )
    name = "fires-order-select-selected-morphine.json"
    case = CASES[name]
    body = fixture_request(FOLDER, name, case)
    cards = (
        CheckedClient(app.test_client())
        .post(f"/cds-services/{SERVICE[case['hook']]}", body)
        .get_json()["cards"]
    )
    card = next(c for c in cards if c["source"]["topic"]["code"] == RULE)
    assert card["suggestions"][0]["label"] == "Co-prescribe naloxone 4 mg nasal spray"
    assert "60 MME/day" in card["detail"] and "60 MME/day" in card["summary"]
    app.extensions["cds_engine"].close()
    if app.extensions.get("cds_card_log") is not None:
        app.extensions["cds_card_log"].close()
    app.extensions["cds_store"].close()
