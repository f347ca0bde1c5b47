"""Every rule fixture through the HTTP API with a fixed "today": the rules that fire, the
indicator, and the triggering data named in the card's detail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, CheckedClient

from cds_service.bundle_request import request_from_bundle
from cds_service.rules import RULES

SERVICE = {"patient-view": "opioid-lbp-patient-view", "order-select": "opioid-lbp-order-select",
           "order-sign": "opioid-lbp-order-sign"}
RULE_DIRS = sorted(p.parent for p in FIXTURES.glob("*/cases.json"))
CASES = [(d.name, name, case) for d in RULE_DIRS
         for name, case in json.loads((d / "cases.json").read_text("utf-8")).items()]


def run_case(client: CheckedClient, rule: str, name: str,
             case: dict[str, Any]) -> list[dict[str, Any]]:
    bundle = json.loads((FIXTURES / rule / name).read_text("utf-8"))
    body = request_from_bundle(bundle, case["hook"])
    if "selections" in case:
        body["context"]["selections"] = case["selections"]
    response = client.post(f"/cds-services/{SERVICE[case['hook']]}", body)
    assert response.status_code == 200, response.get_json()
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def test_every_rule_has_fixtures_that_fire_and_that_stay_silent() -> None:
    """Each rule has at least 6 firing and 8 silent scenarios, and no fixture is untested."""
    assert {d.name for d in RULE_DIRS} == {r.RULE_ID for r in RULES}
    for directory in RULE_DIRS:
        cases = json.loads((directory / "cases.json").read_text("utf-8"))
        files = {p.name for p in directory.glob("*.json") if p.name != "cases.json"}
        assert files == set(cases), directory.name
        assert sum(n.startswith("fires-") for n in cases) >= 6, directory.name
        assert sum(n.startswith("silent-") for n in cases) >= 8, directory.name
        for name, case in cases.items():
            assert (directory.name in case["fires"]) is name.startswith("fires-"), name


@pytest.mark.parametrize("rule,name,case", CASES, ids=[f"{r}/{n}" for r, n, _ in CASES])
def test_fixture(client: CheckedClient, rule: str, name: str, case: dict[str, Any]) -> None:
    """The fixture's rules fire (or stay silent) as its name and cases.json say."""
    cards = run_case(client, rule, name, case)
    fired = sorted(c["source"]["topic"]["code"] for c in cards)
    assert fired == sorted(case["fires"]), case["description"]
    card = next((c for c in cards if c["source"]["topic"]["code"] == rule), None)
    if card is None:
        return
    assert card["indicator"] == case["indicator"]
    for text in case.get("evidence", []):
        escaped = text.replace("(", "\\(").replace(")", "\\)")
        assert escaped in card["detail"], (text, card["detail"])


def _names(rule: str) -> list[str]:
    return [n for r, n, _ in CASES if r == rule]


def test_fixture_folders_are_readable_bundles() -> None:
    """Fixtures are FHIR Bundles with a description a clinician can read."""
    for rule, name, case in CASES:
        bundle = json.loads(Path(FIXTURES / rule / name).read_text("utf-8"))
        assert bundle["resourceType"] == "Bundle" and bundle["entry"]
        assert len(case["description"]) > 10
