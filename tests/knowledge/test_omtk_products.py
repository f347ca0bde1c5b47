"""Every opioid product of the CDC OMTK table (vendor/terminology, the source the shipped product
table is built from) is recognised from its RxNorm code alone, with the MME CDC 2022 gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_knowledge

from cds_service.knowledge.classifier import ANTITUSSIVE, MOUD, OPIOID
from cds_service.knowledge.dosing import mme_for

ROOT = Path(__file__).resolve().parents[2]
OMTK = json.loads((ROOT / "vendor" / "terminology" / "omtk-opioid-products.json").read_text())
PRODUCTS: list[dict[str, Any]] = OMTK["products"]
KNOWLEDGE = shared_knowledge()
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# dose forms given outside the ambulatory setting (the service's injectable exclusion)
NOT_AMBULATORY = {"Injection", "Injectable Solution", "Prefilled Syringe", "Cartridge"}
NOT_AMBULATORY |= {"Auto-Injector", "Drug Implant"}
# Ionsys (fentanyl iontophoretic system, 40 mcg per activation) is for hospital use only (REMS):
# no patch strength in mcg/h, so its MME is "unknown", never a guess
IN_HOSPITAL = {"1666831", "1666837"}
SOLID = {"Tablet", "Capsule", "Lozenge", "Film", "Suppository", "System"}
AMBULATORY = [p for p in PRODUCTS if p["dose_form"] not in NOT_AMBULATORY]


def by_code(code: str) -> Any:
    return KNOWLEDGE.classifier.classify_concept({"coding": [{"system": RXNORM, "code": code}]})


def test_every_omtk_product_is_recognised_from_its_code_alone() -> None:
    """All 910 OMTK products (>= 99 % of the ambulatory ones required) are opioid analgesics,
    opioid use disorder treatment or opioid cough products from the code alone, with each
    opioid ingredient's strength and the dose form."""
    recognised = []
    for product in PRODUCTS:
        result = by_code(product["rxcui"])
        assert result.how == "rxnorm-product-code", product["name"]
        assert result.classes & {OPIOID, MOUD, ANTITUSSIVE}, product["name"]
        assert result.dose_form, product["name"]
        for ingredient in product["ingredients"]:
            name = ingredient["name"].lower()
            found = [i for i in result.ingredients if i.name == name]
            assert found and found[0].strength_value is not None, product["name"]
        recognised.append(product["rxcui"])
    ambulatory = {p["rxcui"] for p in AMBULATORY}
    assert len(ambulatory & set(recognised)) / len(ambulatory) >= 0.99
    assert len(ambulatory) > 700


def _order(product: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """One unit (tablet, capsule, patch...) or 5 mL every 6 hours; a patch every 72 h."""
    form = product["dose_form"]
    patch = form == "Transdermal System"
    solid = any(word in form for word in SOLID) or form == "Pack"
    unit, value = ("patch" if patch else "tablet", 1.0) if solid else ("mL", 5.0)
    timing = {"frequency": 1, "period": 72 if patch else 6, "periodUnit": "h"}
    order = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": product["rxcui"]}]},
        "dosageInstruction": [
            {
                "timing": {"repeat": timing},
                "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit}}],
            }
        ],
    }
    expected = 0.0
    for ingredient in product["ingredients"]:
        factor = ingredient["mme_conversion_factor"]
        strength = ingredient["strength_value"]
        if ingredient["mme_factor_basis"] == "mcg/hr":
            expected += strength * 1000 * factor  # MG/HR -> mcg/h, while worn
        else:
            expected += strength * value * 4 * factor
    return order, expected


WITH_FACTOR = [
    p
    for p in AMBULATORY
    if all(i["mme_conversion_factor"] is not None for i in p["ingredients"])
    and "Pack" not in p["dose_form"]
    and p["rxcui"] not in IN_HOSPITAL
]


@pytest.mark.parametrize("product", WITH_FACTOR, ids=[p["rxcui"] for p in WITH_FACTOR])
def test_mme_where_cdc_2022_gives_a_factor(product: dict[str, Any]) -> None:
    """An ambulatory OMTK product whose opioids all have a CDC 2022 factor gets the MME of its
    OMTK strength x factor; an opioid cough product is deliberately not a pain opioid (no MME)."""
    order, expected = _order(product)
    classification = KNOWLEDGE.classifier.classify_order(order)
    result = mme_for(order, classification, KNOWLEDGE.mme)
    if classification.has(ANTITUSSIVE) and not classification.has(OPIOID):
        assert result.excluded and "cough" in result.reason
        return
    assert result.mme_per_day == pytest.approx(expected, rel=1e-6), (product["name"], result)
