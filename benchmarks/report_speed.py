"""How long the governance report and the /analytics page take on a large card log.

    python benchmarks/report_speed.py [--cards 100000] [--database-url postgresql://...]

Seeds a store (a fresh embedded SQLite file, or --database-url at the current schema) with
`--cards` cards spread over a year on three services (covers, silent cards and feedback as in
tests/analytics_seed.py, scaled up; order-hook cards and calls carry decision keys, about
half of the decisions seen on both order-select and order-sign, and one of 200 prescriber
keys), then times `build_report` for 12 weeks and for a year,
and GET /analytics (query + tables + SVG charts + HTML) for 12 weeks, each the median of 5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from analytics_seed import HOOKS, rules_by_service

from cds_service import create_app
from cds_service.analytics.report import Period, build_report
from cds_service.config import Config
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, OrderCall

END = dt.date(2026, 11, 22)
RULES_BY_SERVICE = rules_by_service()


def _order(at: dt.datetime, service: str, key: str) -> OrderCall | None:
    """The order call of an order-hook call (None on patient-view)."""
    if HOOKS[service] == "patient-view":
        return None
    return OrderCall(at, service, HOOKS[service], key, True, "e" + key, (key,), (key,), (), None)


def seed(store: object, cards: int) -> None:
    rng = random.Random(1)
    services = list(RULES_BY_SERVICE)
    batch: list[CardLogEntry] = []
    feedback = []
    for index in range(cards):
        service = rng.choice(services)
        rule = rng.choice(RULES_BY_SERVICE[service])
        day = END - dt.timedelta(days=rng.randint(0, 364))
        at = dt.datetime.combine(day, dt.time(rng.randint(0, 23)), dt.UTC)
        uuid = f"c{index:08d}"
        card = IssuedCard(
            uuid,
            rule,
            service,
            HOOKS[service],
            "warning",
            at,
            f"{rng.randint(0, 20000):064x}",
            ({"uuid": uuid + "s", "key": "naloxone", "label": "Co-prescribe"},),
            silent=rule == "opioid-safety-summary",
            covers=("first-line-therapy-not-tried",)
            if rule == "opioid-start-chronic-lbp" and rng.random() < 0.4
            else (),
            decision_key=f"d{index // 2:08d}" if HOOKS[service] != "patient-view" else None,
            variant="new-start",
            prescriber_key=f"p{rng.randint(0, 199):03d}",
            knowledge_version="2026.11",
            settings_digest="a" * 16,
        )

        for extra in range(3):
            batch.append(
                CardLogEntry(
                    HookCall(day, service, False, _order(at, service, f"x{index}-{extra}")), ()
                )
            )
        batch.append(
            CardLogEntry(
                HookCall(day, service, True, _order(at, service, card.decision_key or "")), (card,)
            )
        )
        roll = rng.random()
        if roll < 0.3:
            feedback.append(
                {
                    "card": uuid,
                    "outcome": "accepted",
                    "outcomeTimestamp": "t",
                    "acceptedSuggestions": [uuid + "s"],
                    "overrideReason": "",
                }
            )
        elif roll < 0.6:
            feedback.append(
                {
                    "card": uuid,
                    "outcome": "overridden",
                    "outcomeTimestamp": "t",
                    "acceptedSuggestions": [],
                    "overrideReason": rng.choice(["refractory", "palliative", ""]),
                }
            )
        if len(batch) >= 2000:
            store.write_card_log(batch)  # type: ignore[attr-defined]
            batch = []
    store.write_card_log(batch)  # type: ignore[attr-defined]
    for start in range(0, len(feedback), 1000):
        store.add_feedback("opioid-lbp-order-sign", feedback[start : start + 1000])  # type: ignore[attr-defined]


def median_ms(action: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="cds-report-bench-")
    config = Config(
        data_dir=folder,
        database_url=args.database_url,
        log_level="WARNING",
        pseudonym_key="benchmark-pseudonym-key-0123456789",
    )
    app = create_app(config)
    store = app.extensions["cds_store"]
    started = time.perf_counter()
    seed(store, args.cards)
    print(
        f"seeded {args.cards} cards (+{3 * args.cards} calls without cards) on "
        f"{store.dialect} in {time.perf_counter() - started:.1f} s"
    )
    context = app.extensions["cds_report_context"]
    twelve = Period(END - dt.timedelta(days=83), END)
    year = Period(END - dt.timedelta(days=364), END)
    print(f"report, 12 weeks: {median_ms(lambda: build_report(store, context, twelve)):.0f} ms")
    print(f"report, 1 year:   {median_ms(lambda: build_report(store, context, year)):.0f} ms")
    client = app.test_client()
    url = f"/analytics?since={twelve.since}&until={twelve.until}"
    assert client.get(url).status_code == 200
    print(f"GET /analytics, 12 weeks: {median_ms(lambda: client.get(url)):.0f} ms")
    app.extensions["cds_card_log"].close()
    store.close()


if __name__ == "__main__":
    main()
