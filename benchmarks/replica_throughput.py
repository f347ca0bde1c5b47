"""Concurrent throughput against two replicas sharing a throwaway PostgreSQL server.

    python benchmarks/replica_throughput.py [--requests 2000] [--clients 16] [--workers 1]

Starts PostgreSQL 15 (as in the tests: initdb in a temporary directory, loopback only, as an
unprivileged user when run as root), runs `cds-service db upgrade`, starts two `cds-service
serve` replicas with CDS_AUTH=required (every call carries a fresh signed JWT, so every call
also claims its jti in the shared replay cache) and the card log on, then sends order-sign
requests that fire three cards from --clients threads, alternating between the replicas, and
prints requests per second and latency percentiles. A second run sends everything to one
replica for comparison. Stops everything afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jwt_keys import BASE, ISS, JWKS, token
from servers import Service, cards_body, start_postgres

SIGN = "/cds-services/opioid-lbp-order-sign"


def run(targets: list[Service], total: int, clients: int) -> tuple[float, list[float], int]:
    bodies = json.dumps(cards_body())
    tokens = [token(path=SIGN) for _ in range(total)]
    sessions = [requests.Session() for _ in range(clients)]
    latencies: list[float] = []
    errors = 0

    def one(index: int) -> tuple[float, bool]:
        session = sessions[index % clients]
        target = targets[index % len(targets)]
        started = time.perf_counter()
        response = session.post(
            target.base + SIGN,
            data=bodies,
            timeout=30,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {tokens[index]}",
            },
        )
        return (time.perf_counter() - started) * 1000, response.status_code == 200

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for elapsed, ok in pool.map(one, range(total)):
            latencies.append(elapsed)
            errors += not ok
    return total / (time.perf_counter() - started), latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    postgres = start_postgres()
    home = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    issuers = home / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    env = {
        "CDS_DATABASE_URL": postgres.url,
        "CDS_PSEUDONYM_KEY": "bench-key-0123456789abcdef",
        "CDS_AUTH": "required",
        "CDS_PUBLIC_BASE_URL": BASE,
        "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        "XDG_DATA_HOME": str(home),
    }
    replicas = [Service(env, workers=args.workers, threads=8) for _ in range(2)]
    try:
        subprocess.run(
            [sys.executable, "-m", "cds_service.cli", "db", "upgrade"],
            env=replicas[0].env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        for replica in replicas:
            replica.start()
        run(replicas, 100, 4)  # warm-up
        print(
            f"{'target':>14} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} "
            f"{'p95 ms':>7} {'p99 ms':>7} {'errors':>6}"
        )
        for label, targets in (("both replicas", replicas), ("one replica", replicas[:1])):
            rate, latencies, errors = run(targets, args.requests, args.clients)
            q = statistics.quantiles(latencies, n=100)
            print(
                f"{label:>14} {args.clients:>7} {args.requests:>8} {rate:>7.0f} "
                f"{statistics.median(latencies):>7.1f} {q[94]:>7.1f} {q[98]:>7.1f} {errors:>6}"
            )
        written = sum(r.metric("cds_card_log_written_total") for r in replicas)
        lost = sum(r.metric("cds_card_log_lost_total") for r in replicas)
        print(f"card log: {written:.0f} cards written, {lost:.0f} entries lost")
    finally:
        for replica in replicas:
            replica.stop()
        postgres.cleanup()


if __name__ == "__main__":
    main()
