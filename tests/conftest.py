"""Shared test set-up: the app from create_app with a fixed clinical date, and a client whose
every response is checked against the CDS Hooks schema and the spec's extra rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.config import Config
from cds_service.hooks.spec_checks import discovery_problems, response_problems
from cds_service.knowledge import Knowledge

TODAY = "2026-11-23"
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "fhir"
FHIR = "http://127.0.0.1:8081"

_SCHEMA = json.loads(resources.files("cds_service").joinpath(
    "schemas/cds-hooks-2.0.schema.json").read_text("utf-8"))
_VALIDATORS = {
    name: jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": _SCHEMA["$defs"]})
    for name in ("discovery", "request", "response", "feedback", "operationOutcome")
}


def schema_errors(kind: str, body: Any) -> list[str]:
    return [e.message for e in _VALIDATORS[kind].iter_errors(body)]


def check_body(status: int, body: Any, path: str = "") -> None:
    """Every body the service sends must be valid: cards by the spec, errors as OperationOutcome."""
    if status == 200 and path.endswith("/cds-services"):
        assert schema_errors("discovery", body) == []
        assert discovery_problems(body) == []
    elif status == 200 and path.endswith("/feedback"):
        assert body == {}
    elif status == 200:
        assert schema_errors("response", body) == [], body
        assert response_problems(body) == [], body
    else:
        assert schema_errors("operationOutcome", body) == [], body


@pytest.fixture(autouse=True, scope="session")
def _private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps built without a data directory keep their database in a temporary one, never in
    the home directory of whoever runs the tests."""
    import os

    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous


def load_fixture(*parts: str) -> Any:
    return json.loads(FIXTURES.joinpath(*parts).read_text("utf-8"))


def sandbox(name: str) -> dict[str, Any]:
    body: dict[str, Any] = load_fixture("sandbox", name)
    return copy.deepcopy(body)


_KNOWLEDGE: list[Knowledge] = []


def shared_knowledge() -> Knowledge:
    """The packaged knowledge, loaded once for the whole test run (apps built from a config
    with its own CDS_VALUESETS_DIR load their own)."""
    if not _KNOWLEDGE:
        _KNOWLEDGE.append(Knowledge.load())
    return _KNOWLEDGE[0]


def make_app(**overrides: Any) -> Flask:
    base = {"today": TODAY, "log_level": "INFO"}
    base.update(overrides)
    config = Config().with_overrides(base)
    knowledge = None if config.valuesets_dir else shared_knowledge()
    return create_app(config, knowledge=knowledge)


class CheckedClient:
    """A test client that validates every response body it receives."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        response = self.client.post(path, **kwargs)
        self._check(response, path)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, **kwargs)
        self._check(response, path)
        return response

    def open(self, path: str, **kwargs: Any) -> Any:
        response = self.client.open(path, **kwargs)
        self._check(response, path)
        return response

    @staticmethod
    def _check(response: Any, path: str) -> None:
        assert response.status_code < 500
        if response.status_code == 200 and not response.data:
            return  # CORS preflight
        assert response.mimetype == "application/json"
        check_body(response.status_code, response.get_json(), path)


@pytest.fixture()
def app() -> Iterator[Flask]:
    application = make_app()
    yield application
    application.extensions["cds_engine"].close()
    if application.extensions.get("cds_card_log") is not None:
        application.extensions["cds_card_log"].close()
    application.extensions["cds_store"].close()


@pytest.fixture()
def client(app: Flask) -> CheckedClient:
    return CheckedClient(app.test_client())


def empty_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": []}


def bundle_of(*resources_: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources_]}


ALL_KEYS = ("patient", "meds", "conditions", "procedures", "serviceRequests", "dispenses",
            "statements", "encounters", "carePlans")


def full_prefetch(patient_id: str = "pt-1", **keys: Any) -> dict[str, Any]:
    """Every prefetch key filled (empty unless given), so no FHIR call is needed."""
    prefetch: dict[str, Any] = {k: empty_bundle() for k in ALL_KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": patient_id, "birthDate": "1970-01-01"}
    prefetch.update(keys)
    return prefetch


@pytest.fixture()
def mock_fhir_empty() -> Callable[[Any], None]:
    """Register empty answers for every search the service may make against FHIR."""

    def register(rsps: Any, patient_id: str = "pt-1") -> None:
        import re

        rsps.get(f"{FHIR}/Patient/{patient_id}",
                 json={"resourceType": "Patient", "id": patient_id, "birthDate": "1971-04-02"})
        for rtype in ("MedicationRequest", "Condition", "Procedure", "ServiceRequest",
                      "MedicationDispense", "MedicationStatement", "Encounter", "CarePlan"):
            rsps.get(re.compile(rf"{re.escape(FHIR)}/{rtype}\?.*"), json=empty_bundle())

    return register
