"""The CDS Hooks sandbox's real request bodies (quirks included) are answered correctly."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import responses
from conftest import (
    ALPRAZOLAM,
    FHIR,
    SELECT,
    SIGN,
    VIEW,
    CheckedClient,
    bundle_of,
    card_ids_for,
    empty_bundle,
    feedback_item,
    fhir_search,
    register_rest,
    rule_ids,
    sandbox,
    shipped,
)


@pytest.mark.parametrize(
    "name,path,expected",
    [
        ("patient-view.json", VIEW, []),
        ("order-select-empty-draft.json", SELECT, []),
        # low back pain since May 2026 (chronic), no opioid on record, nothing tried first
        # (one card: the start card also says first-line therapy is missing)
        ("order-sign-oxycodone.json", SIGN, ["opioid-start-chronic-lbp"]),
    ],
)
def test_sandbox_bodies_answer_200(
    client: CheckedClient, name: str, path: str, expected: list[str]
) -> None:
    """Each sandbox body, with the keys it omits served by the (mocked) FHIR server, gets 200
    and the advice the record calls for."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_rest(rsps)
        response = client.post(path, sandbox(name))
    assert response.status_code == 200
    assert shipped(rule_ids(response)) == expected


def test_order_sign_oxycodone_with_active_benzodiazepine(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The sandbox's oxycodone order (category as an object) plus an active alprazolam -> card."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(fhir_search("MedicationRequest"), json=bundle_of(ALPRAZOLAM))
        register_rest(rsps, skip=("MedicationRequest",))
        with caplog.at_level(logging.INFO, logger="cds_service"):
            response = client.post(SIGN, sandbox("order-sign-oxycodone.json"))
    cards = [
        c
        for c in response.get_json()["cards"]
        if c["source"]["topic"]["code"] == "opioid-benzodiazepine"
    ]
    assert len(cards) == 1
    assert "Oxycodone Hydrochloride 5 MG Oral Tablet" in cards[0]["detail"]
    assert "Alprazolam 0.5 MG Oral Tablet" in cards[0]["detail"]
    # the safer alternative first (naproxen instead), removing the draft last
    first = cards[0]["suggestions"][0]
    assert first["label"].startswith("Replace oxycodone with naproxen")
    delete = cards[0]["suggestions"][-1]["actions"][0]
    assert delete == {
        "type": "delete",
        "description": "Remove the draft oxycodone order",
        "resourceId": "MedicationRequest/request-123",
    }
    hook_log = [r for r in caplog.records if r.msg == "hook"][-1].__dict__
    assert hook_log["anomalies"]["MedicationRequest.category:object-for-array"] == 1


def _offline(name: str) -> dict[str, Any]:
    """A sandbox body with the required keys prefetched (alprazolam on record), no fhirServer."""
    body = sandbox(name)
    body["prefetch"] = {
        "patient": {"resourceType": "Patient", "id": "pt-1"},
        "meds": bundle_of(ALPRAZOLAM),
        "conditions": empty_bundle(),
    }
    body.pop("fhirServer")
    return body


def test_category_object_quirk_does_not_drop_the_order(client: CheckedClient) -> None:
    """category sent as an object is repaired: the draft is still evaluated."""
    response = client.post(SIGN, _offline("order-sign-oxycodone.json"))
    assert len(shipped(rule_ids(response))) == 1


def test_first_order_select_with_no_medication_is_quiet(client: CheckedClient) -> None:
    """The sandbox's first order-select has a draft with no drug yet: 200, no card."""
    response = client.post(SELECT, _offline("order-select-empty-draft.json"))
    assert response.status_code == 200 and shipped(rule_ids(response)) == []


@pytest.mark.parametrize("name", ["feedback-accepted.json", "feedback-overridden.json"])
def test_sandbox_feedback_is_accepted_and_stored_once(
    app: Any, client: CheckedClient, name: str
) -> None:
    """The sandbox's feedback shape (override reason without display) is stored idempotently
    once its ids are ones this service issued and its reason is from the card's catalogue."""
    body = sandbox(name)
    minted = feedback_item(card_ids_for(app), body["feedback"][0]["outcome"])
    body["feedback"][0]["card"] = card = minted["card"]
    if "acceptedSuggestions" in body["feedback"][0]:
        body["feedback"][0]["acceptedSuggestions"] = minted["acceptedSuggestions"]
    else:
        body["feedback"][0]["overrideReason"] = minted["overrideReason"]
        del body["feedback"][0]["overrideReason"]["reason"]["system"]  # the sandbox's shape
    for _ in range(2):
        assert client.post(SIGN + "/feedback", body).status_code == 200
    items = [i for i in app.extensions["cds_store"].feedback_items() if i["card_uuid"] == card]
    assert len(items) == 1
    assert items[0]["outcome"] == body["feedback"][0]["outcome"]
    assert items[0]["card_issued"] is False  # issued (its tag checks) but not yet logged


def test_fhir_server_base_with_trailing_slash(client: CheckedClient) -> None:
    """A fhirServer with a trailing slash is read without a double slash."""
    body = sandbox("order-sign-oxycodone.json")
    body["fhirServer"] = FHIR + "/"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_rest(rsps)
        assert client.post(SIGN, body).status_code == 200
        assert all("//" not in str(c.request.url).split("://", 1)[1] for c in rsps.calls)


def test_order_select_selection_by_full_url(client: CheckedClient) -> None:
    """A draft with no id, selected by its entry's fullUrl, is in focus."""
    body = sandbox("order-sign-oxycodone.json")
    body["hook"] = "order-select"
    entry = body["context"]["draftOrders"]["entry"][0]
    entry["resource"].pop("id")
    entry["fullUrl"] = "urn:uuid:5f0c0b1e-2f6a-4b0e-9a55-1c1d2e3f4a5b"
    body["context"]["selections"] = ["urn:uuid:5f0c0b1e-2f6a-4b0e-9a55-1c1d2e3f4a5b"]
    body["prefetch"] = {
        "patient": {"resourceType": "Patient", "id": "pt-1"},
        "meds": bundle_of(ALPRAZOLAM),
        "conditions": empty_bundle(),
    }
    body.pop("fhirServer")
    cards = client.post(SELECT, body).get_json()["cards"]
    assert shipped([c["source"]["topic"]["code"] for c in cards]) == ["opioid-benzodiazepine"]
    body["context"]["selections"] = ["MedicationRequest/something-else"]
    assert shipped(rule_ids(client.post(SELECT, body))) == []
