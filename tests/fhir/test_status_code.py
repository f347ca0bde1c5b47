"""status_code: a status read the same way whatever its shape (a code, a CodeableConcept, a
lone coding, odd values): the first non-blank code, lower-cased; never the display or text."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.fhir.read import status_code

SHAPES: list[tuple[Any, str]] = [
    (None, ""),
    (" Active ", "active"),
    (
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/x", "code": "active"}]},
        "active",
    ),
    ({"coding": [{"code": " Resolved "}]}, "resolved"),
    ({"coding": [{"code": ""}, {"code": "  "}, {"code": "relapse"}]}, "relapse"),
    (
        {"coding": [{"display": "no code"}, "odd", 3, {"code": 7}, {"code": "Remission"}]},
        "remission",
    ),
    ({"coding": {"code": "inactive"}}, "inactive"),
    ({"coding": "active"}, ""),
    ({"coding": None}, ""),
    ({"coding": []}, ""),
    ({"text": "active"}, ""),
    (["active"], ""),
    (7, ""),
]


@pytest.mark.parametrize(("shape", "expected"), SHAPES)
def test_status_code_reads_every_shape(shape: Any, expected: str) -> None:
    """Each shape of a status reads as the first non-blank code, lower-cased, or nothing."""
    assert status_code({"clinicalStatus": shape}, "clinicalStatus") == expected
