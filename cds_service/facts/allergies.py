"""Allergies: which drug allergies and intolerances on record bar a non-opioid alternative.

An AllergyIntolerance counts (R4) when its verificationStatus is not entered-in-error or
refuted (unconfirmed, presumed and confirmed all count: a suspected NSAID allergy is reason
enough not to offer naproxen in one click) and its clinicalStatus is active, or absent;
inactive and resolved ones do not. What it is about: its code, else (or as well) each
reaction's substance, classed by knowledge/allergies.py (codes first, text as fallback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds_service.facts.model import AllergyFact
from cds_service.fhir.read import as_list, concept_text, status_code
from cds_service.fhir.record import PatientRecord

_NOT_AN_ALLERGY = frozenset({"entered-in-error", "refuted"})
_COUNTS = frozenset({"active"})


def allergies_on_record(
    record: PatientRecord, classes_of: Callable[[Any], frozenset[str]]
) -> list[AllergyFact]:
    """The patient's current allergies and intolerances in a class the rules use."""
    found: list[AllergyFact] = []
    for allergy in record.of_type("AllergyIntolerance"):
        if status_code(allergy, "verificationStatus") in _NOT_AN_ALLERGY:
            continue
        clinical = status_code(allergy, "clinicalStatus")
        if clinical and clinical not in _COUNTS:
            continue
        code = allergy.get("code")
        classes = set(classes_of(code))
        # named by the concept that says what it is about: the code, else a substance
        label = concept_text(code) if classes else ""
        for reaction in as_list(allergy.get("reaction")):
            if not isinstance(reaction, dict):
                continue
            substance = reaction.get("substance")
            more = classes_of(substance)
            if more and not label:
                label = concept_text(substance)
            classes |= more
        if classes:
            found.append(
                AllergyFact(allergy, frozenset(classes), label or concept_text(code) or "allergy")
            )
    return found
