"""What reading a hook request costs before any clinical logic, per chart size, in process.

For each size: the body parse (`read_json_bytes` + `parse_hook_request`), the record load
(`RecordLoader.load`, all prefetched, no FHIR server), the freeing of what they built, and
the garbage collections they trigger, as request-thread CPU (medians over distinct bodies:
patient, hookInstance and draft id differ per call). The collector runs with the thresholds
`create_app` sets, or with the served worker's (`--served-gc`: young generation at
GC_WORKER_YOUNG, see cds_service/cli/serve.py).

    .venv/bin/python benchmarks/loading_cost.py [--sizes 1000:40,5000:8] [--served-gc]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from realistic import BodyTemplate

from cds_service import GC_THRESHOLDS, create_app
from cds_service.cli.serve import GC_WORKER_YOUNG
from cds_service.config import Config
from cds_service.hooks.request import parse_hook_request, read_json_bytes
from cds_service.hooks.services import SERVICES_BY_ID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000:40,5000:8", help="orders:calls,...")
    parser.add_argument("--served-gc", action="store_true", help="the served worker's GC")
    args = parser.parse_args()
    app = create_app(Config(today="2026-11-23", data_dir=tempfile.mkdtemp()))
    if args.served_gc:
        gc.set_threshold(GC_WORKER_YOUNG, *GC_THRESHOLDS[1:])
    engine = app.extensions["cds_engine"]
    service = SERVICES_BY_ID["opioid-lbp-order-sign"]
    collections = [0]

    def count(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            collections[0] += 1

    print(f"gc thresholds {gc.get_threshold()}")
    print(" orders  body KB  parse ms  load ms  parse+load ms  free ms  collections/call")
    for size in args.sizes.split(","):
        orders, calls = (int(x) for x in size.split(":"))
        template = BodyTemplate(orders)
        bodies = [template.render(f"p{i}", f"h{i}", f"d{i}") for i in range(calls + 3)]
        parse, load, free = [], [], []
        collections[0] = 0
        for i, raw in enumerate(bodies):
            if i == 3:
                gc.callbacks.append(count)
            t0 = time.thread_time()
            request = parse_hook_request(
                read_json_bytes(raw), service, engine.config.max_bundle_entries
            )
            t1 = time.thread_time()
            record = engine.loader.load(request, service)
            t2 = time.thread_time()
            del request, record
            t3 = time.thread_time()
            if i >= 3:
                parse.append(t1 - t0)
                load.append(t2 - t1)
                free.append(t3 - t2)
        gc.callbacks.remove(count)
        p, ld, f = (statistics.median(x) * 1000 for x in (parse, load, free))
        print(
            f"{orders:7d} {len(bodies[0]) // 1024:8d} {p:9.2f} {ld:8.2f} {p + ld:14.2f}"
            f" {f:8.2f} {collections[0] / calls:17.2f}"
        )


if __name__ == "__main__":
    main()
