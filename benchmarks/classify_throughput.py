"""Classification and MME throughput over 5,000-order histories, after start-up.

    python benchmarks/classify_throughput.py

Prints orders per second (one core), a cold pass (every distinct code or name classified once)
and a warm pass (cached look-ups: the steady state of a running service), for:
- the mixed history of benchmarks/hook_latency.py (text, some with an RxNorm coding): the
  figure measured before the code tables existed;
- the text path: the same orders with their codings removed (names only);
- the code path: 5,000 orders that carry only an RxNorm product code (no display, no text),
  drawn from the medication value set codes;
and MME for the opioid orders. Target: the code path at or above the mixed history's figure.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from hook_latency import order

from cds_service.fhir.read import RXNORM
from cds_service.knowledge import Knowledge
from cds_service.knowledge.classifier import OPIOID, Classification
from cds_service.knowledge.dosing import mme_for

KNOWLEDGE = Knowledge.load()
CLASSIFIER = KNOWLEDGE.classifier


def run(label: str, history: list[dict[str, Any]]) -> list[Classification]:
    CLASSIFIER._cache.clear()  # a cold start for each path
    start = time.perf_counter()
    classes = [CLASSIFIER.classify_order(o) for o in history]
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(5):
        classes = [CLASSIFIER.classify_order(o) for o in history]
    warm = (time.perf_counter() - start) / 5
    print(
        f"{label}: {len(history)} orders, first pass (cold cache) "
        f"{len(history) / cold:,.0f} orders/s; steady state (warm cache) "
        f"{len(history) / warm:,.0f} orders/s"
    )
    return classes


def main() -> None:
    rng = random.Random(5000)
    mixed = [order(i, rng) for i in range(5000)]
    # vary the EHR text so the cache sees many distinct names, as a real history does
    for i, o in enumerate(mixed):
        if i % 10 == 0:
            o["medicationCodeableConcept"] = {
                "text": f"{o['medicationCodeableConcept']['text']} #{i % 400}"
            }
    text_only = [
        {**o, "medicationCodeableConcept": {"text": o["medicationCodeableConcept"]["text"]}}
        for o in mixed
    ]
    codes = sorted(CLASSIFIER.product_codes)
    by_code = [
        {
            **o,
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": codes[rng.randrange(len(codes))]}]
            },
        }
        for o in mixed
    ]
    run("mixed history (names, some coded)", mixed)
    run("text path (names only)", text_only)
    classes = run("code path (RxNorm product code only)", by_code)
    recognised = sum(1 for c in classes if c.classes)
    print(f"code path: {recognised} of {len(by_code)} orders recognised from the code alone")
    opioids = [(o, c) for o, c in zip(by_code, classes, strict=True) if c.has(OPIOID)]
    start = time.perf_counter()
    for o, c in opioids:
        mme_for(o, c, KNOWLEDGE.mme)
    mme = time.perf_counter() - start
    print(f"MME for {len(opioids)} code-path opioid orders: {len(opioids) / mme:,.0f} orders/s")


if __name__ == "__main__":
    main()
