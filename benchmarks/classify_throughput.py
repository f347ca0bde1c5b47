"""Classification and MME throughput over a 5,000-order history, after start-up.

    python benchmarks/classify_throughput.py

Prints orders per second (one core) for: a cold pass (every distinct name parsed once), a
warm pass (cached look-ups, the steady state of a running service), and MME for the opioid
orders. Target: at least 20,000 orders per second.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hook_latency import order

from cds_service.knowledge import Knowledge
from cds_service.knowledge.classifier import OPIOID
from cds_service.knowledge.dosing import mme_for

KNOWLEDGE = Knowledge.load()
CLASSIFIER = KNOWLEDGE.classifier


def main() -> None:
    import random

    rng = random.Random(5000)
    history = [order(i, rng) for i in range(5000)]
    # vary the EHR text so the cache sees many distinct names, as a real history does
    for i, o in enumerate(history):
        if i % 10 == 0:
            o["medicationCodeableConcept"] = {"text": f"{o['medicationCodeableConcept']['text']} #{i % 400}"}
    start = time.perf_counter()
    classes = [CLASSIFIER.classify_order(o) for o in history]
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(5):
        classes = [CLASSIFIER.classify_order(o) for o in history]
    warm = (time.perf_counter() - start) / 5
    opioids = [(o, c) for o, c in zip(history, classes, strict=True) if c.has(OPIOID)]
    start = time.perf_counter()
    for o, c in opioids:
        mme_for(o, c, KNOWLEDGE.mme)
    mme = time.perf_counter() - start
    print(f"orders: {len(history)}, distinct names: {len({id(c) for c in classes})}")
    print(f"classification, first pass (cold cache): {len(history) / cold:,.0f} orders/s")
    print(f"classification, steady state (warm cache): {len(history) / warm:,.0f} orders/s")
    print(f"MME for {len(opioids)} opioid orders: {len(opioids) / mme:,.0f} orders/s")


if __name__ == "__main__":
    main()
