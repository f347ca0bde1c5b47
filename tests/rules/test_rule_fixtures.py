"""Every rule fixture through the HTTP API with a fixed "today": the rules that fire, the
indicator, and the triggering data named in the card's detail.

The fixture folders are found under conftest.FIXTURE_ROOTS (the shipped fixtures/fhir, plus
a throwaway project's when CDS_TEST_EXTRA_RULES names one): the checks below are functions of
a folder, so tests/rules/test_throwaway_rule.py runs them for a rule added by the recipe."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURE_ROOTS, SERVICE, CheckedClient, fixture_request

from cds_service.rules import registry


def rule_dirs(roots: Iterable[Path]) -> list[Path]:
    """Each rule's fixture folder (<root>/<rule id>/cases.json)."""
    return sorted((p.parent for root in roots for p in root.glob("*/cases.json")), key=str)


def cases_of(directories: Iterable[Path]) -> list[tuple[Path, str, dict[str, Any]]]:
    """(folder, file name, cases.json entry) for every fixture."""
    return [
        (d, name, case)
        for d in directories
        for name, case in json.loads((d / "cases.json").read_text("utf-8")).items()
    ]


RULE_DIRS = rule_dirs(FIXTURE_ROOTS)
CASES = cases_of(RULE_DIRS)
IDS = [f"{d.name}/{n}" for d, n, _ in CASES]


def run_case(
    client: CheckedClient, directory: Path, name: str, case: dict[str, Any]
) -> list[dict[str, Any]]:
    body = fixture_request(directory, name, case)
    response = client.post(f"/cds-services/{SERVICE[case['hook']]}", body)
    assert response.status_code == 200, response.get_json()
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def answered(case: dict[str, Any]) -> list[str]:
    """The rules a case expects to answer: cards shown, silent-mode cards logged, and rules
    whose concern a shown card covers (say it once)."""
    return [*case["fires"], *case.get("silent_fires", []), *case.get("covered", [])]


def silent_cards(
    client: CheckedClient, directory: Path, name: str, case: dict[str, Any]
) -> list[dict[str, Any]]:
    """The cards of silent-mode rules for a case: rendered and logged, never returned."""
    body = fixture_request(directory, name, case)
    engine = client.client.application.extensions["cds_engine"]
    result = engine.evaluate(SERVICE[case["hook"]], body)
    assert result.status == 200
    cards: list[dict[str, Any]] = result.silent_cards
    return cards


def check_fixture_folders(directories: list[Path], rule_ids: set[str]) -> None:
    """Every registered rule has a folder with at least 6 firing and 8 silent fixtures, each
    named in cases.json, and the name says whether the folder's rule fires."""
    assert {d.name for d in directories} == rule_ids
    for directory in directories:
        cases = json.loads((directory / "cases.json").read_text("utf-8"))
        files = {p.name for p in directory.glob("*.json") if p.name != "cases.json"}
        assert files == set(cases), directory.name
        assert sum(n.startswith("fires-") for n in cases) >= 6, directory.name
        assert sum(n.startswith("silent-") for n in cases) >= 8, directory.name
        for name, case in cases.items():
            assert (directory.name in answered(case)) is name.startswith("fires-"), name
            assert len(case["description"]) > 10, name
            bundle = json.loads((directory / name).read_text("utf-8"))
            assert bundle["resourceType"] == "Bundle" and bundle["entry"], name


def check_case(client: CheckedClient, directory: Path, name: str, case: dict[str, Any]) -> None:
    """The fixture's rules fire (or stay silent) as its name and cases.json say (cards shown,
    silent-mode cards logged, rules a shown card covers), with the indicator, covered rules,
    evidence and suggestions cases.json gives."""
    rule = directory.name
    cards = run_case(client, directory, name, case)
    fired = sorted(c["source"]["topic"]["code"] for c in cards)
    assert fired == sorted(case["fires"]), case["description"]
    silent = silent_cards(client, directory, name, case)
    logged = sorted(c["source"]["topic"]["code"] for c in silent)
    assert logged == sorted(case.get("silent_fires", [])), case["description"]
    covered = {r for c in cards for r in c.get("extension", {}).get("opioid-lbp-cds.covers", [])}
    assert set(case.get("covered", [])) <= covered, case["description"]
    card = next((c for c in [*cards, *silent] if c["source"]["topic"]["code"] == rule), None)
    if card is None:
        return
    assert card["indicator"] == case["indicator"]
    covers = card.get("extension", {}).get("opioid-lbp-cds.covers", [])
    assert covers == case.get("covers", []), "the card names the other rules it answers"
    for text in case.get("evidence", []):
        assert text in card["detail"], (text, card["detail"])
    if "suggestions" in case:
        assert [s["label"] for s in card.get("suggestions", [])] == case["suggestions"]


def test_every_rule_has_fixtures_that_fire_and_that_stay_silent() -> None:
    """Each registered rule has at least 6 firing and 8 silent readable Bundle scenarios,
    and no fixture is untested."""
    check_fixture_folders(RULE_DIRS, {r.id for r in registry.default_rules()})


@pytest.mark.parametrize("directory,name,case", CASES, ids=IDS)
def test_fixture(client: CheckedClient, directory: Path, name: str, case: dict[str, Any]) -> None:
    """The fixture's rules fire (or stay silent) as its name and cases.json say."""
    check_case(client, directory, name, case)


FIRING = [(d, n, c) for d, n, c in CASES if n.startswith("fires-")]


@pytest.mark.parametrize("directory,name,case", FIRING, ids=[f"{d.name}/{n}" for d, n, _ in FIRING])
def test_suggestions_are_complete_valid_r4(
    client: CheckedClient, directory: Path, name: str, case: dict[str, Any]
) -> None:
    """Every suggested resource validates as R4, names the patient, and is one-click usable:
    medications coded in RxNorm with text, referrals SNOMED-coded with intent order; deletes
    name a draft that exists in the request."""
    from fhir.resources.R4B import get_fhir_model_class

    bundle = json.loads((directory / name).read_text("utf-8"))
    patient_id = next(
        e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    draft_ids = {
        f"MedicationRequest/{e['resource']['id']}"
        for e in bundle["entry"]
        if e["resource"].get("status") == "draft"
    }
    for card in run_case(client, directory, name, case):
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if action["type"] == "delete":
                    assert action["resourceId"] in draft_ids
                    continue
                resource = action["resource"]
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                assert resource["subject"]["reference"] == f"Patient/{patient_id}"
                if resource["resourceType"] == "MedicationRequest":
                    concept = resource["medicationCodeableConcept"]
                    assert concept["text"] and concept["coding"][0]["code"]
                    assert concept["coding"][0]["system"].endswith("rxnorm")
                else:
                    assert resource["intent"] == "order"
                    assert resource["code"]["coding"][0]["system"] == "http://snomed.info/sct"


def test_replace_with_naproxen_creates_naproxen_then_deletes_the_draft(
    client: CheckedClient,
) -> None:
    """The one-click alternative orders naproxen, then removes the draft opioid: create comes
    first because the CDS Hooks sandbox applies only a suggestion's first action."""
    rule = "opioid-start-chronic-lbp"
    name = "fires-oxycodone-lbp-onset-29-weeks-ago.json"
    case = next(c for r, n, c in CASES if n == name)
    cards = run_case(client, FIXTURE_ROOTS[0] / rule, name, case)
    first = cards[0]
    replace = first["suggestions"][0]
    assert replace["label"] == "Replace oxycodone with naproxen 500 mg twice daily as needed"
    assert [a["type"] for a in replace["actions"]] == ["create", "delete"]
    assert replace["actions"][1]["resourceId"] == "MedicationRequest/d1"
    naproxen = replace["actions"][0]["resource"]["medicationCodeableConcept"]
    assert naproxen["coding"][0]["code"] == "198014"


def test_a_suggestion_is_not_repeated_on_a_second_card(client: CheckedClient) -> None:
    """When two cards would offer the same order, only the first (most severe) offers it."""
    name = "fires-oxycodone-lbp-onset-29-weeks-ago.json"
    case = next(c for r, n, c in CASES if n == name)
    cards = run_case(client, FIXTURE_ROOTS[0] / "opioid-start-chronic-lbp", name, case)
    labels = [s["label"] for c in cards for s in c.get("suggestions", [])]
    assert len(labels) == len(set(labels))
    for card in cards:
        assert ("selectionBehavior" in card) is bool(card.get("suggestions"))


def test_override_reasons_come_from_the_clinical_brief(client: CheckedClient) -> None:
    """Cards offer coded override reasons with display, from one shared catalogue."""
    name = "fires-oxycodone-lbp-onset-29-weeks-ago.json"
    case = next(c for r, n, c in CASES if n == name)
    for card in run_case(client, FIXTURE_ROOTS[0] / "opioid-start-chronic-lbp", name, case):
        reasons = card["overrideReasons"]
        assert all(r["system"] == "urn:opioid-lbp-cds:override-reason" for r in reasons)
        assert all(r["display"] for r in reasons)
    codes = {
        r["code"]
        for c in run_case(client, FIXTURE_ROOTS[0] / "opioid-start-chronic-lbp", name, case)
        for r in c["overrideReasons"]
    }
    assert {
        "refractory",
        "acute-flare-short-course",
        "palliative",
        "established-elsewhere",
        "benefit-outweighs-risk",
        "first-line-tried-elsewhere",
        "nsaid-contraindicated",
    } <= codes
