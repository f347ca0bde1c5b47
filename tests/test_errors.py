"""Every bad request gets a clear 4xx with an OperationOutcome body, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import CheckedClient, make_app, sandbox

SIGN = "/cds-services/opioid-lbp-order-sign"
SELECT = "/cds-services/opioid-lbp-order-select"
VIEW = "/cds-services/opioid-lbp-patient-view"


def _diagnostics(response: Any) -> str:
    return str(response.get_json()["issue"][0]["diagnostics"])


def test_malformed_json_is_400(client: CheckedClient) -> None:
    """A body that is not JSON is refused with 400."""
    response = client.post(SIGN, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in _diagnostics(response)


def test_invalid_utf8_is_400(client: CheckedClient) -> None:
    """Bytes that are not UTF-8 are refused with 400."""
    response = client.post(SIGN, data=b"\xff\xfe{", content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("body", [[], "text", 3, None, {"foo": "bar"}])
def test_not_a_cds_hooks_request_is_400(client: CheckedClient, body: Any) -> None:
    """JSON that is not a hook request object is refused with 400."""
    response = client.post(SIGN, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400


def test_hook_must_match_the_service(client: CheckedClient) -> None:
    """A patient-view request sent to the order-sign service is refused with 400."""
    response = client.post(SIGN, sandbox("patient-view.json"))
    assert response.status_code == 400
    assert "order-sign" in _diagnostics(response)
    assert response.get_json()["issue"][0]["expression"] == ["hook"]


@pytest.mark.parametrize("path,mutate,expression", [
    (SIGN, lambda b: b.pop("context"), "context"),
    (SIGN, lambda b: b.pop("hookInstance"), "hookInstance"),
    (SIGN, lambda b: b["context"].pop("patientId"), "context.patientId"),
    (SIGN, lambda b: b["context"].pop("draftOrders"), "context.draftOrders"),
    (SIGN, lambda b: b["context"].update(draftOrders=[]), "context.draftOrders"),
    (SIGN, lambda b: b["context"].update(draftOrders={"resourceType": "MedicationRequest"}),
     "context.draftOrders"),
    (SIGN, lambda b: b["context"].update(patientId=42), "context.patientId"),
    (SIGN, lambda b: b.update(prefetch=[1, 2]), "prefetch"),
    (SIGN, lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer"},
                              fhirServer=None), "fhirServer"),
    (SIGN, lambda b: b.update(fhirAuthorization={"token_type": "Bearer"}),
     "fhirAuthorization.access_token"),
    (SELECT, lambda b: b["context"].update(selections="MedicationRequest/x"),
     "context.selections"),
])
def test_missing_or_wrong_context_is_400(client: CheckedClient, path: str, mutate: Any,
                                         expression: str) -> None:
    """Missing required fields and wrongly shaped context are named in the OperationOutcome."""
    body = sandbox("order-select-empty-draft.json" if path == SELECT
                   else "order-sign-oxycodone.json")
    if path == SELECT:
        body["hook"] = "order-select"
    mutate(body)
    if body.get("fhirServer") is None:
        body.pop("fhirServer", None)
    response = client.post(path, body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["issue"][0]["expression"] == [expression]


def test_unknown_service_is_404(client: CheckedClient) -> None:
    """An unknown service id is 404 on hook and feedback URLs."""
    assert client.post("/cds-services/unknown", {"hook": "x"}).status_code == 404
    assert client.post("/cds-services/unknown/feedback", {"feedback": []}).status_code == 404
    assert client.get("/nowhere").status_code == 404


@pytest.mark.parametrize("method,path", [("DELETE", "/cds-services"), ("PUT", SIGN),
                                         ("GET", SIGN), ("GET", SIGN + "/feedback"),
                                         ("PATCH", "/cds-services")])
def test_wrong_method_is_405(client: CheckedClient, method: str, path: str) -> None:
    """Methods the endpoint does not take are 405 with an Allow header."""
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert "Allow" in response.headers


def test_body_over_the_limit_is_413() -> None:
    """A body over CDS_MAX_BODY_BYTES is refused with 413 before it is parsed."""
    from conftest import CheckedClient as CC

    app = make_app(max_body_bytes=2048)
    client = CC(app.test_client())
    body = sandbox("order-sign-oxycodone.json")
    body["padding"] = "x" * 5000
    response = client.post(SIGN, body)
    assert response.status_code == 413


def test_too_many_draft_orders_is_413() -> None:
    """A draftOrders Bundle over the entry limit is refused with 413."""
    app = make_app(max_bundle_entries=10)
    client = CheckedClient(app.test_client())
    body = sandbox("order-sign-oxycodone.json")
    entry = body["context"]["draftOrders"]["entry"][0]
    body["context"]["draftOrders"]["entry"] = [entry] * 11
    assert client.post(SIGN, body).status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/xml", ""])
def test_non_json_content_type_is_415(client: CheckedClient, content_type: str) -> None:
    """Only application/json (or a +json type) is accepted."""
    response = client.post(SIGN, data=json.dumps(sandbox("order-sign-oxycodone.json")),
                           content_type=content_type or None)
    assert response.status_code == 415


def test_fhir_json_content_type_is_accepted(client: CheckedClient) -> None:
    """application/fhir+json is JSON too: the request is parsed (here 400 for wrong hook)."""
    response = client.post(SIGN, data=json.dumps(sandbox("patient-view.json")),
                           content_type="application/fhir+json; charset=utf-8")
    assert response.status_code == 400


def test_deep_nesting_is_400(client: CheckedClient) -> None:
    """100,000 nested arrays are refused quickly, not a crash."""
    response = client.post(SIGN, data="[" * 100_000 + "]" * 100_000,
                           content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("body,status", [
    ({"feedback": "nope"}, 400),
    ({"feedback": [{"card": "", "outcome": "accepted"}]}, 400),
    ({"feedback": [{"card": "c", "outcome": "maybe"}]}, 400),
    ({"feedback": [{"card": "c", "outcome": "accepted", "acceptedSuggestions": [{}]}]}, 400),
    ({"feedback": [{"card": "c", "outcome": "overridden", "overrideReason": "x"}]}, 400),
    ({"feedback": []}, 200),
])
def test_feedback_validation(client: CheckedClient, body: Any, status: int) -> None:
    """Feedback items must name a card and an outcome; an empty batch is fine."""
    assert client.post(SIGN + "/feedback", body).status_code == status


def test_fifty_thousand_entry_bundle_is_413(client: CheckedClient) -> None:
    """A 50,000-entry prefetch Bundle is refused with 413, not processed."""
    body = sandbox("order-sign-oxycodone.json")
    entry = {"resource": {"resourceType": "MedicationRequest", "id": "x", "status": "active"}}
    body["prefetch"]["meds"] = {"resourceType": "Bundle", "entry": [entry] * 50_000}
    assert client.post(SIGN, body).status_code == 413
    body["prefetch"].pop("meds")
    body["context"]["draftOrders"]["entry"] = [entry] * 50_000
    assert client.post(SIGN, body).status_code == 413


def test_thousand_deep_nesting_is_400(client: CheckedClient) -> None:
    """1,000 levels of nesting are refused with 400."""
    deep = '{"a":' * 1000 + "1" + "}" * 1000
    response = client.post(SIGN, data=deep, content_type="application/json")
    assert response.status_code == 400


def test_deep_values_inside_resources_are_harmless(client: CheckedClient) -> None:
    """Nesting just under the parser's limit, inside fields the rules read, is not a crash."""
    body = sandbox("order-sign-oxycodone.json")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["medicationCodeableConcept"]["coding"][0]["system"] = "DEEP"
    order["medicationCodeableConcept"]["text"] = "DEEP"
    body["prefetch"]["conditions"]["entry"][0]["resource"]["code"]["text"] = "DEEP"
    body.pop("fhirServer")
    body["prefetch"].update(meds=None, patient=None)
    raw = json.dumps(body).replace('"DEEP"', "[" * 950 + '"x"' + "]" * 950)
    response = client.post(SIGN, data=raw, content_type="application/json")
    # 200 when the parser's depth budget allows it (it depends on the caller's stack), else 400
    assert response.status_code in {200, 400}
