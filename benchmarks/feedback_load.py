"""Heavy feedback against a real `cds-service serve` (2 workers x 4 threads, authentication
required): 8 clients post 100-item feedback and 2 clients make hook calls (a fresh token,
so a replay claim, each) for 60 s, on the embedded SQLite store and, when a PostgreSQL
binary is installed, on PostgreSQL. After a SIGTERM (the card log flushes) it prints the
feedback throughput, every status seen, hook latency (median, p99, max) and how many of the
cards the hook calls returned are missing from the card log (must be 0).

    .venv/bin/python benchmarks/feedback_load.py [--seconds 60] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import authenticated_service, feedback_storm, postgres_bin, start_postgres

from cds_service.config import Config
from cds_service.store import migrate, open_store
from cds_service.store.engine import database_url, make_engine

KEY = "feedback-benchmark-pseudonym-key-0123456789"


def run(backend: str, url: str, seconds: float) -> None:
    home = Path(tempfile.mkdtemp(prefix="cds-feedback-bench-"))
    if url:
        engine = make_engine(database_url(Config(database_url=url)), 5.0, False)
        migrate.upgrade(engine)
        engine.dispose()
    service = authenticated_service(home, KEY, url).start()
    try:
        result = feedback_storm(service, KEY, seconds)
    finally:
        service.stop()
    store = open_store(
        Config(database_url=url, data_dir=str(home / "xdg" / "opioid-lbp-cds"), pseudonym_key=KEY)
    )
    try:
        logged = {r["card_uuid"] for r in store.issued_cards()}
        stored = len(store.feedback_items())
    finally:
        store.close()
    missing = len(result["cards"] - logged)
    print(
        f"{backend}, {seconds:.0f} s: feedback {len(result['feedback_statuses'])} posts "
        f"{dict(Counter(result['feedback_statuses']))}, {result['feedback_items']} items "
        f"({result['feedback_items'] / seconds:.0f}/s), {stored} stored; hook calls "
        f"{dict(Counter(result['hook_statuses']))}, median {result['hook_p50'] * 1000:.0f} ms, "
        f"p99 {result['hook_p99'] * 1000:.0f} ms, max {result['hook_max'] * 1000:.0f} ms; "
        f"cards returned {len(result['cards'])}, missing from the card log {missing}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    run("sqlite", "", args.seconds)
    if not args.sqlite_only and postgres_bin() is not None:
        server = start_postgres()
        try:
            run("postgresql", server.new_database("bench"), args.seconds)
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
