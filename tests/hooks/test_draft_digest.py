"""The draft check's digest: drafts that differ only in a valid id or Patient reference share
one R4 validation (it cannot differ between them); anything else is validated on its own."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from cds_service.fhir.read import validate_resource
from cds_service.hooks.pipeline import draft_digest

DRAFT: dict[str, Any] = {
    "resourceType": "MedicationRequest",
    "id": "draft-1",
    "status": "draft",
    "intent": "order",
    "subject": {"reference": "Patient/pt-1", "display": "someone"},
    "authoredOn": "2026-11-23",
    "medicationCodeableConcept": {"text": "Oxycodone Hydrochloride 5 MG Oral Tablet"},
}


def _with(**changes: Any) -> dict[str, Any]:
    draft = copy.deepcopy(DRAFT)
    for key, value in changes.items():
        if key == "reference":
            draft["subject"]["reference"] = value
        else:
            draft[key] = value
    return draft


def _anomalies(draft: dict[str, Any]) -> Counter[str]:
    found: Counter[str] = Counter()
    validate_resource(draft, found)
    return found


@pytest.mark.parametrize(
    "other",
    [_with(id="x.9-Z"), _with(reference="Patient/another-one"), _with(id="a" * 64)],
)
def test_valid_ids_and_patient_references_share_a_digest(other: dict[str, Any]) -> None:
    """Another valid id or Patient/<id> gives the same digest and the same validation."""
    assert draft_digest(other) == draft_digest(DRAFT)
    assert _anomalies(other) == _anomalies(DRAFT)


@pytest.mark.parametrize(
    "other",
    [
        _with(id="bad id!"),
        _with(id="a" * 65),
        _with(id=7),
        _with(reference="Patient/has space"),
        _with(reference="Group/g-1"),
        _with(status="active"),
        _with(authoredOn="2026-11-24"),
        _with(intent=["order"]),
    ],
)
def test_anything_else_gets_its_own_digest(other: dict[str, Any]) -> None:
    """An invalid id or reference, or any other difference, is validated on its own."""
    assert draft_digest(other) != draft_digest(DRAFT)


def test_the_digest_ignores_key_order() -> None:
    """The same draft with its keys in another order has the same digest."""
    reordered = dict(reversed(list(DRAFT.items())))
    assert draft_digest(reordered) == draft_digest(DRAFT)
