"""Realistic order-sign bodies for the HTTP benchmark: what an EHR sends, varied per call.

Every prefetched entry carries a `fullUrl`; the chart holds medication orders (coded RxNorm
and free-text drugs, every one a drug the service classifies: opioids, benzodiazepines,
NSAIDs, acetaminophen, muscle relaxants, gabapentinoids, antidepressants and ordinary
chronic drugs), conditions (chronic low back pain among others), procedures, service
requests, dispenses and statements. The draft is an oxycodone order, so rules evaluate and
cards fire.

`BodyTemplate(n).render(patient, hook_instance, draft_id)` gives the body bytes for one
call: patient id, hookInstance and draft id differ on every call, as they do in real use.
"""

from __future__ import annotations

import json
import random
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
BASE = "https://ehr.example.org/fhir"
PATIENT = "@@PATIENT@@"
HOOK_INSTANCE = "@@HOOKINSTANCE@@"
DRAFT = "@@DRAFT@@"

DRUGS: list[tuple[str, str | None]] = [
    ("Lisinopril 10 MG Oral Tablet", "314076"),
    ("Metformin hydrochloride 500 MG Oral Tablet", "861007"),
    ("Atorvastatin 20 MG Oral Tablet", "617310"),
    ("Amlodipine 5 MG Oral Tablet", "197361"),
    ("Levothyroxine Sodium 0.05 MG Oral Tablet", "966222"),
    ("Omeprazole 20 MG Delayed Release Oral Capsule", "198053"),
    ("Ibuprofen 600 MG Oral Tablet", "197806"),
    ("Acetaminophen 500 MG Oral Tablet", "198440"),
    ("Oxycodone Hydrochloride 5 MG Oral Tablet", "1049621"),
    ("Alprazolam 0.5 MG Oral Tablet", "308048"),
    ("Gabapentin 300 MG Oral Capsule", "310431"),
    ("Sertraline 50 MG Oral Tablet", "312940"),
    ("traMADol (ULTRAM) 50 MG tablet", None),
    ("cyclobenzaprine 10 MG tablet", None),
]

CONDITIONS: list[tuple[str, str, str, str]] = [
    # (system, code, display, onset)
    (SNOMED, "279039007", "Low back pain", "2026-05-01"),
    (ICD10, "I10", "Essential (primary) hypertension", "2019-03-02"),
    (ICD10, "E11.9", "Type 2 diabetes mellitus without complications", "2020-07-15"),
    (SNOMED, "55822004", "Hyperlipidemia", "2018-01-20"),
    (ICD10, "F41.1", "Generalized anxiety disorder", "2022-10-03"),
    (ICD10, "K21.9", "Gastro-esophageal reflux disease without esophagitis", "2021-04-11"),
]

PROCEDURES: list[tuple[str, str, str]] = [
    (SNOMED, "91251008", "Physical therapy procedure", "2026-06-12"),
    (SNOMED, "168537006", "Plain radiography", "2026-05-03"),
    (SNOMED, "410177006", "Special education (regime/therapy)", "2024-02-01"),
]


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _subject() -> dict[str, str]:
    return {"reference": f"Patient/{PATIENT}"}


def _order(i: int, rng: random.Random) -> dict[str, Any]:
    text, code = DRUGS[rng.randrange(len(DRUGS))]
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code, "display": text}]
    year = rng.choice([2019, 2020, 2021, 2022, 2023, 2024, 2025, 2026])
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{i}",
        "status": rng.choice(["active", "completed", "stopped", "active"]),
        "intent": "order",
        "subject": _subject(),
        "authoredOn": f"{year}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "medicationCodeableConcept": concept,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                        "code": "community",
                    }
                ]
            }
        ],
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
        "dispenseRequest": {
            "expectedSupplyDuration": {
                "value": 30,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            },
            "numberOfRepeatsAllowed": rng.randint(0, 3),
        },
    }


def _condition(i: int, system: str, code: str, display: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"cond-{i}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": _coding(system, code, display),
        "subject": _subject(),
        "onsetDateTime": onset,
    }


def _procedure(i: int, system: str, code: str, display: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": f"proc-{i}",
        "status": "completed",
        "code": _coding(system, code, display),
        "subject": _subject(),
        "performedDateTime": when,
    }


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def realistic_body(n_orders: int) -> dict[str, Any]:
    """The body with placeholders for the per-call patient id, hookInstance and draft id."""
    rng = random.Random(n_orders)
    draft = {
        "resourceType": "MedicationRequest",
        "id": DRAFT,
        "status": "draft",
        "intent": "order",
        "subject": _subject(),
        "authoredOn": "2026-11-23",
        "medicationCodeableConcept": _coding(
            RXNORM, "1049621", "Oxycodone Hydrochloride 5 MG Oral Tablet"
        ),
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
        "dispenseRequest": {
            "expectedSupplyDuration": {
                "value": 7,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            }
        },
    }
    return {
        "hook": "order-sign",
        "hookInstance": HOOK_INSTANCE,
        "context": {
            "userId": "Practitioner/prac-1",
            "patientId": PATIENT,
            "encounterId": "enc-1",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": f"urn:uuid:{DRAFT}", "resource": draft}],
            },
        },
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": PATIENT,
                "gender": "female",
                "birthDate": "1968-03-14",
            },
            "meds": _bundle([_order(i, rng) for i in range(n_orders)]),
            "conditions": _bundle([_condition(i, *c) for i, c in enumerate(CONDITIONS)]),
            "procedures": _bundle([_procedure(i, *p) for i, p in enumerate(PROCEDURES)]),
            "serviceRequests": _bundle([]),
            "dispenses": _bundle([]),
            "statements": _bundle([]),
            "encounters": _bundle([]),
            "carePlans": _bundle([]),
        },
    }


class BodyTemplate:
    """The serialised body of one chart size; render() fills in one call's identifiers."""

    def __init__(self, n_orders: int) -> None:
        self.n_orders = n_orders
        self.raw = json.dumps(realistic_body(n_orders)).encode()

    def render(self, patient: str, hook_instance: str, draft_id: str) -> bytes:
        return (
            self.raw.replace(PATIENT.encode(), patient.encode())
            .replace(HOOK_INSTANCE.encode(), hook_instance.encode())
            .replace(DRAFT.encode(), draft_id.encode())
        )
