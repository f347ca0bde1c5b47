"""Slow clients against a real `cds-service serve` (2 workers x 8 threads, the shipped
limits): ordinary hook calls (prefetched, 1 KB) measured idle, then while 100 connections
send one header line every 0.5 s and 50 send a body one byte every 0.5 s (each reopened
when the server cuts it). Prints median / p95 / max latency and failures for both, and how
many slow connections the server cut (408).

    .venv/bin/python benchmarks/slow_clients.py [--calls 200] [--headers 100] [--bodies 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "http")]

from servers import Service
from test_slow_clients import SlowLoris, _latencies


def describe(label: str, took: list[float], failures: int) -> str:
    ordered = sorted(took)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"{label}: {len(took)} calls, median {statistics.median(took) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms, failures {failures}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--headers", type=int, default=100)
    parser.add_argument("--bodies", type=int, default=50)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="cds-slow-bench-")
    service = Service({"XDG_DATA_HOME": home, "CDS_CARD_LOG": "false"}, workers=2, threads=8)
    service.start()
    try:
        _latencies(service, 10)
        idle = _latencies(service, args.calls)
        with SlowLoris(service.port, args.headers, args.bodies) as attack:
            time.sleep(1.0)
            busy = _latencies(service, args.calls)
            time.sleep(12.0)  # past the 10 s header timeout
        print(describe("idle", *idle))
        print(describe(f"{args.headers} slow-header + {args.bodies} slow-body connections", *busy))
        cut = sum(a.startswith(b"HTTP/1.1 408") for a in attack.answers)
        print(f"slow connections cut by the server: {attack.reopened} ({cut} answered 408)")
    finally:
        service.stop()


if __name__ == "__main__":
    main()
