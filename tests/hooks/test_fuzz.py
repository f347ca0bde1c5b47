"""Property-based: malformed, odd and mutated requests on every endpoint. Every answer is a
2xx or a 4xx with an OperationOutcome; a 500, or any ERROR / "unexpected" log event (a rule
that crashed and was isolated included), fails the test.

The mutation fuzzer starts from the real request bodies (every fixture Bundle under
fixtures/fhir/ turned into a request for each hook, and the sandbox bodies) and changes values
the way broken clients and attackers do: lists or objects where strings go, NaN / Infinity,
huge numbers, lone surrogates (also in context.patientId, which is used in FHIR reads), wrong
types for feedback fields and draft order ids, removed keys.
"""

from __future__ import annotations

import copy
import json
import math
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    FEEDBACK,
    FIXTURES,
    SERVICE,
    check_body,
    make_app,
    no_unexpected_errors,
    sandbox,
)
from hypothesis import given
from hypothesis import strategies as st

from cds_service.hooks.bundle_request import request_from_bundle

# No FHIR server may be contacted during fuzzing: an empty allowlist.
# built at import (Hypothesis tests cannot take function fixtures), so with its own data folder
APP = make_app(
    fhir_allowlist=(), log_level="WARNING", data_dir=tempfile.mkdtemp(prefix="cds-fuzz-")
)
CLIENT = APP.test_client()
SERVICES = {hook: f"/cds-services/{service}" for hook, service in SERVICE.items()}
PATHS = [*SERVICES.values(), FEEDBACK, "/cds-services", "/cds-services/unknown"]
FHIR_WORDS = [
    "resourceType",
    "Bundle",
    "entry",
    "resource",
    "MedicationRequest",
    "status",
    "draft",
    "active",
    "medicationCodeableConcept",
    "coding",
    "text",
    "code",
    "authoredOn",
    "dispenseRequest",
    "validityPeriod",
    "end",
    "category",
    "subject",
    "reference",
    "hook",
    "context",
    "patientId",
    "draftOrders",
    "selections",
    "prefetch",
    "meds",
    "patient",
    "Oxycodone 5 MG",
    "alprazolam",
    "#m",
    "medicationReference",
    "contained",
    "Medication",
    "OperationOutcome",
    "link",
    "next",
    "2026-11-01",
    "-1",
    "9999-99-99",
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(FHIR_WORDS),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(FHIR_WORDS), st.text(max_size=8)), children, max_size=4
        ),
    ),
    max_leaves=20,
)

SANDBOX = [
    sandbox("order-sign-oxycodone.json"),
    sandbox("patient-view.json"),
    sandbox("order-select-empty-draft.json"),
    sandbox("feedback-overridden.json"),
]


def _fixture_requests() -> list[dict[str, Any]]:
    """Every fixture patient Bundle as a request for each hook, plus the sandbox bodies."""
    bodies = [copy.deepcopy(b) for b in SANDBOX[:3]]
    bodies.append(sandbox("order-sign-oxycodone.json") | {"hook": "order-select"})
    for path in sorted(FIXTURES.glob("*/*.json")):
        bundle = json.loads(path.read_text("utf-8"))
        if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":
            for hook in SERVICES:
                body = request_from_bundle(bundle, hook)
                body["hookInstance"] = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
                bodies.append(body)
    return bodies


REQUESTS = _fixture_requests()
FEEDBACK_BODIES = [sandbox("feedback-overridden.json"), sandbox("feedback-accepted.json")]

# Placeholders for what json.dumps cannot write: replaced in the JSON text after dumping.
_RAW = {
    "@@NAN@@": "NaN",
    "@@INF@@": "Infinity",
    "@@MINUS_INF@@": "-Infinity",
    "@@HUGE@@": "1e999",
    "@@TINY@@": "-1e999",
    "@@BIGINT@@": "9" * 400,
    "@@EXP@@": "1e308",
}


_DELETE = object()
_NUMBERS = [
    "@@NAN@@",
    "@@INF@@",
    "@@MINUS_INF@@",
    "@@HUGE@@",
    "@@TINY@@",
    "@@BIGINT@@",
    "@@EXP@@",
    10**30,
    -(10**30),
    2.5e-300,
    0,
    -1,
    0.5,
    True,
]
_STRINGS = [
    "\ud800",
    "x\udfffy",
    "\udc00" * 3,
    "Patient/\ud800",
    "",
    " ",
    "x" * 5000,
    "2026-13-45",
    "\u202e\u0000",
    "../../Patient/x",
    "MedicationRequest/",
]


def _mutations(old: Any) -> list[Any]:
    """What a value may become, by its type: numbers become NaN, infinities, huge or tiny;
    strings become lone surrogates, empty or long text, lists or objects; anything may be
    removed, wrapped in a list or an object, or become null."""
    common = [_DELETE, [old], {"value": old}, None, [], {}]
    if isinstance(old, bool) or old is None:
        return [*common, "true", 1, *_STRINGS[:2]]
    if isinstance(old, (int, float)):
        return [*common, *_NUMBERS, str(old)]
    if isinstance(old, str):
        return [*common, *_STRINGS, 7, *_NUMBERS[:4]]
    return [*common, "\ud800", 7, "@@NAN@@"]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


# Places a targeted mutation goes (as path suffixes): the ones the issue names and the
# numbers the dose and supply arithmetic reads.
_TARGETS = [
    ("context", "patientId"),
    ("resource", "id"),
    ("expectedSupplyDuration", "value"),
    ("daysSupply", "value"),
    ("repeat", "period"),
    ("repeat", "frequency"),
    ("doseQuantity", "value"),
    ("numberOfRepeatsAllowed",),
    ("onsetAge", "value"),
    ("context", "selections", 0),
    ("fhirServer",),
    ("outcome",),
    ("card",),
    ("acceptedSuggestions",),
    ("overrideReason",),
    ("outcomeTimestamp",),
    ("medicationReference", "reference"),
    ("birthDate",),
    ("authoredOn",),
    ("periodUnit",),
    ("medicationCodeableConcept", "text"),
    ("validityPeriod", "end"),
    ("effectivePeriod", "start"),
    ("whenHandedOver",),
    ("subject", "reference"),
    ("clinicalStatus",),
    ("status",),
    ("category",),
]


def _set(body: Any, path: tuple[Any, ...], value: Any) -> bool:
    target = body
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(target, dict) or (
        isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target)
    ):
        if value is _DELETE and isinstance(target, dict):
            target.pop(path[-1], None)
        elif value is not _DELETE:
            target[path[-1]] = value
        return True
    return False


@st.composite
def mutated(draw: Any, bases: list[dict[str, Any]]) -> dict[str, Any]:
    """A real body with one to three values changed: at the places the issue names when the body
    has them, else anywhere; by the value's type, or to arbitrary JSON."""
    body = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(body) if p]
        if not paths:
            break
        targeted = {t: [p for p in paths if p[-len(t) :] == t] for t in _TARGETS}
        kinds = [t for t, found in targeted.items() if found]
        if kinds and draw(st.booleans()):
            path = draw(st.sampled_from(targeted[draw(st.sampled_from(kinds))]))
        else:
            path = draw(st.sampled_from(paths))
        old = _get(body, path)
        if draw(st.integers(0, 4)) == 0:
            value = draw(json_value)
        else:
            value = draw(st.sampled_from(_mutations(old)))
        _set(body, path, value)
    mutated: dict[str, Any] = body
    return mutated


def _get(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        try:
            body = body[step]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def dumps(body: Any) -> str:
    text = json.dumps(body)
    for placeholder, raw in _RAW.items():
        text = text.replace(f'"{placeholder}"', raw)
    return text


def _post(path: str, data: Any, content_type: str = "application/json") -> int:
    with no_unexpected_errors():
        response = CLIENT.post(path, data=data, content_type=content_type)
    assert response.status_code < 500, (path, data, response.get_json())
    assert response.mimetype == "application/json"
    if response.status_code != 404 or path != "/cds-services/unknown":
        check_body(response.status_code, response.get_json(), path)
    return response.status_code


@given(mutated(REQUESTS), st.sampled_from([*SERVICES.values(), None]))
def test_mutated_real_requests_never_5xx(body: dict[str, Any], path: str | None) -> None:
    """Real requests with values retyped, removed, NaN, huge or lone surrogates: 2xx or 4xx."""
    hook = body.get("hook")
    target = (
        path or SERVICES.get(hook, SERVICES["order-sign"])
        if isinstance(hook, str)
        else path or SERVICES["order-sign"]
    )
    status = _post(target, dumps(body))
    if any(f'"{p}"' in json.dumps(body) for p in ("@@NAN@@", "@@INF@@", "@@MINUS_INF@@")):
        assert status == 400  # NaN and Infinity are not JSON


@given(mutated(FEEDBACK_BODIES))
def test_mutated_feedback_never_5xx(body: dict[str, Any]) -> None:
    """Feedback with wrongly typed fields (an outcome that is a list, ...): 2xx or 4xx."""
    _post(FEEDBACK, dumps(body))


def _python_value(value: Any) -> Any:
    """The placeholders as the Python values a caller of the engine could pass."""
    numbers = {
        "@@NAN@@": math.nan,
        "@@INF@@": math.inf,
        "@@MINUS_INF@@": -math.inf,
        "@@HUGE@@": math.inf,
        "@@TINY@@": -math.inf,
        "@@BIGINT@@": 10**400,
        "@@EXP@@": 1e308,
    }
    if isinstance(value, str):
        return numbers.get(value, value)
    if isinstance(value, list):
        return [_python_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _python_value(v) for k, v in value.items()}
    return value


@given(mutated(REQUESTS))
def test_engine_takes_any_python_values(body: dict[str, Any]) -> None:
    """The engine behind `cds-service evaluate` takes NaN, infinities and lone surrogates as
    Python values (no JSON parser in front): never a 500, never an unexpected log event."""
    hook = body.get("hook")
    service = (
        SERVICES.get(hook, SERVICES["order-sign"])
        if isinstance(hook, str)
        else SERVICES["order-sign"]
    )
    with no_unexpected_errors():
        result = APP.extensions["cds_engine"].evaluate(
            service.rsplit("/", 1)[-1], _python_value(body)
        )
    assert result.status < 500, result.body


@pytest.fixture(scope="module")
def refusing_fhir_server() -> Iterator[str]:
    """A loopback port that refuses connections (bound, not listening): FHIR reads fail fast."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


FETCHING = make_app(
    fhir_deadline=1.0, log_level="WARNING", data_dir=tempfile.mkdtemp(prefix="cds-fuzz-")
).test_client()


@given(
    body=mutated(REQUESTS),
    drop=st.lists(
        st.sampled_from(
            [
                "patient",
                "meds",
                "conditions",
                "procedures",
                "serviceRequests",
                "dispenses",
                "statements",
            ]
        ),
        max_size=7,
    ),
)
def test_mutated_requests_that_make_fhir_reads_never_5xx(
    refusing_fhir_server: str, body: dict[str, Any], drop: list[str]
) -> None:
    """With prefetch keys removed the service reads FHIR (patientId and Medication ids go
    into URLs): whatever the mutation, a 2xx or a 4xx, and a 412 when a read fails."""
    body["fhirServer"] = refusing_fhir_server
    if isinstance(body.get("prefetch"), dict):
        for key in drop:
            body["prefetch"].pop(key, None)
    hook = body.get("hook")
    path = (
        SERVICES.get(hook, SERVICES["order-sign"])
        if isinstance(hook, str)
        else SERVICES["order-sign"]
    )
    with no_unexpected_errors():
        response = FETCHING.post(path, data=dumps(body), content_type="application/json")
    assert response.status_code < 500, response.get_json()
    check_body(response.status_code, response.get_json(), path)


@given(st.sampled_from(PATHS[:4]), mutated(SANDBOX))
def test_mutated_sandbox_requests_never_5xx(path: str, body: Any) -> None:
    """Sandbox bodies with random parts replaced, removed or retyped, on any endpoint."""
    _post(path, dumps(body))


@given(st.sampled_from(PATHS), json_value)
def test_arbitrary_json_never_5xx(path: str, body: Any) -> None:
    """Any JSON value at all, on every endpoint: a 2xx or a 4xx with an OperationOutcome."""
    _post(path, json.dumps(body))


@given(
    st.sampled_from(PATHS),
    st.binary(max_size=200),
    st.sampled_from(["application/json", "text/plain", "application/fhir+json", ""]),
)
def test_arbitrary_bytes_never_5xx(path: str, data: bytes, content_type: str) -> None:
    """Random bytes with any content type: never a server error."""
    _post(path, data, content_type)


@given(st.sampled_from(list(SERVICES.values())), json_value)
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


def test_the_fuzz_check_fails_on_a_hidden_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzzers' check is not vacuous: a component that raises makes it fail (500)."""

    def explode(*_: Any, **__: Any) -> Any:
        raise TypeError("boom")

    monkeypatch.setattr(APP.extensions["cds_engine"].loader, "load", explode)
    with pytest.raises(AssertionError):
        _post(SERVICES["order-sign"], json.dumps(sandbox("order-sign-oxycodone.json")))
