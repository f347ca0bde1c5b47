"""The generated code tables (knowledge/data/valuesets, rxnorm_products.json): provenance,
overrides, and every medication code classified from the code alone."""

from __future__ import annotations

import json
import logging
import random
import re
from importlib import resources

import pytest

from cds_service.fhir.read import RXNORM
from cds_service.knowledge.classifier import (
    ANTITUSSIVE,
    BENZODIAZEPINE,
    MOUD,
    NALOXONE,
    OPIOID,
    Classifier,
)
from cds_service.knowledge.products import (
    ingredient_data,
    load_classifier,
    packaged_entries,
    product_entry,
    review,
)
from cds_service.knowledge.valuesets import load_valuesets, manifest

VS = load_valuesets()
CLASSIFIER = load_classifier(valuesets=VS)
OPIOIDS = VS.tables["opioid-analgesics-with-ambulatory-misuse-potential"]
BUP = VS.tables["buprenorphine-medications"]
ER = VS.tables["extended-release-opioid-with-ambulatory-misuse-potential"]


def _codes(set_id: str) -> list[str]:
    return sorted(code for system, code in VS.tables[set_id].codes if system == RXNORM)


def _published(set_id: str) -> list[str]:
    return sorted(code for system, code in VS.tables[set_id].published if system == RXNORM)


def expected_class(code: str) -> str:
    """The class the sets themselves imply (independent of how the classifier decides)."""
    if (RXNORM, code) in BUP.codes:
        return OPIOID if (RXNORM, code) in OPIOIDS.codes else MOUD
    if (RXNORM, code) in OPIOIDS.codes:
        return OPIOID
    return "?"


@pytest.mark.parametrize("code", _codes("opioid-analgesics-with-ambulatory-misuse-potential"))
def test_opioid_code_alone(code: str) -> None:
    """Every code of the opioid analgesic set (after overrides) is a pain opioid by code alone."""
    result = CLASSIFIER.classify_code(RXNORM, code)
    assert OPIOID in result.classes and result.how == "rxnorm-product-code", result.label


@pytest.mark.parametrize(
    "code",
    sorted(
        set(_published("opioid-analgesics-with-ambulatory-misuse-potential"))
        - set(_codes("opioid-analgesics-with-ambulatory-misuse-potential"))
    ),
)
def test_codes_removed_from_the_opioid_set(code: str) -> None:
    """A code an override takes out of the opioid set is OUD treatment or a cough product."""
    result = CLASSIFIER.classify_code(RXNORM, code)
    assert OPIOID not in result.classes and result.classes & {MOUD, ANTITUSSIVE}, result.label


@pytest.mark.parametrize("code", _codes("benzodiazepine-medications"))
def test_benzodiazepine_code_alone(code: str) -> None:
    """Every code of the benzodiazepine set is a benzodiazepine by code alone."""
    assert BENZODIAZEPINE in CLASSIFIER.classify_code(RXNORM, code).classes


@pytest.mark.parametrize(
    "code",
    sorted(
        set(_codes("buprenorphine-medications"))
        | set(_codes("methadone-medications"))
        | set(_codes("buprenorphine-and-methadone-medications"))
    ),
)
def test_buprenorphine_and_methadone_code_alone(code: str) -> None:
    """Buprenorphine for pain (in the opioid set) is an opioid, other buprenorphine is MOUD;
    methadone is an opioid (OUD treatment when the diagnosis is on record)."""
    result = CLASSIFIER.classify_code(RXNORM, code)
    if "methadone" in result.names:
        assert OPIOID in result.classes
    else:
        assert expected_class(code) in result.classes, result.label


@pytest.mark.parametrize("code", _codes("naloxone-medications"))
def test_naloxone_code_alone(code: str) -> None:
    """Naloxone alone is rescue naloxone; a combination takes its other drug's class."""
    result = CLASSIFIER.classify_code(RXNORM, code)
    display = VS.tables["naloxone-medications"].codes[(RXNORM, code)]
    if " / " not in display:
        assert result.classes == {NALOXONE}
    else:
        assert NALOXONE not in result.classes and expected_class(code) in result.classes


@pytest.mark.parametrize("code", _codes("extended-release-opioid-with-ambulatory-misuse-potential"))
def test_extended_release_code_alone(code: str) -> None:
    """Every code of the extended-release set (with Belbuca, by override) is an ER opioid."""
    result = CLASSIFIER.classify_code(RXNORM, code)
    assert OPIOID in result.classes and result.extended_release


_UNITS = {
    "MG": "mg",
    "MCG": "mcg",
    "MG/ML": "mg/mL",
    "MG/HR": "mg/h",
    "MCG/HR": "mcg/h",
    "MG/ACTUAT": "mg/actuat",
    "MCG/ACTUAT": "mcg/actuat",
    "MCG/ML": "mcg/mL",
}
SAMPLE = random.Random(9).sample(  # noqa: S311 - a reproducible test sample, not security
    sorted(CLASSIFIER.product_codes), 200
)


@pytest.mark.parametrize("code", SAMPLE)
def test_sample_ingredients_and_strengths_match_the_name(code: str) -> None:
    """For 200 codes, each ingredient and strength from the table is the one the RxNorm name
    spells ('<ingredient> [salt] <number> <UNIT>' in its component)."""
    result = CLASSIFIER.product_codes[code]
    name = result.label
    components = re.split(r" / (?=[a-z])", name.lower())
    assert result.ingredients
    for ingredient in result.ingredients:
        word = ingredient.name
        component = next((c for c in components if re.search(rf"\b{word}\b", c)), None)
        assert component is not None, (ingredient.name, name)
        match = re.search(rf"\b{word}\b[a-z ,-]*?\s([0-9.]+) ([a-z]+(?:/[a-z]+)?)", component)
        if ingredient.strength_value is None:
            assert not ingredient.classes or match is None, name
            continue
        assert match is not None, name
        assert float(match.group(1)) == pytest.approx(ingredient.strength_value), name
        assert _UNITS[match.group(2).upper()] == ingredient.strength_unit, name


def test_every_medication_code_has_a_table_entry() -> None:
    """Each RxNorm code published in a medication set is classified from the code alone; the
    other product codes are OMTK opioid products (tests/knowledge/test_omtk_products.py)."""
    published = {
        code
        for table in VS.of_kind("medication")
        for system, code in table.published
        if system == RXNORM
    }
    assert published <= set(CLASSIFIER.product_codes)
    assert len(published) > 900
    for code in set(CLASSIFIER.product_codes) - published:
        assert CLASSIFIER.product_codes[code].classes & {OPIOID, MOUD, "opioid-antitussive"}


def test_product_table_is_what_the_parser_gives() -> None:
    """The generated product table matches a fresh parse of each stored RxNorm name, so a change
    to ingredients.json without rebuilding the tables is caught."""
    parser = Classifier(ingredient_data())
    for code, entry in packaged_entries().items():
        assert product_entry(parser, entry["display"]) == entry, code


def test_review_finds_no_contradiction() -> None:
    """No medication code contradicts its value sets after the overrides (the build's check)."""
    assert review(VS, CLASSIFIER) == []


def test_generated_sets_carry_provenance() -> None:
    """Each packaged set file has its source url, date and code count, matching the manifest."""
    for entry in manifest()["sets"]:
        raw = json.loads(
            resources.files("cds_service.knowledge")
            .joinpath(f"data/valuesets/{entry['id']}.json")
            .read_text("utf-8")
        )
        assert raw["url"] == entry["url"] and raw["date"]
        assert raw["_generated"]["codes"] == len(raw["expansion"]["contains"]) > 0
        source = raw["_generated"]["source"]
        assert ("opioid-cds" in source) or ("ecqm-content-cms-2025" in source), source


def test_every_override_has_a_reason_and_applies() -> None:
    """Each override line says why, and selects at least one code (no dead overrides)."""
    assert VS.overrides
    for override in VS.overrides:
        assert len(override.reason) > 20
    for table in VS.tables.values():
        for line in table.overrides:
            assert not line.endswith("[0 codes]"), line


def test_code_wins_over_text_and_the_log_names_no_drug(caplog: pytest.LogCaptureFixture) -> None:
    """An oxycodone code with hydrocodone text is oxycodone; the disagreement is counted in the
    log without any drug name."""
    before = CLASSIFIER.code_text_disagreements
    with caplog.at_level(logging.WARNING, logger="cds_service.knowledge.classifier"):
        result = CLASSIFIER.classify_concept(
            {"coding": [{"system": RXNORM, "code": "1049621"}], "text": "HYDROcodone 7.5 mg tab"}
        )
    assert result.names == ("oxycodone",) and result.ingredients[0].strength_value == 5
    assert result.label == "HYDROcodone 7.5 mg tab"
    assert result.coded_label.lower().startswith("oxycodone hydrochloride 5 mg")
    assert CLASSIFIER.code_text_disagreements == before + 1
    record = next(r for r in caplog.records if r.msg == "medication-code-text-disagreement")
    assert record.__dict__["anomalies"] == before + 1
    assert "codone" not in caplog.text.lower()


def test_code_and_matching_text_is_no_disagreement() -> None:
    """Text that names the code's ingredient and strength is not counted."""
    before = CLASSIFIER.code_text_disagreements
    result = CLASSIFIER.classify_concept(
        {"coding": [{"system": RXNORM, "code": "1049621"}], "text": "oxyCODONE 5 mg tablet"}
    )
    assert result.names == ("oxycodone",) and result.coded_label == ""
    assert CLASSIFIER.code_text_disagreements == before


@pytest.mark.parametrize(
    "text,first_line",
    [
        ("aspirin 81 MG Delayed Release Oral Tablet", False),
        ("Aspirin Low Dose 81 mg EC tab", False),
        ("aspirin 25 MG / dipyridamole 200 MG Extended Release Oral Capsule", False),
        ("Durlaza 162.5 mg capsule", False),
        ("acetaminophen 325 MG / dextromethorphan 10 MG / phenylephrine 5 MG Oral Tablet", False),
        ("NyQuil Cold & Flu (acetaminophen / doxylamine / dextromethorphan)", False),
        ("acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet", False),
        ("acetaminophen 300 MG / butalbital 50 MG / caffeine 40 MG Oral Capsule", False),
        ("ketorolac 0.5% ophthalmic solution", False),
        ("naproxen 500 MG Oral Tablet", True),
        ("ibuprofen 600 mg tab", True),
        ("celecoxib 200 MG Oral Capsule", True),
        ("meloxicam 15 MG Oral Tablet", True),
        ("diclofenac sodium 10 MG/ML Topical Gel", True),
        ("Voltaren 1% gel", True),
        ("acetaminophen 500 MG Oral Tablet", True),
        ("aspirin 325 MG Oral Tablet", True),
    ],
)
def test_first_line_analgesic(text: str, first_line: bool) -> None:
    """First-line drug therapy: an NSAID or acetaminophen taken for pain, and nothing else."""
    assert CLASSIFIER.classify_text(text).first_line_analgesic is first_line


def test_docs_name_the_packaged_knowledge_version() -> None:
    """docs/knowledge.md shows the version the packaged tables produce."""
    from conftest import ROOT

    assert f"`{VS.version}`" in (ROOT / "docs" / "knowledge.md").read_text("utf-8")
