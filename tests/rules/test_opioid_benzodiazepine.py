"""opioid-benzodiazepine specifics beyond the fixture table (tests/test_rule_fixtures.py)."""

from __future__ import annotations

import json
from typing import Any

from conftest import FIXTURES, SERVICE, CheckedClient, fixture_request

from cds_service.hooks.bundle_request import request_from_bundle

RULE_DIR = FIXTURES / "opioid-benzodiazepine"
CASES: dict[str, dict[str, Any]] = json.loads((RULE_DIR / "cases.json").read_text("utf-8"))


def evaluate_fixture(client: CheckedClient, name: str) -> tuple[dict[str, Any], list[Any]]:
    case = CASES[name]
    body = fixture_request(RULE_DIR, name, case)
    response = client.post(f"/cds-services/{SERVICE[case['hook']]}", body)
    assert response.status_code == 200, response.get_json()
    return case, response.get_json()["cards"]


def test_moud_card_never_suggests_stopping_buprenorphine(client: CheckedClient) -> None:
    """With buprenorphine for OUD the advice is to keep it: no suggestion deletes it."""
    _, cards = evaluate_fixture(client, "fires-buprenorphine-for-oud-with-alprazolam-draft.json")
    card = cards[0]
    assert "do not stop" in card["summary"].lower()
    deletes = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert [a["resourceId"] for a in deletes] == ["MedicationRequest/draft-alp"]


def test_methadone_for_oud_is_treated_like_buprenorphine(client: CheckedClient) -> None:
    """Methadone with an opioid use disorder diagnosis gets the keep-treatment advice."""
    _, cards = evaluate_fixture(client, "fires-methadone-for-oud-with-lorazepam-draft.json")
    assert "do not stop" in cards[0]["summary"].lower()
    deletes = [
        a["resourceId"]
        for s in cards[0]["suggestions"]
        for a in s["actions"]
        if a["type"] == "delete"
    ]
    assert deletes == ["MedicationRequest/draft-lzp"]


def test_suggested_resources_are_valid_r4(client: CheckedClient) -> None:
    """Every resource a suggestion would create validates against the R4 models."""
    from fhir.resources.R4B import get_fhir_model_class

    _, cards = evaluate_fixture(client, "fires-oxycodone-draft-active-alprazolam.json")
    creates = [
        a["resource"]
        for s in cards[0]["suggestions"]
        for a in s["actions"]
        if a["type"] == "create"
    ]
    assert creates
    for resource in creates:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert resource["subject"]["reference"] == "Patient/obz-1"
        assert resource["medicationCodeableConcept"]["text"]
        assert resource["medicationCodeableConcept"]["coding"][0]["code"]


def test_order_select_focuses_on_the_selected_order(client: CheckedClient) -> None:
    """order-select: an opioid draft that is not selected does not trigger advice on its own."""
    bundle = json.loads(
        (RULE_DIR / "fires-tramadol-and-diazepam-in-one-draft-set.json").read_text("utf-8")
    )
    body = request_from_bundle(bundle, "order-select")
    body["context"]["selections"] = ["MedicationRequest/draft-dzp"]
    cards = client.post("/cds-services/opioid-lbp-order-select", body).get_json()["cards"]
    assert len(cards) == 1
    # the selected diazepam is the focus: only it is offered for removal
    deletes = [
        a["resourceId"]
        for s in cards[0]["suggestions"]
        for a in s["actions"]
        if a["type"] == "delete"
    ]
    assert deletes == ["MedicationRequest/draft-dzp"]


def test_long_drug_names_keep_the_decision_words_in_the_summary(client: CheckedClient) -> None:
    """Three OUD treatment products and a long benzodiazepine name: the summary falls back to class
    words and keeps its decision ("do not stop treatment; coordinate care") whole."""
    _, cards = evaluate_fixture(
        client, "fires-long-drug-names-keep-the-decision-in-the-summary.json"
    )
    summary = cards[0]["summary"]
    assert len(summary) <= 139 and not summary.endswith("\u2026")
    assert summary.endswith("with a benzodiazepine: do not stop treatment; coordinate care")


def test_an_opioid_cough_product_with_a_benzodiazepine_is_info_without_mme_or_naloxone(
    client: CheckedClient,
) -> None:
    """Codeine cough syrup with current alprazolam: one info card about the cough product,
    no MME, no naloxone offer, and no pain-opioid card (start, first-line, naloxone)."""
    _, cards = evaluate_fixture(client, "fires-codeine-cough-syrup-with-benzodiazepine.json")
    (card,) = cards
    assert card["indicator"] == "info" and "cough" in card["summary"]
    assert "MME" not in card["detail"] and "naloxone" not in card["detail"].lower()
    assert [s["label"] for s in card["suggestions"]] == ["Remove the draft codeine order"]
    assert "opioid-lbp-cds.covers" not in card.get("extension", {})


def test_a_pain_opioid_with_a_benzodiazepine_keeps_the_main_card_beside_a_cough_product(
    client: CheckedClient,
) -> None:
    """With a pain opioid draft too, the ordinary co-prescription card is given (MME and
    naloxone), not the cough-product variant."""
    bundle = json.loads(
        (RULE_DIR / "fires-codeine-cough-syrup-with-benzodiazepine.json").read_text("utf-8")
    )
    oxycodone = json.loads(json.dumps(bundle["entry"][-1]))
    oxycodone["resource"]["id"] = "draft-oxy"
    oxycodone["fullUrl"] = "urn:uuid:draft-oxy"
    oxycodone["resource"]["medicationCodeableConcept"] = {
        "text": "Oxycodone Hydrochloride 5 MG Oral Tablet"
    }
    bundle["entry"].append(oxycodone)
    body = request_from_bundle(bundle, "order-sign")
    cards = client.post("/cds-services/opioid-lbp-order-sign", body).get_json()["cards"]
    co = next(c for c in cards if c["source"]["topic"]["code"] == "opioid-benzodiazepine")
    assert co["indicator"] == "warning" and "cough" not in co["summary"]
    assert "MME/day" in co["detail"]
