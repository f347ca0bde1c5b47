"""Latency of good calls while N clients call a trickling or hanging FHIR server.

Against a real `cds-service serve` on loopback (defaults: 2 workers x 8 threads, the default
limits), with loopback FHIR servers started here (tests/fault_servers.py):
1. idle: prefetched calls (all data in the request) and calls whose data comes from a healthy
   FHIR server, measured one at a time, alternating;
2. the same calls, measured the same way, while N (default 24) client threads keep calling
   with a trickling (one byte every 0.3 s) or hanging FHIR server (the load runs in a
   separate process so it does not share this process's interpreter lock); the load clients
   honour Retry-After as an EHR would;
3. after the bad server goes away: the service's connections to it (from /proc/net/tcp) and
   the good calls again.
Prints medians and p99 and their ratios to idle. Every loop is bounded in count and time.

    .venv/bin/python benchmarks/fault_latency.py [--clients 24] [--modes trickle,hang]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fault_servers import FaultServer, ServedService

SIGN = "/cds-services/opioid-lbp-order-sign"
SANDBOX = json.loads((ROOT / "fixtures/fhir/sandbox/order-sign-oxycodone.json").read_text())


def fallback_body(base: str) -> bytes:
    body = copy.deepcopy(SANDBOX)
    body["fhirServer"] = base
    return json.dumps(body).encode()


def prefetched_body(base: str) -> bytes:
    body = copy.deepcopy(SANDBOX)
    body["fhirServer"] = base
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    body["prefetch"] = {
        "patient": {"resourceType": "Patient", "id": "pt-1", "birthDate": "1970-01-01"},
        "meds": empty,
        "procedures": empty,
        "serviceRequests": empty,
        "dispenses": empty,
        "statements": empty,
        "conditions": SANDBOX["prefetch"]["conditions"],
    }
    return json.dumps(body).encode()


def call(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, float, str]:
    started = time.perf_counter()
    conn.request("POST", SIGN, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return (response.status, time.perf_counter() - started, response.getheader("Retry-After") or "")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(port: int, prefetched: bytes, healthy: bytes, rounds: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out: dict[str, Any] = {"prefetched": [], "healthy": [], "healthy_status": {}}
    for _ in range(rounds):
        status, took, _ = call(conn, prefetched)
        assert status == 200, status
        out["prefetched"].append(took)
        status, took, _ = call(conn, healthy)
        out["healthy"].append(took)
        out["healthy_status"][status] = out["healthy_status"].get(status, 0) + 1
    conn.close()
    return out


def load(port: int, bad_base: str, clients: int, seconds: float, hammer: bool) -> None:
    """The load process: `clients` threads calling with the bad FHIR server for `seconds`."""
    body = fallback_body(bad_base)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(100_000):
            if time.monotonic() >= until:
                break
            try:
                status, took, retry_after = call(conn, body)
            except (OSError, http.client.HTTPException):
                status, took, retry_after = -1, 0.0, ""
                conn.close()
            with lock:
                results.append((status, took))
            if retry_after.isdigit() and not hammer:  # as an EHR would: wait as told
                time.sleep(min(float(retry_after), max(0.0, until - time.monotonic())))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    by_status = {s: sorted(t for st, t in results if st == s) for s in statuses}
    print(
        json.dumps(
            {
                "statuses": statuses,
                "median_s": {s: round(statistics.median(v), 3) for s, v in by_status.items() if v},
                "max_s": {s: round(max(v), 3) for s, v in by_status.items() if v},
            }
        )
    )


def connections_to(port: int) -> dict[str, int]:
    """TCP sockets on this host whose remote port is `port`, by state (from /proc/net/tcp)."""
    states = {
        "01": "ESTABLISHED",
        "06": "TIME_WAIT",
        "08": "CLOSE_WAIT",
        "04": "FIN_WAIT1",
        "05": "FIN_WAIT2",
        "0A": "LISTEN",
        "09": "LAST_ACK",
        "02": "SYN_SENT",
    }
    found: dict[str, int] = {}
    with open("/proc/net/tcp", encoding="ascii") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port:
                state = states.get(fields[3], fields[3])
                found[state] = found.get(state, 0) + 1
    return found


def summary(name: str, idle: list[float], loaded: list[float]) -> str:
    m0, m1 = statistics.median(idle), statistics.median(loaded)
    p0, p1 = pct(idle, 0.99), pct(loaded, 0.99)
    return (
        f"  {name:<11} idle median {m0 * 1000:7.1f} ms p99 {p0 * 1000:7.1f} ms | "
        f"loaded median {m1 * 1000:7.1f} ms p99 {p1 * 1000:7.1f} ms | "
        f"ratio median {m1 / m0:5.2f} p99 {p1 / p0:5.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--modes", default="trickle,hang")
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--hammer",
        action="store_true",
        help="load clients ignore Retry-After and call again at once",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service, e.g. CDS_FHIR_BREAKER_FAILURES=0",
    )
    parser.add_argument("--load", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load(
            int(args.load[0]),
            args.load[1],
            int(args.load[2]),
            float(args.load[3]),
            args.load[4] == "hammer",
        )
        return 0
    env = dict(item.split("=", 1) for item in args.env)
    with (
        FaultServer("healthy", max_seconds=600) as good,
        ServedService(env=env, workers=args.workers, threads=args.threads) as service,
    ):
        print(
            f"cds-service serve: {args.workers} workers x {args.threads} threads, settings "
            f"{env or 'default'}; {args.clients} load clients"
            f"{' ignoring Retry-After' if args.hammer else ''}; {args.rounds} rounds"
        )
        for mode in args.modes.split(","):
            with FaultServer(mode, delay=0.3, max_seconds=600) as bad:
                prefetched = prefetched_body(bad.base)
                healthy = fallback_body(good.base)
                measure(service.port, prefetched, healthy, 20)  # warm-up
                idle = measure(service.port, prefetched, healthy, args.rounds)
                seconds = 4.0 + args.rounds * 0.05
                loader = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--load",
                        str(service.port),
                        bad.base,
                        str(args.clients),
                        str(seconds),
                        "hammer" if args.hammer else "polite",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(2.0)  # the bad calls are in flight
                loaded = measure(service.port, prefetched, healthy, args.rounds)
                out, _ = loader.communicate(timeout=seconds + 60)
                print(f"{mode} FHIR server:")
                print(summary("prefetched", idle["prefetched"], loaded["prefetched"]))
                print(summary("healthy", idle["healthy"], loaded["healthy"]))
                print(
                    f"  healthy-server statuses under load {loaded['healthy_status']}, "
                    f"max {max(loaded['healthy']) * 1000:.0f} ms"
                )
                print(f"  calls with the {mode} server: {out.strip()}")
                bad_port = bad.port
            time.sleep(1.0)
            left = {k: v for k, v in connections_to(bad_port).items() if k != "TIME_WAIT"}
            after = measure(service.port, prefetched, healthy, 30)
            print(
                f"  1 s after the {mode} server went away: connections to it {left or 'none'}; "
                f"prefetched median {statistics.median(after['prefetched']) * 1000:.1f} ms, "
                f"healthy median {statistics.median(after['healthy']) * 1000:.1f} ms, "
                f"healthy statuses {after['healthy_status']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
