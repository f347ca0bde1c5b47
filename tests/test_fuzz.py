"""Property-based: thousands of malformed or odd requests, zero 5xx on every endpoint."""

from __future__ import annotations

import copy
import json
from typing import Any

from conftest import check_body, make_app, sandbox
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# No FHIR server may be contacted during fuzzing: an empty allowlist.
APP = make_app(fhir_allowlist=(), log_level="CRITICAL")
CLIENT = APP.test_client()
PATHS = ["/cds-services/opioid-lbp-order-sign", "/cds-services/opioid-lbp-order-select",
         "/cds-services/opioid-lbp-patient-view", "/cds-services/opioid-lbp-order-sign/feedback",
         "/cds-services", "/cds-services/unknown"]
FHIR_WORDS = ["resourceType", "Bundle", "entry", "resource", "MedicationRequest", "status",
              "draft", "active", "medicationCodeableConcept", "coding", "text", "code",
              "authoredOn", "dispenseRequest", "validityPeriod", "end", "category", "subject",
              "reference", "hook", "context", "patientId", "draftOrders", "selections",
              "prefetch", "meds", "patient", "Oxycodone 5 MG", "alprazolam", "#m",
              "medicationReference", "contained", "Medication", "OperationOutcome", "link",
              "next", "2026-11-01", "-1", "9999-99-99"]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=20), st.sampled_from(FHIR_WORDS))
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(FHIR_WORDS),
                                                         st.text(max_size=8)),
                                               children, max_size=4)),
    max_leaves=20)

BASES = [sandbox("order-sign-oxycodone.json"), sandbox("patient-view.json"),
         sandbox("order-select-empty-draft.json"), sandbox("feedback-overridden.json")]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, prefix + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, prefix + (index,)))
    return out


@st.composite
def mutated_request(draw: Any) -> Any:
    """A real sandbox body with one to three subtrees replaced by arbitrary JSON."""
    body = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(body) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        target = body
        for step in path[:-1]:
            target = target[step]
        if draw(st.booleans()) and isinstance(target, dict):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = draw(json_value)
    return body


def _post(path: str, data: Any, content_type: str = "application/json") -> None:
    response = CLIENT.post(path, data=data, content_type=content_type)
    assert response.status_code < 500, (path, data)
    assert response.mimetype == "application/json"
    if response.status_code != 404 or path != "/cds-services/unknown":
        check_body(response.status_code, response.get_json(), path)


@settings(max_examples=900, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PATHS[:4]), mutated_request())
def test_mutated_sandbox_requests_never_5xx(path: str, body: Any) -> None:
    """Real bodies with random parts replaced, removed or retyped: always a valid answer."""
    _post(path, json.dumps(body))


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PATHS), json_value)
def test_arbitrary_json_never_5xx(path: str, body: Any) -> None:
    """Any JSON value at all, on every endpoint: a 2xx or a 4xx with an OperationOutcome."""
    _post(path, json.dumps(body))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PATHS), st.binary(max_size=200),
       st.sampled_from(["application/json", "text/plain", "application/fhir+json", ""]))
def test_arbitrary_bytes_never_5xx(path: str, data: bytes, content_type: str) -> None:
    """Random bytes with any content type: never a server error."""
    _post(path, data, content_type)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PATHS[:3]), json_value)
def test_odd_draft_orders_never_5xx(path: str, resource: Any) -> None:
    """Arbitrary JSON as a draft order or prefetched resource: never a server error."""
    body = sandbox("order-sign-oxycodone.json")
    body["hook"] = path.removeprefix("/cds-services/opioid-lbp-")
    body["context"]["selections"] = ["MedicationRequest/request-123"]
    body["context"]["draftOrders"]["entry"].append({"resource": resource})
    body["prefetch"]["meds"] = {"resourceType": "Bundle", "entry": [{"resource": resource}]}
    body.pop("fhirServer")
    body["prefetch"]["patient"] = {"resourceType": "Patient", "id": "pt-1"}
    _post(path, json.dumps(body))
