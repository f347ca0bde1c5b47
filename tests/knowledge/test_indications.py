"""Indication decides what a drug or therapy means: sleep aids, low-dose aspirin, the order's
own reason, and therapies aimed at another body system."""

from __future__ import annotations

import pytest

from cds_service.knowledge.classifier import ANALGESIC_ROLES
from cds_service.knowledge.conditions import load_condition_sets, load_therapy_sets
from cds_service.knowledge.products import load_classifier

CLASSIFIER = load_classifier()
CONDITIONS = load_condition_sets()
THERAPIES = load_therapy_sets()
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.mark.parametrize(
    "text,role",
    [
        ("Tylenol PM Extra Strength (acetaminophen 500 mg / diphenhydramine 25 mg)", "sleep-aid"),
        ("Advil PM (ibuprofen 200 MG / diphenhydramine citrate 38 MG) Oral Tablet", "sleep-aid"),
        ("acetaminophen 500 MG / doxylamine succinate 12.5 MG Oral Tablet", "sleep-aid"),
        ("aspirin 81 MG Delayed Release Oral Tablet", "low-dose-aspirin"),
        ("aspirin 325 MG Oral Tablet", "first-line"),
        ("Acetaminophen 500 MG Oral Tablet", "first-line"),
    ],
)
def test_analgesic_role_and_why(text: str, role: str) -> None:
    """Sleep-aid combinations and low-dose aspirin get their own role, and classify says why."""
    result = CLASSIFIER.classify_text(text)
    assert result.analgesic_role == role
    assert ANALGESIC_ROLES[role]


@pytest.mark.parametrize(
    "concept,pain",
    [
        ({"coding": [{"system": ICD, "code": "M54.50"}]}, True),
        ({"coding": [{"system": ICD, "code": "G89.29"}]}, True),
        ({"text": "Knee osteoarthritis pain"}, True),
        (
            {"coding": [{"system": ICD, "code": "G25.81", "display": "Restless legs syndrome"}]},
            False,
        ),
        ({"coding": [{"system": ICD, "code": "R50.9", "display": "Fever, unspecified"}]}, False),
        ({"text": "Secondary prevention of myocardial infarction"}, False),
        ({"text": "Insomnia"}, False),
    ],
)
def test_is_pain(concept: dict[str, object], pain: bool) -> None:
    """An order's reason is pain by category, pain code or pain words; anything else is another
    indication."""
    assert CONDITIONS.is_pain(concept) is pain


@pytest.mark.parametrize(
    "text,step",
    [
        ("Physiotherapy of chest", None),
        ("Chest physiotherapy - airway clearance", None),
        ("Pelvic floor physical therapy", None),
        ("Cardiac rehabilitation exercise program", None),
        ("Pulmonary rehabilitation", None),
        ("Speech therapy", None),
        ("CBT for insomnia", None),
        ("Physical therapy", "exercise-physical-therapy"),
        ("Physical therapy for lumbar spine", "exercise-physical-therapy"),
        ("Cognitive behavioral therapy", "psychological-therapy"),
    ],
)
def test_therapy_counts_only_for_back_or_generic(text: str, step: str | None) -> None:
    """A therapy aimed at another body system is not a back-pain first-line step."""
    assert THERAPIES.step({"text": text}) == step


def test_a_known_therapy_code_with_another_body_system_in_its_name_does_not_count() -> None:
    """Even a code in the table does not count when its display names another body system."""
    concept = {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "91251008", "display": "Physical therapy"}
        ],
        "text": "Physical therapy - pelvic floor",
    }
    assert THERAPIES.step(concept) is None
