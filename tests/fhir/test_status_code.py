"""status_code: the fast path reads a status exactly as the general coding reader does."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.fhir.read import codings, status_code


def _by_codings(resource: dict[str, Any], element: str) -> str:
    value = resource.get(element)
    if isinstance(value, str):
        return value.strip().lower()
    for _, code, _ in codings(value):
        if code:
            return code.lower()
    return ""


SHAPES: list[Any] = [
    None,
    " Active ",
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/x", "code": "active"}]},
    {"coding": [{"code": " Resolved "}]},
    {"coding": [{"code": ""}, {"code": "  "}, {"code": "relapse"}]},
    {"coding": [{"display": "no code"}, "odd", 3, {"code": 7}, {"code": "Remission"}]},
    {"coding": {"code": "inactive"}},
    {"coding": "active"},
    {"coding": None},
    {"coding": []},
    {"text": "active"},
    ["active"],
    7,
]


@pytest.mark.parametrize("shape", SHAPES)
def test_status_code_matches_the_coding_reader(shape: Any) -> None:
    """Every shape of a status (code, CodeableConcept, lone coding, odd values) reads alike."""
    resource = {"clinicalStatus": shape}
    assert status_code(resource, "clinicalStatus") == _by_codings(resource, "clinicalStatus")
