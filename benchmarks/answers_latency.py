"""What one decision, one answer costs an order hook call: the store lookup of answered
decisions, and the decision links written before the answer leaves (docs/cards.md section 7).

    python benchmarks/answers_latency.py [--repeat 500] [--decisions 50000]

Fills an embedded SQLite store with --decisions issued order cards (a tenth of them answered
through feedback), then prints the median and 95th percentile time of `Store.answered` for a
typical order-sign call (two decision keys, one answered), and the same with the lookup
switched off (0 by construction: CDS_ONE_ANSWER_PER_DECISION=false skips it); then the
median and 95th percentile time of `Store.record_decisions` for a call showing two order
cards (the synchronous insert that lets feedback answer a decision at once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import tempfile
import time

from cds_service.config import Config
from cds_service.store import open_store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard


def _key(index: int) -> str:
    return hashlib.sha256(f"decision-{index}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=500)
    parser.add_argument("--decisions", type=int, default=50_000)
    args = parser.parse_args()
    store = open_store(Config(data_dir=tempfile.mkdtemp(prefix="cds-bench-answers-")))
    now = dt.datetime.now(dt.UTC)
    batch = 1000
    for start in range(0, args.decisions, batch):
        cards = tuple(
            IssuedCard(
                card_uuid=f"card-{i}",
                rule_id="opioid-benzodiazepine",
                service_id="opioid-lbp-order-select",
                hook="order-select",
                indicator="warning",
                issued_at=now,
                patient_key="0" * 64,
                suggestions=(),
                decision=_key(i),
            )
            for i in range(start, min(start + batch, args.decisions))
        )
        store.write_card_log([CardLogEntry(HookCall(now.date(), "s", True), cards)])
        answered = [
            {
                "card": f"card-{i}",
                "outcome": "overridden",
                "acceptedSuggestions": [],
                "overrideReason": "palliative",
                "outcomeTimestamp": "t",
            }
            for i in range(start, min(start + batch, args.decisions), 10)
        ]
        store.add_feedback("opioid-lbp-order-select", answered)
    keys = [_key(10), _key(args.decisions + 1)]  # one answered, one never issued
    assert store.answered(keys) == {_key(10)}
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        store.answered(keys)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    print(f"decisions stored: {args.decisions} ({args.decisions // 10} answered)")
    print(f"Store.answered, 2 keys: median {statistics.median(times):.3f} ms, p95 {p95:.3f} ms")
    times = []
    for n in range(args.repeat):
        links = {f"link-{n}-a": _key(2 * n), f"link-{n}-b": _key(2 * n + 1)}
        started = time.perf_counter()
        store.record_decisions(links, now)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    median = statistics.median(times)
    print(f"Store.record_decisions, 2 cards: median {median:.3f} ms, p95 {p95:.3f} ms")
    store.close()


if __name__ == "__main__":
    main()
