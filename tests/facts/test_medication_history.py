"""The medication history: each medication concept classified once per request, as the
classifier classifies it; the history read once per request for the rules' questions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from conftest import shared_knowledge

from cds_service.facts.medications import medication_history
from cds_service.facts.model import ClinicalFacts
from cds_service.fhir.read import JSON
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import Classification
from cds_service.settings import MedicationActivity

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ACTIVITY = MedicationActivity(
    grace_days=7,
    undated_lookback_days=90,
    assumed_supply_days=30,
    statement_confirmed_within_days=180,
)
TODAY = dt.date(2026, 11, 23)


def _order(rid: str, concept: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "authoredOn": "2026-11-10",
        "medicationCodeableConcept": concept,
        "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "code": "d"}},
    }


def test_a_repeated_drug_is_classified_once_and_odd_shapes_each_time() -> None:
    """Orders naming the same drug (same text and coding) are classified once per request;
    concepts of another shape (two codings, a lone coding object, a list where a string
    belongs) are classified every time; every entry gets the classifier's own answer."""
    classifier = shared_knowledge().classifier
    oxycodone = {
        "text": "Oxycodone Hydrochloride 5 MG Oral Tablet",
        "coding": [{"system": RXNORM, "code": "1049621", "display": "Oxycodone 5 MG"}],
    }
    odd: list[Any] = [
        {"text": "Diazepam 5 MG Oral Tablet", "coding": [{"code": "1"}, {"code": "2"}]},
        {"text": "Diazepam 5 MG Oral Tablet", "coding": {"system": RXNORM, "code": "197591"}},
        {"text": ["Diazepam 5 MG Oral Tablet"], "coding": [{"code": "x"}]},
        {"text": "Diazepam 5 MG Oral Tablet", "coding": [{"code": ["x"]}]},
    ]
    orders = [_order(f"ox{i}", dict(oxycodone)) for i in range(5)]
    orders += [_order("ibu", {"text": "Ibuprofen 600 MG Oral Tablet"})]
    orders += [_order("ibu2", {"text": "Ibuprofen 600 MG Oral Tablet"})]
    orders += [_order(f"odd{i}", concept) for i, concept in enumerate(odd * 2)]
    calls: list[str] = []

    def classify(order: JSON, medication: JSON | None) -> Classification:
        calls.append(order["id"])
        return classifier.classify_order(order, medication)

    history = medication_history(PatientRecord.of("p", orders), TODAY, classify, ACTIVITY)
    assert calls == ["ox0", "ibu"] + [f"odd{i}" for i in range(len(odd) * 2)]
    by_id = {u.resource["id"]: u for u in history}
    for order in orders:
        expected = classifier.classify_order(order, None)
        if expected.classes:
            assert by_id[order["id"]].classification == expected, order["id"]
        else:
            assert order["id"] not in by_id
    assert by_id["ox4"].has("opioid-analgesic") and by_id["ibu2"].has("nsaid")


def test_the_history_index_answers_as_a_walk_of_the_history_does() -> None:
    """history_with, active_history and analgesic_history give the entries a filter over the
    whole history gives, in record order, for one class and for several."""
    classifier = shared_knowledge().classifier
    texts = [
        "Oxycodone Hydrochloride 5 MG Oral Tablet",
        "Ibuprofen 600 MG Oral Tablet",
        "cyclobenzaprine 10 MG tablet",
        "Duloxetine 30 MG Delayed Release Oral Capsule",
        "Acetaminophen 500 MG Oral Tablet",
        "Diazepam 5 MG Oral Tablet",
        "Amitriptyline Hydrochloride 25 MG Oral Tablet",
    ]
    orders = []
    for i in range(28):
        order = _order(f"o{i}", {"text": texts[i % len(texts)]})
        order["status"] = "active" if i % 3 else "completed"
        order["authoredOn"] = "2026-11-10" if i % 4 else "2025-01-10"
        orders.append(order)
    record = PatientRecord.of("p", orders)
    history = tuple(medication_history(record, TODAY, classifier.classify_order, ACTIVITY))
    facts = ClinicalFacts(today=TODAY, patient_id="p", ordering=True, history=history)
    for classes in (("opioid-analgesic",), ("muscle-relaxant", "snri", "tricyclic"), ("none",)):
        expected = tuple(u for u in history if not u.classification.classes.isdisjoint(classes))
        assert facts.history_with(*classes) == expected, classes
    assert len(facts.history_with("muscle-relaxant", "snri", "tricyclic")) == 12
    assert facts.active_history() == tuple(u for u in history if u.active)
    assert 0 < len(facts.active_history()) < len(history)
    analgesics = tuple(u for u in history if u.classification.analgesic_role)
    assert facts.analgesic_history() == analgesics and len(analgesics) == 8
