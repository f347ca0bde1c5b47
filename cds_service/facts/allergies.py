"""Allergies: which drug allergies and intolerances on record bar a non-opioid alternative.

An AllergyIntolerance counts (R4) when its verificationStatus is not entered-in-error or
refuted (unconfirmed, presumed and confirmed all count: a suspected NSAID allergy is reason
enough not to offer naproxen in one click) and its clinicalStatus is not inactive or
resolved (active, absent or unreadable all count). A status is read from its HL7 coding
wherever that stands among the codings (EHRs put their own codings first), else from any
coding or code that is one of the HL7 values. What it is about: its code, else (or as well) each
reaction's substance, classed by knowledge/allergies.py (codes first, text as fallback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds_service.facts.model import AllergyFact
from cds_service.fhir.read import as_list, codings, concept_text
from cds_service.fhir.record import PatientRecord

_NOT_AN_ALLERGY = frozenset({"entered-in-error", "refuted"})
_NOT_CURRENT = frozenset({"inactive", "resolved"})
_CLINICAL = ("allergyintolerance-clinical", frozenset({"active", *_NOT_CURRENT}))
_VERIFICATION = (
    "allergyintolerance-verification",
    frozenset({"unconfirmed", "presumed", "confirmed", *_NOT_AN_ALLERGY}),
)


def _status(allergy: dict[str, Any], element: str, kind: tuple[str, frozenset[str]]) -> str:
    """The HL7 value of a status CodeableConcept: the coding in the HL7 code system first,
    else the first coding (or plain code) that is one of its values; "" when none is."""
    suffix, values = kind
    value = allergy.get(element)
    if isinstance(value, str):  # not R4, but read as the code it names
        code = value.strip().lower()
        return code if code in values else ""
    found = ""
    for system, code, _ in codings(value):
        code = code.lower()
        if code not in values:
            continue
        if system.endswith(suffix):
            return code
        found = found or code
    return found


def allergies_on_record(
    record: PatientRecord, classes_of: Callable[[Any], frozenset[str]]
) -> list[AllergyFact]:
    """The patient's current allergies and intolerances in a class the rules use."""
    found: list[AllergyFact] = []
    for allergy in record.of_type("AllergyIntolerance"):
        if _status(allergy, "verificationStatus", _VERIFICATION) in _NOT_AN_ALLERGY:
            continue
        if _status(allergy, "clinicalStatus", _CLINICAL) in _NOT_CURRENT:
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
