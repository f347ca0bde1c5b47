"""Speed work changes no answer: a fixed set of hook requests (every rule fixture, the sandbox
bodies, and generated charts of 5 to 400 entries mixing orders, statements, dispenses,
conditions and procedures of every status and date) gets exactly the responses recorded in
tests/data/identical_cards.json, uuids aside.

The recorded responses were produced by the code before the hot-path work (issue 22),
after the merge of issues 16 to 21.
A deliberate change of card text or rules re-records them:

    CDS_RECORD_IDENTICAL_CARDS=1 pytest tests/hooks/test_identical_cards.py
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

import pytest
from conftest import (
    FIXTURES,
    ROOT,
    SERVICE,
    CheckedClient,
    fixture_request,
    full_prefetch,
    sandbox,
)

from cds_service.rules.registry import default_rules
from cds_service.settings import load_settings

EXPECTED = ROOT / "tests" / "data" / "identical_cards.json"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

DRUGS: list[tuple[str, str | None]] = [
    ("Oxycodone Hydrochloride 5 MG Oral Tablet", "1049621"),
    ("Alprazolam 0.5 MG Oral Tablet", "308048"),
    ("Ibuprofen 600 MG Oral Tablet", "197806"),
    ("Acetaminophen 500 MG Oral Tablet", "198440"),
    ("Gabapentin 300 MG Oral Capsule", "310431"),
    ("Lisinopril 10 MG Oral Tablet", "314076"),
    ("Metformin hydrochloride 500 MG Oral Tablet", "861007"),
    ("Sertraline 50 MG Oral Tablet", "312940"),
    ("traMADol (ULTRAM) 50 MG tablet", None),
    ("cyclobenzaprine (FLEXERIL) 10 MG tablet", None),
    ("HYDROcodone-acetaminophen (NORCO) 5-325 MG per tablet", None),
    ("clonazePAM (KLONOPIN) 0.5 MG tablet", None),
    ("Naproxen 500 MG Oral Tablet", None),
    ("Buprenorphine 8 MG / Naloxone 2 MG Sublingual Film [Suboxone]", None),
    ("72 HR Fentanyl 0.025 MG/HR Transdermal System", None),
    ("Naloxone Hydrochloride 4 MG/ACTUAT Nasal Spray [Narcan]", None),
    ("Lorazepam 1 MG Oral Tablet", None),
    ("Methadone Hydrochloride 10 MG/ML Oral Solution", None),
]
CONDITIONS: list[tuple[str, str, str]] = [
    (SNOMED, "279039007", "Low back pain"),
    (ICD10, "M54.50", "Low back pain, unspecified"),
    (ICD10, "I10", "Essential (primary) hypertension"),
    (ICD10, "F11.20", "Opioid dependence, uncomplicated"),
    (ICD10, "C61", "Malignant neoplasm of prostate"),
    (ICD10, "D57.00", "Hb-SS disease with crisis, unspecified"),
    (ICD10, "F41.1", "Generalized anxiety disorder"),
]
PROCEDURES: list[tuple[str, str, str]] = [
    (SNOMED, "91251008", "Physical therapy procedure"),
    (SNOMED, "228557008", "Cognitive behavioral therapy"),
    (SNOMED, "168537006", "Plain radiography"),
]
DRAFTS = [0, 8, 10, 14, 1, 12]  # indexes into DRUGS: opioids, a benzodiazepine, an NSAID


def _concept(rng: random.Random, text: str, code: str | None, system: str) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if code and rng.random() < 0.8:
        concept["coding"] = [{"system": system, "code": code, "display": text}]
    return concept


def _date(rng: random.Random) -> str:
    year = rng.choice([2019, 2022, 2024, 2025, 2026, 2026, 2026])
    month = rng.randint(1, 11 if year == 2026 else 12)
    return f"{year}-{month:02d}-{rng.randint(1, 28):02d}"


def _supply(rng: random.Random) -> dict[str, Any]:
    return {
        "expectedSupplyDuration": {
            "value": rng.choice([7, 14, 30, 90]),
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    }


def _med(rng: random.Random, kind: str, i: int, patient: str) -> dict[str, Any]:
    text, code = DRUGS[rng.randrange(len(DRUGS))]
    resource: dict[str, Any] = {
        "resourceType": kind,
        "id": f"{kind[:3].lower()}-{i}",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": _concept(rng, text, code, RXNORM),
    }
    if kind == "MedicationRequest":
        resource["status"] = rng.choice(["active", "active", "completed", "stopped", "on-hold"])
        resource["intent"] = "order"
        resource["authoredOn"] = _date(rng)
        resource["dispenseRequest"] = _supply(rng)
        resource["dosageInstruction"] = [
            {
                "timing": {"repeat": {"frequency": rng.choice([1, 2, 4]), "period": 1}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ]
    elif kind == "MedicationStatement":
        resource["status"] = rng.choice(["active", "completed", "stopped", "intended"])
        resource["effectiveDateTime"] = _date(rng)
    else:
        resource["status"] = rng.choice(["completed", "completed", "in-progress"])
        resource["whenHandedOver"] = _date(rng)
        resource["daysSupply"] = {"value": rng.choice([5, 30]), "unit": "d"}
    return resource


def _entries(resources: list[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    entries = []
    for r in resources:
        entry: dict[str, Any] = {"resource": r}
        choice = rng.random()
        if choice < 0.5:
            entry["fullUrl"] = f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}"
        elif choice < 0.7:
            entry["fullUrl"] = f"urn:uuid:{r['resourceType'].lower()}-{r['id']}"
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def generated_request(seed: int, n: int, hook: str) -> dict[str, Any]:
    """A chart of about n entries of every kind, reproducible from its seed."""
    rng = random.Random(seed)  # noqa: S311 - reproducible charts, not secrets
    patient = f"gen-{seed}"
    meds = [_med(rng, "MedicationRequest", i, patient) for i in range(n)]
    statements = [_med(rng, "MedicationStatement", i, patient) for i in range(n // 5)]
    dispenses = [_med(rng, "MedicationDispense", i, patient) for i in range(n // 5)]
    conditions = [
        {
            "resourceType": "Condition",
            "id": f"cond-{i}",
            "subject": {"reference": f"Patient/{patient}"},
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": rng.choice(["active", "active", "resolved"]),
                    }
                ]
            },
            "code": _concept(rng, c[2], c[1], c[0]),
            "onsetDateTime": _date(rng),
        }
        for i, c in enumerate(rng.sample(CONDITIONS, rng.randint(1, 4)))
    ]
    procedures = [
        {
            "resourceType": "Procedure",
            "id": f"proc-{i}",
            "subject": {"reference": f"Patient/{patient}"},
            "status": rng.choice(["completed", "completed", "not-done"]),
            "code": _concept(rng, p[2], p[1], p[0]),
            "performedDateTime": _date(rng),
        }
        for i, p in enumerate(rng.sample(PROCEDURES, rng.randint(0, 2)))
    ]
    prefetch = full_prefetch(
        patient,
        meds=_entries(meds, rng),
        statements=_entries(statements, rng),
        dispenses=_entries(dispenses, rng),
        conditions=_entries(conditions, rng),
        procedures=_entries(procedures, rng),
    )
    context: dict[str, Any] = {"userId": "Practitioner/p-1", "patientId": patient}
    if hook != "patient-view":
        text, code = DRUGS[DRAFTS[seed % len(DRAFTS)]]
        draft = {
            "resourceType": "MedicationRequest",
            "id": f"draft-{seed}",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": f"Patient/{patient}"},
            "authoredOn": "2026-11-23",
            "medicationCodeableConcept": _concept(rng, text, code, RXNORM),
            "dispenseRequest": _supply(rng),
        }
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "entry": [{"fullUrl": f"urn:uuid:draft-{seed}", "resource": draft}],
        }
        if hook == "order-select":
            context["selections"] = [f"MedicationRequest/draft-{seed}"]
    return {"hook": hook, "hookInstance": f"hi-{seed}", "context": context, "prefetch": prefetch}


def cases() -> dict[str, dict[str, Any]]:
    """name -> request body, for every request whose response is compared."""
    found: dict[str, dict[str, Any]] = {}
    for directory in sorted(p.parent for p in FIXTURES.glob("*/cases.json")):
        for name, case in json.loads((directory / "cases.json").read_text("utf-8")).items():
            found[f"{directory.name}/{name}"] = fixture_request(directory, name, case)
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    found["sandbox/order-sign-oxycodone.json"] = body
    hooks = ("order-sign", "order-sign", "order-select", "patient-view")
    for seed in range(40):
        n = (5, 20, 60, 150, 400)[seed % 5]
        hook = hooks[seed % len(hooks)]
        found[f"generated/{seed}-{hook}-{n}"] = generated_request(seed, n, hook)
    return found


def normalised(body: Any) -> Any:
    """The response with every uuid replaced by a placeholder (cards get fresh ones)."""
    return json.loads(_UUID.sub("<uuid>", json.dumps(body, sort_keys=True)))


def responses_for(client: CheckedClient) -> dict[str, Any]:
    answers = {}
    for name, body in cases().items():
        response = client.post(f"/cds-services/{SERVICE[body['hook']]}", body)
        answers[name] = {"status": response.status_code, "body": normalised(response.get_json())}
    return answers


def test_responses_are_identical_to_the_recorded_ones(client: CheckedClient) -> None:
    """Every request of the fixed set gets the recorded status and body (uuids aside)."""
    answers = responses_for(client)
    if os.environ.get("CDS_RECORD_IDENTICAL_CARDS"):
        EXPECTED.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n", "utf-8")
        pytest.skip("recorded tests/data/identical_cards.json")
    expected = json.loads(EXPECTED.read_text("utf-8"))
    assert sorted(answers) == sorted(expected)
    different = [name for name in expected if answers[name] != expected[name]]
    assert different == [], different[:5]


def test_the_fixed_set_covers_cards_and_silence() -> None:
    """The recorded set holds responses with cards of every rule and responses with none."""
    expected = json.loads(EXPECTED.read_text("utf-8"))
    generated = [v for k, v in expected.items() if k.startswith("generated/")]
    assert any(v["body"]["cards"] for v in generated)
    assert any(not v["body"]["cards"] for v in generated)

    def topics(answers: list[dict[str, Any]]) -> set[str]:
        return {c["source"]["topic"]["code"] for v in answers for c in v["body"].get("cards", ())}

    rules = default_rules()
    settings = load_settings({r.id: r.settings_type for r in rules})
    shown = {r.id for r in rules if settings.rules[r.id].mode != "silent"}  # silent: never shown
    assert topics(list(expected.values())) >= shown
    assert len(topics(generated)) >= 3
