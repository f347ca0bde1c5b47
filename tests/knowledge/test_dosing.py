"""Daily dose and MME with hand-computed expectations (CDC 2022 factors unless stated)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_knowledge

from cds_service.knowledge.dosing import MmeResult, total_mme
from cds_service.knowledge.dosing import mme_for as _mme_for

KNOWLEDGE = shared_knowledge()


def mme_for(
    resource: dict[str, Any], classification: Any = None, table: str = "cdc-2022"
) -> MmeResult:
    """The MME of an order with the app's knowledge (classified here unless given)."""
    classification = classification or KNOWLEDGE.classifier.classify_order(resource)
    return _mme_for(resource, classification, KNOWLEDGE.mme, table)


def order(text: str, *dosages: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "dosageInstruction": list(dosages),
    }


def dose(
    value: float,
    unit: str,
    frequency: float | None = None,
    period: float | None = None,
    period_unit: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    dosage: dict[str, Any] = {
        "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "code": unit}}]
    }
    repeat = {
        k: v
        for k, v in (("frequency", frequency), ("period", period), ("periodUnit", period_unit))
        if v is not None
    }
    if repeat:
        dosage["timing"] = {"repeat": repeat}
    dosage.update(extra)
    return dosage


CASES = [
    # fentanyl 75 mcg/h: 75 x 2.4 = 180, whatever the change interval
    (
        "fentanyl 75 mcg/h patch every 72 h",
        order("72 HR Fentanyl 0.075 MG/HR Transdermal System", dose(1, "patch", 1, 72, "h")),
        180,
    ),
    (
        "fentanyl 75 mcg/h patch every 48 h",
        order("72 HR Fentanyl 0.075 MG/HR Transdermal System", dose(1, "patch", 1, 2, "d")),
        180,
    ),
    (
        "fentanyl dose given in mcg/h",
        order("fentanyl transdermal", dose(50, "ug/h", 1, 3, "d")),
        120,
    ),
    # oxycodone ER 60 mg tablet ordered as 10 mg twice daily: the mg dose wins -> 20 x 1.5
    (
        "oxycodone ER 60 mg tablet as 10 mg twice daily",
        order(
            "12 HR Oxycodone Hydrochloride 60 MG Extended Release Oral Tablet",
            dose(10, "mg", 2, 1, "d"),
        ),
        30,
    ),
    # hydrocodone/APAP 10/325 every 6 h: 4 x 10 = 40
    (
        "hydrocodone/acetaminophen 10/325 every 6 h",
        order(
            "Acetaminophen 325 MG / Hydrocodone Bitartrate 10 MG Oral Tablet",
            dose(1, "tablet", 1, 6, "h"),
        ),
        40,
    ),
    # tramadol 50 mg every 6 h: 200 mg x 0.2
    (
        "tramadol 50 mg every 6 h",
        order("Tramadol Hydrochloride 50 MG Oral Tablet", dose(1, "tablet", 1, 6, "h")),
        40,
    ),
    # hydromorphone 2 mg every 4 h: 12 mg x 5
    (
        "hydromorphone 2 mg every 4 h",
        order("Hydromorphone Hydrochloride 2 MG Oral Tablet", dose(1, "tablet", 1, 4, "h")),
        60,
    ),
    # tapentadol 100 mg twice daily: 200 x 0.4
    (
        "tapentadol 100 mg twice daily",
        order("Tapentadol 100 MG Oral Tablet", dose(1, "{tbl}", 2, 1, "d")),
        80,
    ),
    # methadone 10 mg three times daily: 30 x 4.7
    (
        "methadone 10 mg three times daily",
        order("Methadone Hydrochloride 10 MG Oral Tablet", dose(1, "tablet", 3, 1, "d")),
        141,
    ),
    # codeine/APAP 300/30, 2 tablets every 4 h: 12 x 30 = 360 mg x 0.15
    (
        "acetaminophen/codeine 300/30 two tablets every 4 h",
        order(
            "Acetaminophen 300 MG / Codeine Phosphate 30 MG Oral Tablet",
            dose(2, "tablet", 1, 4, "h"),
        ),
        54,
    ),
    # liquid: oxycodone 1 mg/mL, 5 mL four times daily: 20 mg x 1.5
    (
        "oxycodone solution 5 mL four times daily",
        order("Oxycodone Hydrochloride 1 MG/ML Oral Solution", dose(5, "mL", 4, 1, "d")),
        30,
    ),
    # morphine 10 mg/5 mL, 10 mL every 4 h: 2 mg/mL x 60 mL = 120 mg
    (
        "morphine 10 mg/5 mL, 10 mL every 4 h",
        order("morphine sulfate 10 mg/5 mL oral solution", dose(10, "mL", 1, 4, "h")),
        120,
    ),
    # as-needed with maxDosePerPeriod: max 6 tablets a day of oxycodone 5 mg: 30 mg x 1.5
    (
        "as-needed oxycodone, at most 6 tablets a day",
        order(
            "Oxycodone Hydrochloride 5 MG Oral Tablet",
            dose(
                1,
                "tablet",
                1,
                4,
                "h",
                asNeededBoolean=True,
                maxDosePerPeriod={
                    "numerator": {"value": 6, "unit": "tablet"},
                    "denominator": {"value": 1, "unit": "day", "code": "d"},
                },
            ),
        ),
        45,
    ),
    # as-needed with no maximum: the most frequent schedule (1-2 tabs every 4-6 h -> 2 x 6)
    (
        "as-needed, dose range, no maximum",
        order(
            "Oxycodone Hydrochloride 5 MG Oral Tablet",
            {
                "asNeededBoolean": True,
                "timing": {
                    "repeat": {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}
                },
                "doseAndRate": [
                    {
                        "doseRange": {
                            "low": {"value": 1, "unit": "tablet"},
                            "high": {"value": 2, "unit": "tablet"},
                        }
                    }
                ],
            },
        ),
        90,
    ),
    # frequencyMax counts: 1-3 times a day -> 3
    (
        "frequencyMax",
        order(
            "Oxycodone Hydrochloride 10 MG Oral Tablet",
            {
                "timing": {
                    "repeat": {"frequency": 1, "frequencyMax": 3, "period": 1, "periodUnit": "d"}
                },
                "doseAndRate": [{"doseQuantity": {"value": 1}}],
            },
        ),
        45,
    ),
    # timeOfDay only: two times
    (
        "timeOfDay",
        order(
            "Morphine Sulfate 15 MG Oral Tablet",
            {
                "timing": {"repeat": {"timeOfDay": ["08:00:00", "20:00:00"]}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            },
        ),
        30,
    ),
    # timing code BID
    (
        "timing code",
        order(
            "Oxycodone Hydrochloride 5 MG Oral Tablet",
            {
                "timing": {"code": {"coding": [{"code": "BID"}]}},
                "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}],
            },
        ),
        30,
    ),
    # weekly period: 7 tablets a week = 1 a day
    (
        "weekly period",
        order(
            "Hydrocodone Bitartrate 10 MG / Acetaminophen 325 MG Oral Tablet",
            dose(7, "tablet", 1, 1, "wk"),
        ),
        10,
    ),
    # two concurrent dosage lines: morning 10 mg + evening 20 mg ER oxycodone -> 30 x 1.5
    (
        "concurrent dosage lines",
        order(
            "12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet",
            dose(1, "tablet", 1, 1, "d"),
            dose(2, "tablet", 1, 1, "d"),
        ),
        45,
    ),
    # sequential phases: 2 tablets q6h then 1 tablet q6h -> the higher phase counts (8 x 5 x 1.5)
    (
        "sequential phases",
        order(
            "Oxycodone Hydrochloride 5 MG Oral Tablet",
            dose(2, "tablet", 1, 6, "h", sequence=1),
            dose(1, "tablet", 1, 6, "h", sequence=2),
        ),
        60,
    ),
    # mcg dose
    (
        "dose in mcg",
        order("Hydromorphone Hydrochloride 2 MG Oral Tablet", dose(2000, "ug", 4, 1, "d")),
        40,
    ),
]


@pytest.mark.parametrize("name,resource,expected", CASES, ids=[c[0] for c in CASES])
def test_mme(name: str, resource: dict[str, Any], expected: float) -> None:
    """MME/day matches the hand computation."""
    result = mme_for(resource)
    assert result.mme_per_day == pytest.approx(expected), result


def test_as_needed_says_how_it_was_counted() -> None:
    """An as-needed order says which maximum was used."""
    resource = CASES[12][1]
    assert "maxDosePerPeriod" in mme_for(resource).reason


@pytest.mark.parametrize(
    "text,dosages,reason",
    [
        ("Oxycodone Hydrochloride 5 MG Oral Tablet", [], "no dosage instructions"),
        ("Oxycodone Hydrochloride 5 MG Oral Tablet", [{"text": "as directed"}], "no dose"),
        (
            "Oxycodone Hydrochloride 5 MG Oral Tablet",
            [{"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}],
            "no frequency",
        ),
        ("oxycodone tablet", [dose(1, "tablet", 4, 1, "d")], "strength"),
        (
            "Meperidine Hydrochloride 50 MG Oral Tablet",
            [dose(1, "tablet", 4, 1, "d")],
            "no conversion factor for meperidine",
        ),
        (
            "Fentanyl Citrate 0.05 MG/ML Injectable Solution",
            [dose(1, "mL", 1, 1, "d")],
            "fentanyl other than transdermal",
        ),
        (
            "Oxycodone Hydrochloride 5 MG Oral Tablet",
            [dose(1, "puffs?", 1, 1, "d")],
            "cannot be converted",
        ),
    ],
)
def test_mme_unknown_with_reason(text: str, dosages: list[Any], reason: str) -> None:
    """When a dose cannot be computed the answer is unknown (None) with the reason, never 0."""
    result = mme_for(order(text, *dosages))
    assert result.mme_per_day is None and not result.excluded
    assert reason in result.reason


@pytest.mark.parametrize(
    "text",
    [
        "Buprenorphine 8 MG / Naloxone 2 MG Sublingual Film [Suboxone]",
        "7 DAY Buprenorphine 0.01 MG/HR Transdermal System [Butrans]",
        "Codeine Phosphate 2 MG/ML / Guaifenesin 20 MG/ML Oral Solution",
        "Ibuprofen 600 MG Oral Tablet",
    ],
)
def test_not_counted(text: str) -> None:
    """Buprenorphine (pain or OUD), cough products and non-opioids are excluded from MME."""
    result = mme_for(order(text, dose(1, "tablet", 1, 1, "d")))
    assert result.mme_per_day is None and result.excluded


def test_cdc_2016_table() -> None:
    """2016: hydromorphone 4; methadone by daily dose (30 mg/day -> 8); no tramadol factor."""
    hydromorphone = order(
        "Hydromorphone Hydrochloride 2 MG Oral Tablet", dose(1, "tablet", 1, 4, "h")
    )
    assert mme_for(hydromorphone, table="cdc-2016").mme_per_day == pytest.approx(48)
    methadone = order("Methadone Hydrochloride 10 MG Oral Tablet", dose(1, "tablet", 3, 1, "d"))
    assert mme_for(methadone, table="cdc-2016").mme_per_day == pytest.approx(240)
    methadone_low = order("Methadone Hydrochloride 5 MG Oral Tablet", dose(1, "tablet", 2, 1, "d"))
    assert mme_for(methadone_low, table="cdc-2016").mme_per_day == pytest.approx(40)
    tramadol = order("Tramadol Hydrochloride 50 MG Oral Tablet", dose(1, "tablet", 4, 1, "d"))
    result = mme_for(tramadol, table="cdc-2016")
    assert result.mme_per_day is None and "tramadol" in result.reason


def test_total_counts_known_orders_and_flags_unknown() -> None:
    """A total never hides an unknown order: it says it is incomplete and why."""
    known = mme_for(CASES[4][1])
    unknown = mme_for(order("Oxycodone Hydrochloride 5 MG Oral Tablet"))
    excluded = mme_for(order("Buprenorphine 8 MG Sublingual Tablet", dose(1, "tablet", 1, 1, "d")))
    total = total_mme([known, unknown, excluded])
    assert total.mme_per_day == 40 and not total.complete
    assert total.unknown_reasons == (unknown.reason,)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "MME unknown: the dose is zero"),
        (0.0001, "MME unknown: the dose rounds to 0 MME/day"),
    ],
)
def test_a_zero_or_vanishing_dose_is_unknown_never_0(value: float, reason: str) -> None:
    """A dose of 0 (or one too small to round above 0) is "MME unknown" with the reason,
    never 0 MME/day, and a total beside it says it is incomplete."""
    result = mme_for(
        order("Oxycodone Hydrochloride 5 MG Oral Tablet", dose(value, "tablet", 4, 1, "d"))
    )
    assert result.mme_per_day is None and result.reason == reason
    assert not total_mme([result]).complete


def test_an_order_and_the_total_are_rounded_alike() -> None:
    """The order's MME/day and the total use the same rounding (two decimals)."""
    result = mme_for(
        order("Oxycodone Hydrochloride 5 MG Oral Tablet", dose(0.0011, "tablet", 1, 1, "d"))
    )
    assert result.mme_per_day == 0.01
    assert total_mme([result]).mme_per_day == result.mme_per_day


def test_medication_reference_strength_is_used() -> None:
    """A contained Medication's ingredient strength feeds the MME."""
    resource = {
        "resourceType": "MedicationRequest",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "m",
                "ingredient": [
                    {
                        "itemCodeableConcept": {"text": "oxycodone"},
                        "strength": {
                            "numerator": {"value": 10, "unit": "mg"},
                            "denominator": {"value": 1, "unit": "tablet"},
                        },
                    }
                ],
            }
        ],
        "medicationReference": {"reference": "#m"},
        "dosageInstruction": [dose(1, "tablet", 3, 1, "d")],
    }
    from cds_service.fhir.record import PatientRecord

    medication = PatientRecord(patient_id="p").medication_for(resource)
    result = mme_for(resource, KNOWLEDGE.classifier.classify_order(resource, medication))
    assert result.mme_per_day == pytest.approx(45)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_classify_command_json_fields() -> None:
    """`cds-service classify --json` prints the documented stable fields."""
    result = _cli("classify", "hydrocodone-acetaminophen 10-325 mg", "--json")
    data = json.loads(result.stdout)
    assert set(data) >= {"ingredients", "dose_form", "extended_release", "unclassified_reason"}
    assert data["ingredients"][0] == {
        "name": "hydrocodone",
        "rxcui": "5489",
        "classes": ["opioid-analgesic"],
        "strength_value": 10.0,
        "strength_unit": "mg",
    }
    coded = json.loads(
        _cli("classify", "http://www.nlm.nih.gov/research/umls/rxnorm|2598", "--json").stdout
    )
    assert coded["ingredients"][0]["name"] == "clonazepam"
    trap = _cli("classify", "oxybutynin 5 mg", "--json")
    assert trap.returncode == 1 and json.loads(trap.stdout)["unclassified_reason"]


def test_mme_command(tmp_path: Path) -> None:
    """`cds-service mme ORDER.json --json` prints mme_per_day, reason and ingredient doses."""
    path = tmp_path / "order.json"
    path.write_text(json.dumps(CASES[0][1]))
    data = json.loads(_cli("mme", str(path), "--json").stdout)
    assert data["mme_per_day"] == 180.0
    assert data["ingredients"][0]["name"] == "fentanyl"
    assert data["ingredients"][0]["factor"] == 2.4
    assert data["ingredients"][0]["daily_dose_mg"] == 1.8
    text = _cli("mme", str(path)).stdout
    assert "75 mcg/h x 2.4 = 180 MME/day" in text
