"""Every bad request gets a clear 4xx with an OperationOutcome body, never a 500."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
import requests
from conftest import (
    ALPRAZOLAM,
    SELECT,
    SIGN,
    CheckedClient,
    bundle_of,
    card_ids_for,
    check_body,
    feedback_item,
    full_prefetch,
    make_app,
    no_unexpected_errors,
    sandbox,
    shipped,
)
from conftest import diagnostics as _diagnostics


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


@pytest.mark.parametrize(
    "path,mutate,expression",
    [
        (SIGN, lambda b: b.pop("context"), "context"),
        (SIGN, lambda b: b.pop("hookInstance"), "hookInstance"),
        (SIGN, lambda b: b["context"].pop("patientId"), "context.patientId"),
        (SIGN, lambda b: b["context"].pop("draftOrders"), "context.draftOrders"),
        (SIGN, lambda b: b["context"].update(draftOrders=[]), "context.draftOrders"),
        (
            SIGN,
            lambda b: b["context"].update(draftOrders={"resourceType": "MedicationRequest"}),
            "context.draftOrders",
        ),
        (SIGN, lambda b: b["context"].update(patientId=42), "context.patientId"),
        (SIGN, lambda b: b.update(prefetch=[1, 2]), "prefetch"),
        (
            SIGN,
            lambda b: b.update(
                fhirAuthorization={"access_token": "t", "token_type": "Bearer"}, fhirServer=None
            ),
            "fhirServer",
        ),
        (
            SIGN,
            lambda b: b.update(fhirAuthorization={"token_type": "Bearer"}),
            "fhirAuthorization.access_token",
        ),
        (
            SELECT,
            lambda b: b["context"].update(selections="MedicationRequest/x"),
            "context.selections",
        ),
    ],
)
def test_missing_or_wrong_context_is_400(
    client: CheckedClient, path: str, mutate: Any, expression: str
) -> None:
    """Missing required fields and wrongly shaped context are named in the OperationOutcome."""
    body = sandbox(
        "order-select-empty-draft.json" if path == SELECT else "order-sign-oxycodone.json"
    )
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


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/cds-services"),
        ("PUT", SIGN),
        ("GET", SIGN),
        ("GET", SIGN + "/feedback"),
        ("PATCH", "/cds-services"),
    ],
)
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


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_non_json_content_type_is_415(client: CheckedClient, content_type: str) -> None:
    """Only application/json (or a +json type) is accepted."""
    response = client.post(
        SIGN,
        data=json.dumps(sandbox("order-sign-oxycodone.json")),
        content_type=content_type or None,
    )
    assert response.status_code == 415


def test_fhir_json_content_type_is_accepted(client: CheckedClient) -> None:
    """application/fhir+json is JSON too: the request is parsed (here 400 for wrong hook)."""
    response = client.post(
        SIGN,
        data=json.dumps(sandbox("patient-view.json")),
        content_type="application/fhir+json; charset=utf-8",
    )
    assert response.status_code == 400


def test_deep_nesting_is_400(client: CheckedClient) -> None:
    """100,000 nested arrays are refused quickly, not a crash."""
    response = client.post(
        SIGN, data="[" * 100_000 + "]" * 100_000, content_type="application/json"
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "body,status",
    [
        ({"feedback": "nope"}, 400),
        ({"feedback": [{"card": "", "outcome": "accepted"}]}, 400),
        ({"feedback": [{"card": "c", "outcome": "maybe"}]}, 400),
        ({"feedback": [{"card": "c", "outcome": "accepted", "acceptedSuggestions": [{}]}]}, 400),
        ({"feedback": [{"card": "c", "outcome": "overridden", "overrideReason": "x"}]}, 400),
        ({"feedback": []}, 200),
    ],
)
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


# --- Honest errors: a bug is a 500 with an error id; client errors stay 4xx -------------------

_ERROR_ID = re.compile(r"error id ([0-9a-f]{16})")


def _error_id(response: Any) -> str:
    """The error id a 500's OperationOutcome carries (checked against the schema first)."""
    assert response.status_code == 500
    body = response.get_json()
    check_body(500, body)
    assert body["issue"][0]["code"] == "exception"
    match = _ERROR_ID.search(body["issue"][0]["diagnostics"])
    assert match, body
    return match.group(1)


def _logged(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.msg == event]


@pytest.mark.parametrize("component", ["loader", "rules"])
def test_a_failing_component_is_500_with_an_error_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, component: str
) -> None:
    """An exception in record loading or the rule runner is a bug: 500 with an error id that
    the log line carries too, without the exception's message."""
    app = make_app()
    engine = app.extensions["cds_engine"]

    def explode(*_: Any, **__: Any) -> Any:
        raise KeyError("Alex Rivera")  # a message quoting patient data

    if component == "loader":
        monkeypatch.setattr(engine.loader, "load", explode)
    else:
        monkeypatch.setattr(engine, "run_rules", explode)
    body = _full(sandbox("order-sign-oxycodone.json"))
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = app.test_client().post(SIGN, json=body)
    error_id = _error_id(response)
    [record] = _logged(caplog, "hook-unexpected-error")
    assert record.__dict__["error_id"] == error_id and record.__dict__["error"] == "KeyError"
    assert record.__dict__["unexpected"] is True
    assert re.fullmatch(r"[\w.]+\.py:\d+", record.__dict__["where"])
    assert "Alex Rivera" not in caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    [summary] = _logged(caplog, "hook")
    assert summary.__dict__["status"] == 500 and summary.__dict__["error_id"] == error_id


def test_a_failing_card_template_drops_that_card_with_an_error_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A card that cannot be rendered is a bug isolated like a failing rule: the call still
    answers 200, that card is dropped, and the log carries an error id, never the message."""
    app = make_app()
    engine = app.extensions["cds_engine"]

    def explode(*_: Any, **__: Any) -> Any:
        raise KeyError("Alex Rivera")

    monkeypatch.setattr(engine.templates, "render", explode)
    body = _full(sandbox("order-sign-oxycodone.json"))
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = app.test_client().post(SIGN, json=body)
    assert response.status_code == 200 and response.get_json() == {"cards": []}
    failures = _logged(caplog, "card-render-failed")
    assert failures and all(
        r.__dict__["unexpected"] is True and r.__dict__["error_id"] for r in failures
    )
    [summary] = _logged(caplog, "hook")
    assert summary.__dict__["failed_rules"]
    assert "Alex Rivera" not in caplog.text + " ".join(str(r.__dict__) for r in caplog.records)


def test_a_failing_view_is_500_with_an_error_id(caplog: pytest.LogCaptureFixture) -> None:
    """An exception outside the engine (a broken feedback store) reaches the app's last
    handler: 500 with an error id, logged with the exception type only."""

    class BrokenStore:
        def add_feedback(self, *_: Any) -> int:
            raise RuntimeError("card c-1 for patient pt-secret")

    app = make_app()
    app.extensions["cds_store"] = BrokenStore()
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = app.test_client().post(SIGN + "/feedback", json={"feedback": []})
    error_id = _error_id(response)
    [record] = _logged(caplog, "unexpected-error")
    assert record.__dict__["error_id"] == error_id
    assert record.__dict__["error"] == "RuntimeError"
    assert "pt-secret" not in caplog.text


# --- What the stricter fuzzing found (each: the input, and what it now gets) ------------------


def _full(body: dict[str, Any]) -> dict[str, Any]:
    """The body with every prefetch key filled (its own conditions kept) and no fhirServer."""
    body.pop("fhirServer", None)
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    return body


def _draft(body: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = body["context"]["draftOrders"]["entry"][0]["resource"]
    return resource


@pytest.mark.parametrize("outcome", [["accepted"], {"x": 1}, 3, None])
def test_feedback_outcome_of_the_wrong_type_is_400(client: CheckedClient, outcome: Any) -> None:
    """A feedback outcome that is a list (unhashable) or another non-string is a 400."""
    item = {**feedback_item(card_ids_for(client.client.application)), "outcome": outcome}
    response = client.post(SIGN + "/feedback", {"feedback": [item]})
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["feedback[0].outcome"]


@pytest.mark.parametrize("draft_id", [["request-123"], {"id": "request-123"}, 7])
def test_draft_order_id_of_the_wrong_type_still_gets_advice(
    client: CheckedClient, draft_id: Any
) -> None:
    """A draft order whose id is a list, object or number is read, not a crash."""
    body = _full(sandbox("order-sign-oxycodone.json"))
    _draft(body)["id"] = draft_id
    response = client.post(SIGN, body)
    assert response.status_code == 200
    assert response.get_json()["cards"]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json(client: CheckedClient, raw: str) -> None:
    """NaN and Infinity (which Python's parser would accept) are refused as invalid JSON."""
    body = _full(sandbox("order-sign-oxycodone.json"))
    _draft(body)["dispenseRequest"]["expectedSupplyDuration"]["value"] = "@@"
    response = client.post(
        SIGN, data=json.dumps(body).replace('"@@"', raw), content_type="application/json"
    )
    assert response.status_code == 400
    assert "not valid JSON" in _diagnostics(response)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, 1e308, -5])
@pytest.mark.parametrize("where", ["expectedSupplyDuration", "doseQuantity", "period"])
def test_odd_numbers_in_supply_and_dose_are_ignored(value: Any, where: str) -> None:
    """NaN, infinities and numbers too large for a float (1e999 parses to inf; the engine also
    takes Python values from `cds-service evaluate`) are ignored, never a crash."""
    app = make_app()
    body = _full(sandbox("order-sign-oxycodone.json"))
    draft = _draft(body)
    if where == "expectedSupplyDuration":
        draft["dispenseRequest"]["expectedSupplyDuration"]["value"] = value
    elif where == "doseQuantity":
        draft["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = value
    else:
        draft["dosageInstruction"][0]["timing"]["repeat"]["period"] = value
    with no_unexpected_errors():
        result = app.extensions["cds_engine"].evaluate("opioid-lbp-order-sign", body)
    assert result.status == 200 and result.body["cards"]
    huge = json.dumps(body).replace("NaN", "1e999").replace("Infinity", "1e999")
    with no_unexpected_errors():
        response = app.test_client().post(SIGN, data=huge, content_type="application/json")
    assert response.status_code == 200


def test_lone_surrogate_in_echoed_text_becomes_a_replacement_character(
    client: CheckedClient,
) -> None:
    """A lone surrogate escape in a drug name that the card quotes comes back as U+FFFD in
    valid UTF-8 (it has no UTF-8 form, so echoing it would crash the response)."""
    body = _full(sandbox("order-sign-oxycodone.json"))
    body["prefetch"]["meds"] = bundle_of(
        {
            **ALPRAZOLAM,
            "medicationCodeableConcept": {"text": "Alprazolam 0.5 MG Oral Tablet \ud800x"},
        }
    )
    response = client.post(SIGN, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    details = [c["detail"] for c in json.loads(response.data.decode("utf-8"))["cards"]]
    assert any("Alprazolam 0.5 MG Oral Tablet \ufffdx" in d for d in details), details


def test_lone_surrogate_in_patient_id_is_read_without_a_crash(client: CheckedClient) -> None:
    """A lone surrogate in context.patientId, which goes into FHIR read URLs: the reads are made
    (with U+FFFD) and the answer is a normal 412 when the server has nothing."""
    import responses

    body = sandbox("order-sign-oxycodone.json")
    body["context"]["patientId"] = "pt-\ud800"
    body.pop("prefetch")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(re.compile(r".*"), status=404)
        response = client.post(SIGN, data=json.dumps(body), content_type="application/json")
        urls = [str(call.request.url) for call in rsps.calls]
    assert response.status_code == 412
    assert urls and all("pt-%EF%BF%BD" in url for url in urls if "patient" in url.lower())


def test_wrong_hook_is_logged_as_unexpected_hook_without_quoting_it(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The hook value a client sent never reaches the log or the answer."""
    body = sandbox("order-sign-oxycodone.json")
    body["hook"] = "Zyzzyva-hook"
    body["hookInstance"] = "Quentin-instance"
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = client.post(SIGN, body)
    assert response.status_code == 400
    assert "Zyzzyva" not in _diagnostics(response)
    [record] = _logged(caplog, "hook")
    assert record.__dict__["reason"].startswith("unexpected hook")
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "Zyzzyva" not in text and "Quentin" not in text


@pytest.mark.parametrize(
    "answer,how",
    [
        ({"status": 404}, "meds: FHIR server answered status 404"),
        (
            {"body": "{not json", "content_type": "application/fhir+json"},
            "meds: FHIR answer unreadable (not JSON)",
        ),
        ({"body": requests.exceptions.ReadTimeout("slow")}, "meds: FHIR read timed out"),
    ],
)
def test_412_log_line_says_which_key_failed_and_how(
    client: CheckedClient, caplog: pytest.LogCaptureFixture, answer: dict[str, Any], how: str
) -> None:
    """A 412's log line names the prefetch key and how its read failed, and no patient data."""
    import responses

    body = sandbox("order-sign-oxycodone.json")
    body["context"]["patientId"] = "pt-secret-9"
    body["prefetch"] = {k: v for k, v in full_prefetch("pt-secret-9").items() if k != "meds"}
    with responses.RequestsMock() as rsps, caplog.at_level(logging.INFO, logger="cds_service"):
        rsps.get(re.compile(r"http://127\.0\.0\.1:8081/MedicationRequest\?.*"), **answer)
        response = client.post(SIGN, body)
    assert response.status_code == 412
    [record] = _logged(caplog, "hook")
    assert how in record.__dict__["reason"], record.__dict__["reason"]
    assert "pt-secret-9" not in caplog.text + str(record.__dict__)


def test_412_without_fhir_access_says_why(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Not prefetched and no FHIR server (or one not allowed): the log line says so per key."""
    body = sandbox("order-sign-oxycodone.json")
    body["fhirServer"] = "https://fhir.example.com/r4"
    body["prefetch"] = {"patient": {"resourceType": "OperationOutcome"}}
    with caplog.at_level(logging.INFO, logger="cds_service"):
        assert client.post(SIGN, body).status_code == 412
    reason = _logged(caplog, "hook")[0].__dict__["reason"]
    assert "patient: prefetch an OperationOutcome, fhirServer not allowed" in reason
    assert "meds: not prefetched, fhirServer not allowed" in reason


@pytest.mark.parametrize("status", [["completed"], {"x": 1}, 3])
def test_procedure_status_of_the_wrong_type_does_not_crash_a_rule(status: Any) -> None:
    """A hospice Procedure whose status is a list (unhashable) or another non-string: no rule
    fails, and it still counts as hospice evidence (only named statuses discount it)."""
    body = _full(sandbox("order-sign-oxycodone.json"))
    body["prefetch"]["procedures"] = bundle_of(
        {
            "resourceType": "Procedure",
            "id": "hospice",
            "status": status,
            "subject": {"reference": "Patient/pt-1"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "385763009"}]},
        }
    )
    with no_unexpected_errors():
        result = make_app().extensions["cds_engine"].evaluate("opioid-lbp-order-sign", body)
    assert result.status == 200 and result.log["failed_rules"] == []
    # hospice: every rule stays silent
    assert shipped([c["source"]["topic"]["code"] for c in result.body["cards"]]) == []
