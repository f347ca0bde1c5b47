"""Knowledge through the HTTP API: exclusions recognised by SNOMED CT / ICD-10-CM / text in
Condition, Procedure and ServiceRequest; what counts as a first-line drug trial; an order
recognised from its RxNorm product code alone (fixtures/fhir/knowledge/)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import FIXTURES, CheckedClient

from cds_service.hooks.bundle_request import request_from_bundle

FOLDER = FIXTURES / "knowledge"
SPEC = json.loads((FOLDER / "scenarios.json").read_text("utf-8"))
BASE = json.loads((FOLDER / SPEC["base"]).read_text("utf-8"))
SCENARIOS = sorted(SPEC["scenarios"].items())


def fired(client: CheckedClient, added: list[dict[str, Any]]) -> list[str]:
    bundle = copy.deepcopy(BASE)
    bundle["entry"] += [
        {"fullUrl": f"urn:uuid:{r['resourceType']}-{r['id']}", "resource": r}
        for r in copy.deepcopy(added)
    ]
    response = client.post(
        "/cds-services/opioid-lbp-order-sign", request_from_bundle(bundle, "order-sign")
    )
    assert response.status_code == 200, response.get_json()
    # a rule whose concern another card also answers (say it once) counts as fired: the card
    # names it in its extension, and the card's text says what that rule would have said
    cards = response.get_json()["cards"]
    return sorted(
        [c["source"]["topic"]["code"] for c in cards]
        + [r for c in cards for r in c.get("extension", {}).get("opioid-lbp-cds.covers", [])]
    )


@pytest.mark.parametrize("name,scenario", SCENARIOS, ids=[n for n, _ in SCENARIOS])
def test_scenario(client: CheckedClient, name: str, scenario: dict[str, Any]) -> None:
    """The scenario's added resources make exactly the listed rules fire (none when excluded)."""
    assert fired(client, scenario["add"]) == sorted(scenario["fires"]), scenario["description"]


def test_scenarios_cover_the_issue() -> None:
    """Every exclusion and first-line case the issue names has a scenario, firing or silent."""
    names = set(SPEC["scenarios"])
    silent = {n for n, s in SPEC["scenarios"].items() if not s["fires"]}
    assert {
        "cancer-snomed-malignant-neoplastic-disease",
        "sickle-cell-hb-ss-snomed",
        "hospice-referral-service-request",
        "end-of-life-procedure-terminal-care",
    } <= silent
    assert {
        "sickle-cell-trait-icd",
        "history-of-cancer-z85",
        "first-line-low-dose-aspirin",
        "first-line-cold-remedy",
        "first-line-opioid-combination",
    } <= names - silent
    for drug in (
        "naproxen",
        "ibuprofen",
        "celecoxib",
        "meloxicam",
        "diclofenac-gel",
        "acetaminophen",
    ):
        assert SPEC["scenarios"][f"first-line-{drug}"]["fires"] == ["opioid-start-chronic-lbp"]


def test_base_order_has_no_text() -> None:
    """The base draft order carries only an RxNorm code, so firing proves code-only recognition."""
    draft = next(
        e["resource"] for e in BASE["entry"] if e["resource"]["resourceType"] == "MedicationRequest"
    )
    concept = draft["medicationCodeableConcept"]
    assert "text" not in concept and all("display" not in c for c in concept["coding"])
