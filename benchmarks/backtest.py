"""Backtest throughput and peak memory: patients/s, orders/s and the peak resident memory of
the whole process tree (the command, its pool workers or Spark's JVM and Python workers),
for the local engine at 1 and 2 workers and for Spark on local[2].

    python benchmarks/backtest.py --patients 10000            # all three runs
    python benchmarks/backtest.py --patients 100000 --runs local2 --memory-mb 512

Each run is `cds-service backtest` in a subprocess over a generated export (made once per
size in --work, then reused). Figures are printed, one line per run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RUNS = {
    "local1": ["--engine", "local", "--workers", "1"],
    "local2": ["--engine", "local", "--workers", "2"],
    "spark2": ["--engine", "spark", "--spark-master", "local[2]"],
}


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and every descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def measure(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, _ = process.communicate()
    stop.set()
    thread.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    return time.monotonic() - started, peak, out.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "cds-backtest-bench"))
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--gzip", action="store_true", help="generate .ndjson.gz files")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "cds_service.cli"]
    work = Path(args.work)
    export = work / f"export-{args.patients}"
    env = {**os.environ, "CDS_DATA_DIR": str(work / "data"), "CDS_LOG_LEVEL": "WARNING"}
    if not export.exists():
        started = time.monotonic()
        subprocess.run(
            [*cli, "backtest", "generate", "--patients", str(args.patients), "--seed", "1",
             "--out", str(export), *(["--gzip"] if args.gzip else [])],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"generated {args.patients} patients in {time.monotonic() - started:.1f} s")
    size = sum(p.stat().st_size for p in export.iterdir())
    print(f"export: {args.patients} patients, {size / 1e6:.1f} MB")
    for name in args.runs:
        out = work / f"out-{args.patients}-{name}"
        command = [*cli, "backtest", str(export), "--out", str(out),
                   "--memory-mb", str(args.memory_mb), *RUNS[name]]  # fmt: skip
        seconds, peak, _ = measure(command, env)
        summary = json.loads((out / "summary.json").read_text())["backtest"]
        patients, orders = summary["patients"], summary["orders_replayed"]
        print(
            f"{name:7} patients={patients} orders={orders} wall={seconds:.1f}s "
            f"patients/s={patients / seconds:.0f} orders/s={orders / seconds:.0f} "
            f"peak_rss={peak / 2**20:.0f}MiB (memory-mb {args.memory_mb})"
        )


if __name__ == "__main__":
    main()
