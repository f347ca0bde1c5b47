"""Hook latency with the card log on vs off, over real HTTP.

    python benchmarks/card_log_latency.py [--repeat 300] [--database-url postgresql://...]

Starts two `cds-service serve` processes (one worker each, same settings) on free loopback
ports: one with CDS_CARD_LOG=on, one with CDS_CARD_LOG=off, each on its own embedded SQLite
database (or both on --database-url). Sends the same order-sign requests alternately to both
with keep-alive connections (a request firing three cards with suggestions, and one firing
none), and prints median and p95 ms and the ratio of medians (target: at most 1.10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import cards_body, free_port


def start(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stderr=subprocess.DEVNULL,
    )


def wait_until_up(url: str) -> None:
    for _ in range(200):
        try:
            if requests.get(url, timeout=0.5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    ports = {"on": free_port(), "off": free_port()}
    processes = {}
    for mode, port in ports.items():
        env = {
            **os.environ,
            "CDS_TODAY": "2026-11-23",
            "CDS_LOG_LEVEL": "WARNING",
            "CDS_CARD_LOG": mode,
            "CDS_DATA_DIR": tempfile.mkdtemp(prefix=f"cds-{mode}-"),
        }
        if args.database_url:
            env.update(
                CDS_DATABASE_URL=args.database_url,
                CDS_PSEUDONYM_KEY="benchmark-pseudonym-key-0123456789",
            )
        processes[mode] = start(env, port)
    try:
        for port in ports.values():
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
        sessions = {mode: requests.Session() for mode in ports}
        quiet = cards_body()
        quiet["prefetch"]["meds"]["entry"] = []
        quiet["prefetch"]["conditions"]["entry"] = []
        print(
            f"{'request':>8} {'cards':>5} {'log off ms (p50/p95)':>21} "
            f"{'log on ms (p50/p95)':>20} {'ratio':>6}"
        )
        for label, body in (("3 cards", cards_body()), ("no card", quiet)):
            times: dict[str, list[float]] = {"on": [], "off": []}
            cards = 0
            for i in range(args.repeat + 10):
                order = ("on", "off") if i % 2 else ("off", "on")
                for mode in order:
                    url = f"http://127.0.0.1:{ports[mode]}/cds-services/opioid-lbp-order-sign"
                    started = time.perf_counter()
                    response = sessions[mode].post(url, json=body, timeout=30)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.ok, response.text[:200]
                    cards = len(response.json()["cards"])
                    if i >= 10:
                        times[mode].append(elapsed)
            q = statistics.quantiles
            off, on = times["off"], times["on"]
            print(
                f"{label:>8} {cards:>5} {statistics.median(off):>10.2f} / {q(off, n=20)[18]:>7.2f}"
                f" {statistics.median(on):>9.2f} / {q(on, n=20)[18]:>7.2f}"
                f" {statistics.median(on) / statistics.median(off):>6.2f}"
            )
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(20)


if __name__ == "__main__":
    main()
