"""Hook latency over real HTTP: this service under gunicorn vs a bare Flask echo under gunicorn.

    python benchmarks/http_latency.py [--repeat 200]

Starts `cds-service serve` and `gunicorn benchmarks.bare_app:app` (one worker each, same
thread settings) on free loopback ports, sends the same order-sign bodies as
hook_latency.py alternately to both with keep-alive connections, prints median and p95 ms
and the ratio of medians, then stops both servers.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))

from hook_latency import hook_body

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str) -> None:
    for _ in range(100):
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    service_port, bare_port = free_port(), free_port()
    env = {**os.environ, "CDS_TODAY": "2026-11-23", "CDS_LOG_LEVEL": "WARNING"}
    bin_dir = Path(sys.executable).parent
    service = subprocess.Popen(
        [str(bin_dir / "cds-service"), "serve", "--port", str(service_port), "--workers", "1"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    bare = subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            "--bind",
            f"127.0.0.1:{bare_port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--chdir",
            str(ROOT / "benchmarks"),
            "bare_app:app",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        service_url = f"http://127.0.0.1:{service_port}/cds-services/opioid-lbp-order-sign"
        bare_url = f"http://127.0.0.1:{bare_port}/echo"
        wait_until_up(f"http://127.0.0.1:{service_port}/cds-services")
        wait_until_up(f"http://127.0.0.1:{bare_port}/echo")
        session = requests.Session()
        headers = {"Content-Type": "application/json"}
        print(
            f"{'orders':>7} {'cards':>5} {'bare ms (p50/p95)':>18} {'hook ms (p50/p95)':>18}"
            f" {'ratio':>6}"
        )
        for n in (20, 5000):
            for with_cards in (False, True):
                data = hook_body(n, with_cards)
                repeat = args.repeat if n < 1000 else max(10, args.repeat // 5)
                bare_t, hook_t = [], []
                for i in range(repeat + 5):
                    start = time.perf_counter()
                    assert session.post(bare_url, data=data, headers=headers).ok
                    b = (time.perf_counter() - start) * 1000
                    start = time.perf_counter()
                    response = session.post(service_url, data=data, headers=headers)
                    h = (time.perf_counter() - start) * 1000
                    assert response.ok, response.text[:200]
                    if i >= 5:
                        bare_t.append(b)
                        hook_t.append(h)
                cards = len(response.json()["cards"])
                q = statistics.quantiles
                print(
                    f"{n:>7} {cards:>5} {statistics.median(bare_t):>8.2f} / "
                    f"{q(bare_t, n=20)[18]:>7.2f} {statistics.median(hook_t):>8.2f} / "
                    f"{q(hook_t, n=20)[18]:>7.2f} "
                    f"{statistics.median(hook_t) / statistics.median(bare_t):>6.2f}"
                )
    finally:
        service.terminate()
        bare.terminate()
        service.wait(10)
        bare.wait(10)


if __name__ == "__main__":
    main()
