"""Allergies on record (facts/allergies.py, knowledge/allergies.py): which AllergyIntolerance
resources count (R4 clinical and verification status) and which class each names, codes
first (SNOMED CT, RxNorm, MED-RT) and text as the fallback."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import shared_knowledge

from cds_service.facts.allergies import allergies_on_record
from cds_service.fhir.record import PatientRecord

SCT = "http://snomed.info/sct"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
IBUPROFEN = {"coding": [{"system": SCT, "code": "293619005", "display": "Allergy to ibuprofen"}]}


def allergy(
    code: Any = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    substance: Any = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": "ai-1",
        "patient": {"reference": "Patient/p-1"},
    }
    if clinical is not None:
        resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": clinical}]}
    if verification is not None:
        resource["verificationStatus"] = {
            "coding": [{"system": VERIFICATION, "code": verification}]
        }
    if code is not None:
        resource["code"] = code
    if substance is not None:
        resource["reaction"] = [{"substance": substance, "manifestation": [{"text": "Hives"}]}]
    return resource


def classes_of(*resources: dict[str, Any]) -> list[frozenset[str]]:
    record = PatientRecord.of("p-1", resources)
    return [a.classes for a in allergies_on_record(record, shared_knowledge().allergies.classes)]


@pytest.mark.parametrize(
    "clinical,verification,counts",
    [
        ("active", "confirmed", True),
        ("active", "unconfirmed", True),
        ("active", "presumed", True),
        ("active", None, True),
        (None, None, True),
        (None, "confirmed", True),
        ("inactive", "confirmed", False),
        ("resolved", "confirmed", False),
        ("active", "entered-in-error", False),
        ("active", "refuted", False),
        (None, "entered-in-error", False),
        (None, "refuted", False),
    ],
)
def test_status_decides_whether_an_allergy_counts(
    clinical: str | None, verification: str | None, counts: bool
) -> None:
    """Active (or no clinical status) counts unless entered in error or refuted; inactive and
    resolved never count; unconfirmed and presumed count."""
    found = classes_of(allergy(IBUPROFEN, clinical, verification))
    assert found == ([frozenset({"nsaid"})] if counts else [])


@pytest.mark.parametrize(
    "concept,expected",
    [
        ({"coding": [{"system": SCT, "code": "293586001"}]}, {"nsaid"}),  # aspirin allergy
        ({"coding": [{"system": SCT, "code": "293625009"}]}, {"nsaid"}),  # naproxen allergy
        ({"coding": [{"system": SCT, "code": "293610009"}]}, {"nsaid"}),  # NSAID allergy
        ({"coding": [{"system": SCT, "code": "372665008"}]}, {"nsaid"}),  # NSAID substance
        ({"coding": [{"system": SCT, "code": "293584003"}]}, {"acetaminophen"}),
        ({"coding": [{"system": RX, "code": "5640", "display": "Ibuprofen"}]}, {"nsaid"}),
        ({"coding": [{"system": RX, "code": "1191"}]}, {"nsaid"}),  # aspirin, no display
        ({"coding": [{"system": RX, "code": "161"}]}, {"acetaminophen"}),
        ({"coding": [{"system": RX, "code": "2670", "display": "Codeine"}]}, {"opioid"}),
        (
            {"coding": [{"system": "http://va.gov/terminology/medrt", "code": "N0000175722"}]},
            {"nsaid"},
        ),
        ({"text": "NSAIDs"}, {"nsaid"}),
        ({"text": "Non-steroidal anti-inflammatory drugs"}, {"nsaid"}),
        ({"text": "Ibuprofen"}, {"nsaid"}),
        ({"text": "aspirin"}, {"nsaid"}),
        ({"text": "naproxen (Aleve)"}, {"nsaid"}),
        ({"text": "Tylenol"}, {"acetaminophen"}),
        ({"text": "paracetamol"}, {"acetaminophen"}),
        ({"text": "Penicillin"}, set()),
        ({"coding": [{"system": RX, "code": "7980", "display": "Penicillin G"}]}, set()),
        ({"text": "Peanut"}, set()),
    ],
)
def test_the_class_an_allergy_names(concept: dict[str, Any], expected: set[str]) -> None:
    """SNOMED CT findings and substances, RxNorm ingredients, MED-RT classes and, without a
    known code, the text name the NSAID, acetaminophen or opioid class; others name none."""
    found = classes_of(allergy(concept))
    assert found == ([frozenset(expected)] if expected else [])


def test_a_known_code_wins_over_its_text() -> None:
    """A coded NSAID allergy whose text names something else is read by its code."""
    concept = {"coding": [{"system": SCT, "code": "293619005"}], "text": "Tylenol"}
    assert classes_of(allergy(concept)) == [frozenset({"nsaid"})]


def test_the_reaction_substance_names_the_class_when_the_code_does_not() -> None:
    """A generic 'drug allergy' code with an aspirin reaction substance is an NSAID allergy,
    named after the substance."""
    record = PatientRecord.of(
        "p-1",
        [
            allergy(
                {"text": "Drug allergy"},
                substance={"coding": [{"system": SCT, "code": "387458008", "display": "Aspirin"}]},
            )
        ],
    )
    found = allergies_on_record(record, shared_knowledge().allergies.classes)
    assert [(a.classes, a.label) for a in found] == [(frozenset({"nsaid"}), "Aspirin")]


def test_odd_shapes_are_read_without_error() -> None:
    """A code that is not an object, a lone reaction object and a missing code are tolerated:
    only the readable NSAID allergy counts."""
    odd = allergy()
    odd["code"] = "ibuprofen"
    lone = allergy(IBUPROFEN)
    lone["reaction"] = {"substance": {"text": "aspirin"}}
    assert classes_of(odd, allergy(), lone) == [frozenset({"nsaid"})]


def test_status_is_read_from_its_hl7_coding_wherever_it_stands() -> None:
    """An EHR's own status coding before the HL7 one does not hide the HL7 value: an active
    allergy still counts, a resolved one still does not, and an unreadable status counts."""

    def with_status(first: dict[str, str], hl7: str | None) -> dict[str, Any]:
        resource = allergy(IBUPROFEN)
        codings = [first] + ([{"system": CLINICAL, "code": hl7}] if hl7 else [])
        resource["clinicalStatus"] = {"coding": codings}
        return resource

    local = {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.4.698084.10", "code": "1"}
    assert classes_of(with_status(local, "active")) == [frozenset({"nsaid"})]
    assert classes_of(with_status(local, "resolved")) == []
    assert classes_of(with_status(local, None)) == [frozenset({"nsaid"})]
    entered_in_error = allergy(IBUPROFEN)
    entered_in_error["verificationStatus"] = {
        "coding": [local, {"system": VERIFICATION, "code": "entered-in-error"}]
    }
    assert classes_of(entered_in_error) == []
