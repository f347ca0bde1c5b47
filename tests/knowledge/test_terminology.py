"""Medication classification: real RxNorm names, EHR free text, brand names and the traps."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_knowledge

from cds_service.fhir.read import NDC, RXNORM

CLASSIFIER = shared_knowledge().classifier

DATA = Path(__file__).parent.parent / "data" / "rxnorm_names.tsv"


def _rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in DATA.read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, ingredients, classes, er = line.split("\t")
            rows.append((name, ingredients, classes, er))
    return rows


RXNORM_ROWS = _rows()


def test_the_table_is_large_and_covers_every_class() -> None:
    """At least 300 RxNorm names, spanning every class the rules use."""
    assert len(RXNORM_ROWS) >= 300
    classes = {c for _, _, cs, _ in RXNORM_ROWS for c in cs.split(",") if c}
    assert {
        "opioid-analgesic",
        "moud",
        "naloxone-rescue",
        "opioid-antitussive",
        "benzodiazepine",
        "gabapentinoid",
        "z-drug",
        "barbiturate",
        "sedating-muscle-relaxant",
        "muscle-relaxant",
        "nsaid",
        "acetaminophen",
        "snri",
        "tricyclic",
        "ssri",
        "serotonergic",
    } <= classes


@pytest.mark.parametrize(
    "name,ingredients,classes,er", RXNORM_ROWS, ids=[r[0] for r in RXNORM_ROWS]
)
def test_rxnorm_name(name: str, ingredients: str, classes: str, er: str) -> None:
    """The normalised RxNorm name gives its ingredients, strengths, classes and ER status."""
    result = CLASSIFIER.classify_concept(
        {"coding": [{"system": RXNORM, "code": "999999999", "display": name}]}
    )
    got = {i.name: (i.strength_value, i.strength_unit) for i in result.ingredients}
    for spec in ingredients.split(";"):
        ing, value, unit = spec.split(":")
        assert got.get(ing) == (float(value), unit), (ing, got)
    assert sorted(result.classes) == sorted(c for c in classes.split(",") if c)
    assert result.extended_release is (er == "er")
    assert result.how == "rxnorm-name"


# EHR-style free text: (text, {ingredient: (strength, unit) or None}, expected class)
FREE_TEXT = [
    ("oxyCODONE (ROXICODONE) 5 MG tablet", {"oxycodone": (5.0, "mg")}, "opioid-analgesic"),
    ("oxyCODONE IR 10 mg tab", {"oxycodone": (10.0, "mg")}, "opioid-analgesic"),
    ("oxyCODONE ER 20 MG 12 hr tablet", {"oxycodone": (20.0, "mg")}, "opioid-analgesic"),
    ("OxyContin 40 mg tablet extended release", {"oxycodone": (40.0, "mg")}, "opioid-analgesic"),
    (
        "oxyCODONE-acetaminophen (PERCOCET) 5-325 MG per tablet",
        {"oxycodone": (5.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "Percocet 10/325",
        {"oxycodone": (10.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "Endocet 5-325 mg tablet",
        {"oxycodone": (5.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "hydrocodone-acetaminophen 10-325 mg",
        {"hydrocodone": (10.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "HYDROcodone-acetaminophen (NORCO) 5-325 MG per tablet",
        {"hydrocodone": (5.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "Norco 7.5/325",
        {"hydrocodone": (7.5, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "Vicodin 5-300 mg tablet",
        {"hydrocodone": (5.0, "mg"), "acetaminophen": (300.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "Lortab 10/325",
        {"hydrocodone": (10.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    (
        "hydrocodone/APAP 5/325",
        {"hydrocodone": (5.0, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    ("HYDROmorphone (DILAUDID) 2 MG tablet", {"hydromorphone": (2.0, "mg")}, "opioid-analgesic"),
    ("Dilaudid 4 mg", {"hydromorphone": (4.0, "mg")}, "opioid-analgesic"),
    ("morphine 15 mg IR tablet", {"morphine": (15.0, "mg")}, "opioid-analgesic"),
    ("MS Contin 30 mg ER tablet", {"morphine": (30.0, "mg")}, "opioid-analgesic"),
    ("morphine sulfate 10 mg/5 mL oral solution", {"morphine": (2.0, "mg/mL")}, "opioid-analgesic"),
    ("fentaNYL 25 mcg/hr patch", {"fentanyl": (25.0, "mcg/h")}, "opioid-analgesic"),
    ("Duragesic 50 mcg/hr transdermal patch", {"fentanyl": (50.0, "mcg/h")}, "opioid-analgesic"),
    ("traMADol (ULTRAM) 50 MG tablet", {"tramadol": (50.0, "mg")}, "opioid-analgesic"),
    ("Ultram 50mg", {"tramadol": (50.0, "mg")}, "opioid-analgesic"),
    ("tramadol ER 100 mg 24 hr tablet", {"tramadol": (100.0, "mg")}, "opioid-analgesic"),
    (
        "Ultracet 37.5-325 mg",
        {"tramadol": (37.5, "mg"), "acetaminophen": (325.0, "mg")},
        "opioid-analgesic",
    ),
    ("Nucynta 50 mg tablet", {"tapentadol": (50.0, "mg")}, "opioid-analgesic"),
    ("tapentadol ER (NUCYNTA ER) 100 mg tablet", {"tapentadol": (100.0, "mg")}, "opioid-analgesic"),
    ("methadone 10 mg tablet", {"methadone": (10.0, "mg")}, "opioid-analgesic"),
    ("methadone HCl 10 mg/mL concentrate", {"methadone": (10.0, "mg/mL")}, "opioid-analgesic"),
    (
        "acetaminophen-codeine (TYLENOL #3) 300-30 MG per tablet",
        {"acetaminophen": (300.0, "mg"), "codeine": (30.0, "mg")},
        "opioid-analgesic",
    ),
    ("Tylenol with Codeine #3", {"acetaminophen": None, "codeine": None}, "opioid-analgesic"),
    ("oxymorphone 5 mg tab", {"oxymorphone": (5.0, "mg")}, "opioid-analgesic"),
    ("Butrans 10 mcg/hr weekly patch", {"buprenorphine": (10.0, "mcg/h")}, "opioid-analgesic"),
    ("Belbuca 150 mcg buccal film", {"buprenorphine": (150.0, "mcg")}, "opioid-analgesic"),
    (
        "Suboxone 8 mg-2 mg sublingual film",
        {"buprenorphine": (8.0, "mg"), "naloxone": (2.0, "mg")},
        "moud",
    ),
    (
        "buprenorphine-naloxone 8-2 mg SL tablet",
        {"buprenorphine": (8.0, "mg"), "naloxone": (2.0, "mg")},
        "moud",
    ),
    ("Subutex 8 mg SL", {"buprenorphine": (8.0, "mg")}, "moud"),
    ("Zubsolv 5.7-1.4 mg", {"buprenorphine": (5.7, "mg"), "naloxone": (1.4, "mg")}, "moud"),
    ("Sublocade 300 mg/1.5 mL injection", {"buprenorphine": None}, "moud"),
    ("Narcan 4 mg nasal spray", {"naloxone": None}, "naloxone-rescue"),
    ("naloxone 4 MG/ACTUAT nasal spray", {"naloxone": (4.0, "mg/actuat")}, "naloxone-rescue"),
    ("ALPRAZolam (XANAX) 0.5 MG tablet", {"alprazolam": (0.5, "mg")}, "benzodiazepine"),
    ("Xanax XR 1 mg", {"alprazolam": (1.0, "mg")}, "benzodiazepine"),
    ("Valium 5mg", {"diazepam": (5.0, "mg")}, "benzodiazepine"),
    ("diazePAM (VALIUM) 10 MG tablet", {"diazepam": (10.0, "mg")}, "benzodiazepine"),
    ("Klonopin 0.5 mg", {"clonazepam": (0.5, "mg")}, "benzodiazepine"),
    ("clonazePAM (KLONOPIN) 1 MG tablet", {"clonazepam": (1.0, "mg")}, "benzodiazepine"),
    ("LORazepam (ATIVAN) 1 MG tablet", {"lorazepam": (1.0, "mg")}, "benzodiazepine"),
    ("Ativan 0.5 mg tab", {"lorazepam": (0.5, "mg")}, "benzodiazepine"),
    ("Restoril 15 mg capsule", {"temazepam": (15.0, "mg")}, "benzodiazepine"),
    ("temazepam (RESTORIL) 30 MG capsule", {"temazepam": (30.0, "mg")}, "benzodiazepine"),
    ("Halcion 0.25 mg", {"triazolam": (0.25, "mg")}, "benzodiazepine"),
    (
        "chlordiazePOXIDE (LIBRIUM) 25 MG capsule",
        {"chlordiazepoxide": (25.0, "mg")},
        "benzodiazepine",
    ),
    ("Soma 350 mg tablet", {"carisoprodol": (350.0, "mg")}, "sedating-muscle-relaxant"),
    (
        "carisoprodol (SOMA) 350 MG tablet",
        {"carisoprodol": (350.0, "mg")},
        "sedating-muscle-relaxant",
    ),
    ("Flexeril 10 mg", {"cyclobenzaprine": (10.0, "mg")}, "muscle-relaxant"),
    ("cyclobenzaprine (FLEXERIL) 5 MG tablet", {"cyclobenzaprine": (5.0, "mg")}, "muscle-relaxant"),
    ("tiZANidine (ZANAFLEX) 4 MG tablet", {"tizanidine": (4.0, "mg")}, "muscle-relaxant"),
    ("methocarbamol (ROBAXIN) 750 MG tablet", {"methocarbamol": (750.0, "mg")}, "muscle-relaxant"),
    ("Neurontin 300 mg capsule", {"gabapentin": (300.0, "mg")}, "gabapentinoid"),
    ("gabapentin (NEURONTIN) 600 MG tablet", {"gabapentin": (600.0, "mg")}, "gabapentinoid"),
    ("Lyrica 75 mg", {"pregabalin": (75.0, "mg")}, "gabapentinoid"),
    ("zolpidem (AMBIEN) 10 MG tablet", {"zolpidem": (10.0, "mg")}, "z-drug"),
    ("Ambien CR 12.5 mg", {"zolpidem": (12.5, "mg")}, "z-drug"),
    ("ibuprofen (ADVIL,MOTRIN) 600 MG tablet", {"ibuprofen": (600.0, "mg")}, "nsaid"),
    ("Motrin 800 mg", {"ibuprofen": (800.0, "mg")}, "nsaid"),
    ("naproxen (NAPROSYN) 500 MG tablet", {"naproxen": (500.0, "mg")}, "nsaid"),
    ("naproxen sodium (ALEVE) 220 mg", {"naproxen": (220.0, "mg")}, "nsaid"),
    ("meloxicam (MOBIC) 15 MG tablet", {"meloxicam": (15.0, "mg")}, "nsaid"),
    ("Celebrex 200 mg cap", {"celecoxib": (200.0, "mg")}, "nsaid"),
    ("diclofenac sodium 1 % gel", {"diclofenac": None}, "nsaid"),
    ("acetaminophen (TYLENOL) 500 MG tablet", {"acetaminophen": (500.0, "mg")}, "acetaminophen"),
    ("Tylenol Extra Strength 500mg", {"acetaminophen": (500.0, "mg")}, "acetaminophen"),
    ("paracetamol 1 g", {"acetaminophen": (1000.0, "mg")}, "acetaminophen"),
    ("DULoxetine (CYMBALTA) 30 MG capsule", {"duloxetine": (30.0, "mg")}, "snri"),
    ("Cymbalta 60 mg", {"duloxetine": (60.0, "mg")}, "snri"),
    ("amitriptyline (ELAVIL) 25 MG tablet", {"amitriptyline": (25.0, "mg")}, "tricyclic"),
    ("nortriptyline (PAMELOR) 10 MG capsule", {"nortriptyline": (10.0, "mg")}, "tricyclic"),
    ("sertraline (ZOLOFT) 50 MG tablet", {"sertraline": (50.0, "mg")}, "ssri"),
    ("Prozac 20 mg", {"fluoxetine": (20.0, "mg")}, "ssri"),
    ("OXYCODONE HCL 5MG TAB", {"oxycodone": (5.0, "mg")}, "opioid-analgesic"),
    ("Oxycodone  hydrochloride   5   mg", {"oxycodone": (5.0, "mg")}, "opioid-analgesic"),
]


@pytest.mark.parametrize("text,expected,drug_class", FREE_TEXT, ids=[t for t, _, _ in FREE_TEXT])
def test_ehr_free_text(
    text: str, expected: dict[str, tuple[float, str] | None], drug_class: str
) -> None:
    """EHR display names and brands: ingredients, strengths and class."""
    result = CLASSIFIER.classify_text(text)
    got = {i.name: (i.strength_value, i.strength_unit) for i in result.ingredients}
    assert set(got) == set(expected), got
    for name, strength in expected.items():
        if strength is not None:
            assert got[name] == strength, (name, got)
    assert result.has(drug_class), sorted(result.classes)


def test_at_least_60_free_text_names() -> None:
    """The free-text table is as large as the issue asks."""
    assert len(FREE_TEXT) >= 60


@pytest.mark.parametrize(
    "text,must_not",
    [
        ("Naloxone Hydrochloride 4 MG/ACTUAT Nasal Spray", "opioid-analgesic"),
        ("Buprenorphine 8 MG / Naloxone 2 MG Sublingual Film [Suboxone]", "opioid-analgesic"),
        ("Codeine Phosphate 2 MG/ML / Guaifenesin 20 MG/ML Oral Solution", "opioid-analgesic"),
        ("guaiFENesin-codeine 100-10 MG/5ML liquid", "opioid-analgesic"),
        ("promethazine-codeine 6.25-10 mg/5 mL syrup", "opioid-analgesic"),
        ("Oxybutynin Chloride 5 MG Oral Tablet", "opioid-analgesic"),
        ("oxyBUTYnin (DITROPAN XL) 10 MG 24 hr tablet", "opioid-analgesic"),
        ("cloNIDine HCl 0.1 MG tablet", "benzodiazepine"),
        ("Clonidine 0.1 MG/HR Transdermal System", "benzodiazepine"),
        ("hydrOXYzine HCl 25 MG tablet", "opioid-analgesic"),
        ("Hydroxyzine Pamoate 25 MG Oral Capsule", "opioid-analgesic"),
        ("hydroCHLOROthiazide 25 MG tablet", "opioid-analgesic"),
        ("Loratadine 10 MG Oral Tablet", "benzodiazepine"),
        ("Lorcaserin 10 MG Oral Tablet", "benzodiazepine"),
    ],
)
def test_traps(text: str, must_not: str) -> None:
    """Look-alike names, MOUD, rescue naloxone and cough syrups are not what they resemble."""
    assert not CLASSIFIER.classify_text(text).has(must_not)


def test_suboxone_is_opioid_use_disorder_treatment() -> None:
    """Buprenorphine/naloxone films treat opioid use disorder: class moud, not pain, not rescue."""
    result = CLASSIFIER.classify_text("Suboxone 8-2 mg film")
    assert result.classes == frozenset({"moud"})


def test_cough_syrup_is_an_antitussive() -> None:
    """Guaifenesin/codeine is an opioid antitussive."""
    assert CLASSIFIER.classify_text("guaifenesin-codeine 100-10 mg/5 mL syrup").has(
        "opioid-antitussive"
    )


def test_ingredient_code_alone_is_enough() -> None:
    """An RxNorm ingredient code with no text classifies by the code."""
    result = CLASSIFIER.classify_code(RXNORM, "596")
    assert result.names == ("alprazolam",) and result.how == "rxnorm-ingredient-code"


def test_known_product_code_without_name() -> None:
    """A product code the sandbox sends, without display, is read from the product table."""
    result = CLASSIFIER.classify_code(RXNORM, "1049621")
    assert result.names == ("oxycodone",) and result.how == "rxnorm-product-code"
    assert result.ingredients[0].strength_value == 5.0


def test_unknown_code_without_name_is_unclassified_with_a_reason() -> None:
    """A product code alone that the tables do not know is never guessed."""
    result = CLASSIFIER.classify_code(RXNORM, "123456789")
    assert not result.ingredients and "no medication name" in result.unclassified_reason


def test_ndc_without_text_is_unclassified_with_a_reason() -> None:
    """An NDC with no name is reported unclassified and says why."""
    result = CLASSIFIER.classify_code(NDC, "00406-0512-01")
    assert not result.ingredients and "NDC" in result.unclassified_reason


def test_ndc_with_text_classifies_by_the_text() -> None:
    """An NDC coding with text classifies through the text."""
    result = CLASSIFIER.classify_concept(
        {"coding": [{"system": NDC, "code": "00406-0512-01"}], "text": "oxycodone 5 mg tablet"}
    )
    assert result.names == ("oxycodone",) and result.how == "ndc-text"


def test_medication_resource_ingredients_with_ratio_strengths() -> None:
    """A Medication with coded ingredients and Ratio strengths is trusted first."""
    medication = {
        "resourceType": "Medication",
        "form": {"text": "tablet"},
        "code": {"text": "Percocet"},
        "ingredient": [
            {
                "itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "7804"}]},
                "strength": {
                    "numerator": {"value": 7.5, "unit": "mg"},
                    "denominator": {"value": 1, "unit": "TAB"},
                },
            },
            {
                "itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "161"}]},
                "strength": {
                    "numerator": {"value": 325, "unit": "mg"},
                    "denominator": {"value": 1, "unit": "TAB"},
                },
            },
        ],
    }
    result = CLASSIFIER.classify_medication(medication)
    got = {i.name: (i.strength_value, i.strength_unit) for i in result.ingredients}
    assert got == {"oxycodone": (7.5, "mg"), "acetaminophen": (325.0, "mg")}
    assert result.how == "medication-resource" and result.dose_form == "Oral Tablet"


def test_medication_resource_liquid_strength_per_ml() -> None:
    """A Ratio of mg per 5 mL becomes mg/mL."""
    medication = {
        "resourceType": "Medication",
        "ingredient": [
            {
                "itemCodeableConcept": {"text": "methadone"},
                "strength": {
                    "numerator": {"value": 10, "code": "mg"},
                    "denominator": {"value": 5, "code": "mL"},
                },
            }
        ],
    }
    ingredient = CLASSIFIER.classify_medication(medication).ingredients[0]
    assert (ingredient.strength_value, ingredient.strength_unit) == (2.0, "mg/mL")


def test_case_salt_and_spacing_do_not_matter() -> None:
    """The same drug in any case, with or without salt, spaced oddly, classifies the same."""
    variants = [
        "OXYCODONE HYDROCHLORIDE 5 MG",
        "oxycodone hcl 5mg",
        "Oxycodone 5 mg",
        "oxyCODONE  5  MG",
    ]
    results = {CLASSIFIER.classify_text(v).ingredients for v in variants}
    assert len(results) == 1


@pytest.mark.parametrize(
    "name,ingredients,drug_class",
    [
        (
            "{7 (Buprenorphine 2 MG / Naloxone 0.5 MG Sublingual Film) } Pack",
            ("buprenorphine", "naloxone"),
            "moud",
        ),
        (
            "{14 (Buprenorphine 8 MG / Naloxone 2 MG Sublingual Tablet) } Pack [Zubsolv]",
            ("buprenorphine", "naloxone"),
            "moud",
        ),
        (
            "{12 (Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet) } Pack",
            ("acetaminophen", "oxycodone"),
            "opioid-analgesic",
        ),
        ("{21 (Methylprednisolone 4 MG Oral Tablet) } Pack", (), ""),
    ],
)
def test_packs(name: str, ingredients: tuple[str, ...], drug_class: str) -> None:
    """RxNorm packs ({ n (SCD) } Pack) classify by the products inside them."""
    result = CLASSIFIER.classify_concept(
        {"coding": [{"system": RXNORM, "code": "1", "display": name}]}
    )
    assert set(result.names) == set(ingredients)
    assert result.has(drug_class) if drug_class else not result.classes


def test_unreadable_prefetch_entries_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    """Entries that cannot be understood at all are skipped and counted in the log line."""
    import logging

    from conftest import full_prefetch, make_app, sandbox

    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = full_prefetch()
    body["prefetch"]["meds"]["entry"] = [{"resource": "nonsense"}, 7, {"fullUrl": "x"}]
    body.pop("fhirServer")
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = make_app().test_client().post("/cds-services/opioid-lbp-order-sign", json=body)
    assert response.status_code == 200
    line = [r for r in caplog.records if r.msg == "hook"][-1].__dict__
    assert line["anomalies"]["prefetch.meds:unreadable-entry"] == 3


@pytest.mark.parametrize(
    "system",
    [
        "http://www.ama-assn.org/go/cpt",
        "http://www.ama-assn.org/go/cpt/",
        "urn:oid:2.16.840.1.113883.6.12",
    ],
)
def test_cpt_spellings_come_from_the_one_alias_table(system: str) -> None:
    """A CPT code is recognised under every spelling of its system (the shared alias table)."""
    therapies = shared_knowledge().therapies

    assert (
        therapies.step({"coding": [{"system": system, "code": "97161"}]})
        == "exercise-physical-therapy"
    )


@pytest.mark.parametrize(
    "unit,days",
    [
        ("d", 1.0),
        ("Days", 1.0),
        (" wk ", 7.0),
        ("h", 1 / 24),
        ("hr", 1 / 24),
        ("mo", 30.0),
        ("a", 365.0),
        ("min", 1 / 1440),
        ("fortnight", None),
        (3, None),
    ],
)
def test_time_units_come_from_one_table(unit: object, days: float | None) -> None:
    """Supply durations, dosing periods and max-dose periods read units from one table."""
    from cds_service.knowledge.dosing import administrations_per_day
    from cds_service.units import days_per_unit

    assert days_per_unit(unit) == days
    per_day = administrations_per_day(
        {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": unit}}}
    )
    assert per_day == (None if days is None else 1 / days)
