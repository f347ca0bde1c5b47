"""Memory under 16 concurrent 11 MB bodies (about 15,500 prefetched orders of 730 bytes each), against a
real `cds-service serve` started by the script with the shipped shape (2 workers x 8
threads, as in deploy/kubernetes/deployment.yaml).

Prints the peak resident set size of the master plus its workers (from /proc, sampled every
20 ms), each call's status and the time the last one took, once with the per-worker byte
budget (CDS_WORKER_INFLIGHT_BYTES, default the body limit) and once without it
(a budget of 1 GiB), so the difference is the budget's effect.

    .venv/bin/python benchmarks/inflight_memory.py [--clients 16] [--orders 19000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fault_servers import ServedService, rss_bytes
from servers import cards_body

MIB = 1024 * 1024
SIGN = "/cds-services/opioid-lbp-order-sign"


def big_body(orders: int) -> bytes:
    body: dict[str, Any] = cards_body()
    subject = body["prefetch"]["meds"]["entry"][0]["resource"]["subject"]
    template = {
        "resourceType": "MedicationRequest",
        "status": "completed",
        "intent": "order",
        "subject": subject,
        "authoredOn": "2020-01-01",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197696"}],
            "text": "Acetaminophen 325 MG Oral Tablet, historical order " + "x" * 300,
        },
        "dosageInstruction": [{"text": "1 tablet every 6 hours as needed"}],
    }
    body["prefetch"]["meds"]["entry"] += [
        {"resource": {**template, "id": f"m{i}"}} for i in range(orders)
    ]
    return json.dumps(body).encode()


def run(clients: int, payload: bytes, budget: str) -> None:
    env = {"CDS_CARD_LOG": "false"}
    if budget:
        env["CDS_WORKER_INFLIGHT_BYTES"] = budget
    with ServedService(env, workers=2, threads=8) as service:
        pids = [service.process.pid, *service.worker_pids()]
        time.sleep(1.0)
        start = sum(rss_bytes(p) for p in pids)
        peak = start
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    peak = max(peak, sum(rss_bytes(p) for p in pids))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses: list[int] = []
        lock = threading.Lock()
        started = time.monotonic()

        def call() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=120)
            conn.request("POST", SIGN, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            with lock:
                statuses.append(response.status)
            conn.close()

        threads = [threading.Thread(target=call) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - started
        stop.set()
        sampler.join()
    label = f"budget {budget or 'default'}"
    print(
        f"{label}: {clients} x {len(payload) / MIB:.1f} MiB: statuses {dict(Counter(statuses))}, "
        f"all answered in {took:.1f} s; RSS master+workers {start / MIB:.0f} MiB at rest, "
        f"peak {peak / MIB:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--orders", type=int, default=15500)
    parser.add_argument("--budget-only", action="store_true")
    args = parser.parse_args()
    payload = big_body(args.orders)
    run(args.clients, payload, "")
    if not args.budget_only:
        run(args.clients, payload, str(1024 * MIB))


if __name__ == "__main__":
    main()
