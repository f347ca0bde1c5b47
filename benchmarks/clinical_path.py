"""CPU of the clinical path alone: FactBuilder.derive + Engine.run_rules, in process.

    python benchmarks/clinical_path.py [--sizes 1000:40,5000:8] [--warm]
    python benchmarks/clinical_path.py --sizes 20:300 --warm    # the 20-order call

For each chart size (realistic order-sign bodies, benchmarks/realistic.py) the bodies are
parsed and the records loaded first (not measured); then each record's facts are derived and
the order-sign rules run, timed with the request thread's CPU clock (time.thread_time). The
garbage collector is off while timing and run between calls (the served app raises its
thresholds after start-up so that no collection happens during a call). Prints the median
CPU of derive, of the rules and of both per call, and the smallest total; the findings are
printed so two checkouts can be seen to answer alike. `--warm`: no collection between
calls and each record evaluated five times in a row, its least CPU kept (warm caches: the
work itself, far less noisy on a shared machine than the cold figure). Run it with PYTHONPATH=<a checkout>,
alternating checkouts, to compare commits: the machine's own speed varies within minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realistic import BodyTemplate

from cds_service import create_app
from cds_service.config import Config
from cds_service.hooks.pipeline import Engine
from cds_service.hooks.request import parse_hook_request
from cds_service.hooks.services import SERVICES_BY_ID

SERVICE = "opioid-lbp-order-sign"
TODAY = dt.date(2026, 11, 23)


def measure(engine: Engine, n_orders: int, calls: int, warm: bool = False) -> str:
    service = SERVICES_BY_ID[SERVICE]
    template = BodyTemplate(n_orders)
    records = []
    for i in range(calls + 3):  # three warm-up calls
        body = json.loads(template.render(f"p{i}", f"h{i}", f"d{i}"))
        request = parse_hook_request(body, service, engine.config.max_bundle_entries)
        records.append(engine.loader.load(request, service, ()))
    derive: list[float] = []
    rules: list[float] = []
    findings: list[str] = []
    gc.collect()
    gc.disable()
    try:
        for record in records:
            best: tuple[float, float] | None = None
            for _ in range(5 if warm else 1):
                start = time.thread_time()
                facts = engine.facts.derive(record, TODAY, ordering=True)
                middle = time.thread_time()
                found, _ = engine.run_rules("order-sign", facts)
                end = time.thread_time()
                if best is None or end - start < sum(best):
                    best = (middle - start, end - middle)
                findings = sorted(f.rule_id for f in found)
                del facts, found
            assert best is not None
            derive.append(best[0])
            rules.append(best[1])
            if not warm:
                gc.collect()
    finally:
        gc.enable()
    derive, rules = derive[3:], rules[3:]
    total = [a + b for a, b in zip(derive, rules, strict=True)]
    digits = 3 if warm else 2
    return (
        f"{n_orders:>6} orders: derive {statistics.median(derive) * 1000:.{digits}f} ms, rules "
        f"{statistics.median(rules) * 1000:.{digits}f} ms, both "
        f"{statistics.median(total) * 1000:.{digits}f} ms (least {min(total) * 1000:.{digits}f} "
        f"ms; {len(total)} calls); findings {', '.join(findings)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000:40,5000:8", help="orders:calls,...")
    parser.add_argument(
        "--warm", action="store_true", help="no collection between calls; least of 5 per record"
    )
    args = parser.parse_args()
    app = create_app(Config(today=TODAY.isoformat(), data_dir=tempfile.mkdtemp()))
    engine: Engine = app.extensions["cds_engine"]
    for size in args.sizes.split(","):
        n_orders, calls = (int(part) for part in size.split(":"))
        print(measure(engine, n_orders, calls, args.warm), flush=True)


if __name__ == "__main__":
    main()
