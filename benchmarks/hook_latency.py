"""Hook latency against a bare Flask endpoint that parses and echoes the same body.

    python benchmarks/hook_latency.py [--repeat 200]

For 20 and 5,000 prefetched MedicationRequests it prints the median time of
(a) a bare Flask 3 app: request.get_json() then jsonify(body), and
(b) this service's order-sign hook on the same body (no FHIR calls: everything prefetched),
both through Werkzeug's in-process client, measured alternately, and the ratio b / a
(target: <= 2.5). Repeats: --repeat for 20 orders, a fifth of it (at least 10) for 5,000.
Also prints peak memory for one 5,000-order call (tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import tracemalloc
from typing import Any

from flask import Flask, jsonify, request

from cds_service import create_app
from cds_service.config import Config

DRUGS = [
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


def order(i: int, rng: random.Random) -> dict[str, Any]:
    text, code = DRUGS[rng.randrange(len(DRUGS))]
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": text}
        ]
    year = rng.choice([2019, 2020, 2021, 2022, 2023, 2024, 2025, 2026])
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{i}",
        "status": rng.choice(["active", "completed", "stopped", "active"]),
        "intent": "order",
        "subject": {"reference": "Patient/bench"},
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
            "expectedSupplyDuration": {"value": 30, "unit": "days", "code": "d"},
            "numberOfRepeatsAllowed": rng.randint(0, 3),
        },
    }


LBP = {
    "resourceType": "Condition",
    "id": "lbp",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "279039007", "display": "Low back pain"}
        ]
    },
    "subject": {"reference": "Patient/bench"},
    "onsetDateTime": "2026-05-01",
}


def hook_body(n_orders: int, with_cards: bool = False) -> bytes:
    """An order-sign body with n prefetched orders (random mix over 2019-2026). with_cards adds
    chronic low back pain and a current alprazolam, so three cards fire."""
    rng = random.Random(n_orders)
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    body = {
        "hook": "order-sign",
        "hookInstance": "bench",
        "context": {
            "userId": "Practitioner/1",
            "patientId": "bench",
            "draftOrders": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "MedicationRequest",
                            "id": "draft-1",
                            "status": "draft",
                            "intent": "order",
                            "subject": {"reference": "Patient/bench"},
                            "authoredOn": "2026-11-23",
                            "medicationCodeableConcept": {
                                "text": "Oxycodone Hydrochloride 5 MG Oral Tablet",
                                "coding": [
                                    {
                                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                        "code": "1049621",
                                    }
                                ],
                            },
                        }
                    }
                ],
            },
        },
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "bench", "birthDate": "1970-01-01"},
            "meds": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": order(i, rng)} for i in range(n_orders)],
            },
            "conditions": empty,
            "procedures": empty,
            "serviceRequests": empty,
            "dispenses": empty,
            "statements": empty,
        },
    }
    if with_cards:
        meds = body["prefetch"]["meds"]["entry"]  # type: ignore[index]
        meds[:] = [e for e in meds if "Oxycodone" not in str(e) and "traMADol" not in str(e)]
        meds.append(
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "alp",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": "Patient/bench"},
                    "authoredOn": "2026-11-10",
                    "medicationCodeableConcept": {"text": "Alprazolam 0.5 MG Oral Tablet"},
                    "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "code": "d"}},
                }
            }
        )
        body["prefetch"]["conditions"] = {
            "resourceType": "Bundle",  # type: ignore[index]
            "entry": [{"resource": LBP}],
        }
    return json.dumps(body).encode()


def bare_app() -> Flask:
    app = Flask("bare")

    @app.post("/echo")
    def echo() -> Any:
        return jsonify(request.get_json())

    return app


def paired_medians(
    bare: Any, service: Any, path: str, data: bytes, repeat: int
) -> tuple[float, float]:
    """Median ms of the bare echo and of the hook, measured alternately so that drift in the
    machine's speed affects both sides alike."""
    for _ in range(5):
        bare.post("/echo", data=data, content_type="application/json")
        service.post(path, data=data, content_type="application/json")
    base_times, hook_times = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        response = bare.post("/echo", data=data, content_type="application/json")
        base_times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
        start = time.perf_counter()
        response = service.post(path, data=data, content_type="application/json")
        hook_times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return statistics.median(base_times), statistics.median(hook_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument(
        "--no-card-log",
        action="store_true",
        help="measure without the issued-card log (store writes)",
    )
    args = parser.parse_args()
    config = Config(
        today="2026-11-23",
        log_level="WARNING",
        card_log=not args.no_card_log,
        data_dir=tempfile.mkdtemp(prefix="cds-bench-"),
    )
    service = create_app(config).test_client()
    bare = bare_app().test_client()
    print(f"{'orders':>7} {'cards':>5} {'bare Flask ms':>14} {'hook ms':>9} {'ratio':>6}")
    for n in (20, 5000):
        for with_cards in (False, True):
            data = hook_body(n, with_cards)
            path = "/cds-services/opioid-lbp-order-sign"
            base, hook = paired_medians(
                bare, service, path, data, args.repeat if n < 1000 else max(10, args.repeat // 5)
            )
            cards = len(
                json.loads(service.post(path, data=data, content_type="application/json").data)[
                    "cards"
                ]
            )
            print(f"{n:>7} {cards:>5} {base:>14.2f} {hook:>9.2f} {hook / base:>6.2f}")
    data = hook_body(5000)
    tracemalloc.start()
    service.post("/cds-services/opioid-lbp-order-sign", data=data, content_type="application/json")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"peak memory for one 5,000-order call: {peak / 1e6:.1f} MB (body {len(data) / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
