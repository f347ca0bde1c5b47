"""Exclusions read from every public set in every code system (CDC and VSAC), with the text
deciding only when no coding is in a set (docs/clinical-knowledge.md)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.fhir.read import CPT, HCPCS, ICD10CM, SNOMED
from cds_service.knowledge.conditions import load_condition_sets
from cds_service.knowledge.valuesets import load_valuesets

VS = load_valuesets()
SETS = load_condition_sets(valuesets=VS)
IMO = "http://www.imohealth.com/codesystem/imo"


def concept(*codings: tuple[str, str, str], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]
    }
    if text is not None:
        out["text"] = text
    return out


@pytest.mark.parametrize(
    "code,display",
    [
        ("254637007", "Non-small cell lung cancer"),
        ("424132000", "Non-small cell carcinoma of lung, TNM stage 1"),
        ("109838007", "Overlapping malignant neoplasm of colon"),
        ("93761005", "Primary malignant neoplasm of colon"),
        ("254632001", "Small cell carcinoma of lung"),
        ("67811000119102", "Primary small cell malignant neoplasm of lung, TNM stage 1"),
        ("1259400001", "Primary carcinoma of bladder"),  # only in the broad VSAC set
        ("94260004", "Secondary malignant neoplasm of colon"),
    ],
)
def test_snomed_only_cancers_are_cancer(code: str, display: str) -> None:
    """Synthea-style SNOMED CT cancer diagnoses (no ICD-10-CM) are cancer, from the code alone."""
    assert "cancer" in SETS.categories(concept((SNOMED, code, "")))
    assert "cancer" in SETS.categories(concept((SNOMED, code, display)))


@pytest.mark.parametrize(
    "codings,text",
    [
        ([(SNOMED, "277577000", "Monoclonal gammopathy of uncertain significance")], None),
        ([(ICD10CM, "D47.2", "Monoclonal gammopathy")], None),
        ([(ICD10CM, "D03.9", "Melanoma in situ, unspecified")], None),
        ([(ICD10CM, "D06.9", "Carcinoma in situ of cervix, unspecified")], None),
        ([(SNOMED, "871635009", "Squamous cell carcinoma in situ of esophagus")], None),
        ([(SNOMED, "302826002", "Adrenal cortical adenoma")], None),
        ([(SNOMED, "868252007", "Malignant neoplasm of gastrointestinal tract suspected")], None),
        ([(SNOMED, "429740004", "History of malignant neoplasm")], "History of cancer"),
        ([(IMO, "123", "")], "Carcinoma in situ of breast"),
        ([(SNOMED, "92033007", "Benign neoplasm of colon")], None),
    ],
)
def test_not_cancer(codings: list[tuple[str, str, str]], text: str | None) -> None:
    """In-situ, premalignant, benign, suspected and historical neoplasms are not active cancer."""
    assert "cancer" not in SETS.categories(concept(*codings, text=text))


def test_unknown_code_leaves_the_text_to_decide() -> None:
    """An IMO placeholder beside ICD-10-CM, or a SNOMED code in no set, is unknown: the name
    decides (cancer, carcinoma, leukaemia, sarcoma within a word...)."""
    imo = [(ICD10CM, "IMO0001", "Reserved for inherently not codable concepts"), (IMO, "1", "")]
    for text in (
        "Metastatic adenocarcinoma of pancreas",
        "Chronic lymphocytic leukaemia",
        "Liposarcoma of thigh",
        "Neoplasm of uncertain behavior of brain",
    ):
        assert "cancer" in SETS.categories(concept(*imo, text=text)), text
        assert "cancer" in SETS.categories(concept((SNOMED, "1", text))), text
    assert "cancer" not in SETS.categories(concept(*imo, text="Low back pain"))


def test_a_known_code_is_trusted_over_its_text() -> None:
    """A code an override removed (trait, in situ) or a listed code decides, whatever the text."""
    trait = concept((ICD10CM, "D57.3", "Sickle-cell trait"), text="sickle cell disease?")
    assert "sickle-cell-disease" not in SETS.categories(trait)


@pytest.mark.parametrize(
    "codings,category",
    [
        ([(SNOMED, "440206000", "")], "sickle-cell-disease"),
        ([(SNOMED, "416180004", "")], "sickle-cell-disease"),  # VSAC "without crisis"
        ([(ICD10CM, "D57.1", "")], "sickle-cell-disease"),
        ([(ICD10CM, "D57.40", "")], "sickle-cell-disease"),
        ([(HCPCS, "T2042", "")], "hospice-palliative"),
        (
            [("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "Q5003", "")],
            "hospice-palliative",
        ),
        ([("urn:oid:2.16.840.1.113883.6.285", "M1017", "")], "hospice-palliative"),
        ([(CPT, "99377", "")], "hospice-palliative"),
        ([(SNOMED, "713281006", "")], "hospice-palliative"),
        ([(SNOMED, "305336008", "")], "hospice-palliative"),
        ([(SNOMED, "191865004", "")], "opioid-use-disorder"),
        ([(SNOMED, "310653000", "")], "opioid-use-disorder"),
        ([(ICD10CM, "G89.3", "")], "cancer"),
    ],
)
def test_exclusions_in_every_code_system(
    codings: list[tuple[str, str, str]], category: str
) -> None:
    """Sickle cell disease, hospice / palliative care (HCPCS too) and OUD are read from the
    VSAC sets as well as the CDC ones."""
    assert category in SETS.categories(concept(*codings))


@pytest.mark.parametrize("code", ["16402000", "427306008", "416417002"])
def test_sickle_cell_never_trait(code: str) -> None:
    """Sickle cell trait, and the broad hemoglobinopathy codes that cover carriers, are not
    sickle cell disease."""
    assert "sickle-cell-disease" not in SETS.categories(concept((SNOMED, code, "")))
    assert "sickle-cell-disease" not in SETS.categories(concept((ICD10CM, "D57.3", "")))


def test_every_removal_from_the_broad_cancer_set_has_a_reason() -> None:
    """The odd members of the broad and narrow VSAC cancer sets are removed, each with a reason."""
    for set_id in ("vsac-cancer", "vsac-all-primary-and-secondary-cancer"):
        table = VS.tables[set_id]
        assert table.removed and all(len(reason) > 20 for reason in table.removed.values())
        assert (SNOMED, "254637007") in table.codes
