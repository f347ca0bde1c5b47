"""The backtest's outputs in --out: cards.parquet, orders.parquet, problems.parquet and
summary.json (the governance report's JSON shape, `"source": "backtest"`, with the
backtest-only figures added under `"backtest"`)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cds_service.population.replay import SIGN_SERVICE, VIEW_SERVICE, PatientResult
from cds_service.population.source import Problem

MAX_LISTED_PROBLEMS = 200  # problems listed in summary.json (all are in problems.parquet)


def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    common = [
        ("patient_key", pa.string()),
        ("prescriber_key", pa.string()),
        ("order_key", pa.string()),
        ("order_date", pa.date32()),
        ("month", pa.string()),
        ("mme_per_day", pa.float64()),
    ]
    return {
        "orders": pa.schema(
            [
                *common,
                ("drug_classes", pa.list_(pa.string())),
                ("opioid", pa.bool_()),
                ("benzodiazepine", pa.bool_()),
                ("status", pa.int32()),
                ("cards", pa.int32()),
                ("rules_fired", pa.list_(pa.string())),
                ("exclusions", pa.list_(pa.string())),
                ("problem", pa.string()),
            ]
        ),
        "cards": pa.schema(
            [
                *common,
                ("hook", pa.string()),
                ("rank", pa.int32()),
                ("rule", pa.string()),
                ("variant", pa.string()),
                ("indicator", pa.string()),
                ("silent", pa.bool_()),
                ("covered_rules", pa.list_(pa.string())),
                ("suggestions", pa.list_(pa.string())),
            ]
        ),
        "problems": pa.schema(
            [("file", pa.string()), ("line", pa.int64()), ("reason", pa.string())]
        ),
    }


class TableWriter:
    """Parquet files written in row groups as results stream in."""

    def __init__(self, out: Path) -> None:
        import pyarrow.parquet as pq

        self.schemas = _schemas()
        self.writers = {
            name: pq.ParquetWriter(out / f"{name}.parquet", schema)
            for name, schema in self.schemas.items()
            if name != "problems"
        }
        self.out = out
        self.buffers: dict[str, list[dict[str, Any]]] = {"orders": [], "cards": []}

    def add(self, result: PatientResult) -> None:
        self.buffers["orders"] += result.orders
        self.buffers["cards"] += result.cards
        if len(self.buffers["orders"]) + len(self.buffers["cards"]) >= 20_000:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        for name, rows in self.buffers.items():
            if rows:
                table = pa.Table.from_pylist(rows, schema=self.schemas[name])
                self.writers[name].write_table(table)
                rows.clear()

    def close(self, problems: Sequence[Problem]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        for writer in self.writers.values():
            writer.close()
        rows = [{"file": p.file, "line": p.line, "reason": p.reason} for p in problems]
        pq.write_table(
            pa.Table.from_pylist(rows, schema=self.schemas["problems"]),
            self.out / "problems.parquet",
        )


class Figures:
    """The backtest-only figures, accumulated as results stream in (bounded: counters by
    rule and month, and sets of pseudonymous keys)."""

    def __init__(self) -> None:
        self.orders = 0
        self.opioid_orders: Counter[str] = Counter()  # by month
        self.orders_by_month: Counter[str] = Counter()
        self.firings: dict[str, Counter[str]] = defaultdict(Counter)  # rule -> month -> cards
        self.rule_patients: dict[str, set[str]] = defaultdict(set)
        self.rule_prescribers: dict[str, set[str]] = defaultdict(set)
        self.patients: set[str] = set()
        self.prescribers: set[str] = set()
        self.patients_with_orders: set[str] = set()
        self.excluded: dict[str, Counter[str]] = defaultdict(Counter)  # rule -> exclusion
        self.excluded_orders: Counter[str] = Counter()  # rule -> orders excluded
        self.unreadable: Counter[str] = Counter()
        self.view_cards: Counter[str] = Counter()
        self.first: dt.date | None = None
        self.last: dt.date | None = None

    def add(self, result: PatientResult) -> None:
        for order in result.orders:
            self.orders += 1
            day: dt.date = order["order_date"]
            self.first = min(self.first or day, day)
            self.last = max(self.last or day, day)
            self.orders_by_month[order["month"]] += 1
            if order["opioid"]:
                self.opioid_orders[order["month"]] += 1
            self.patients_with_orders.add(order["patient_key"])
            rules = set()
            for item in order["exclusions"]:
                rule, _, reason = item.partition(":")
                self.excluded[rule][reason] += 1
                rules.add(rule)
            for rule in rules:
                self.excluded_orders[rule] += 1
        for card in result.cards:
            if card["hook"] != "order-sign":
                self.view_cards[card["rule"]] += 1
                continue
            for rule in (card["rule"], *card["covered_rules"]):
                self.firings[rule][card["month"]] += 1
                self.rule_patients[rule].add(card["patient_key"])
                if card["prescriber_key"]:
                    self.rule_prescribers[rule].add(card["prescriber_key"])
            self.patients.add(card["patient_key"])
            if card["prescriber_key"]:
                self.prescribers.add(card["prescriber_key"])
        self.unreadable.update(result.unreadable)
        for day in result.views:  # the period covers the chart replays too
            self.first = min(self.first or day, day)
            self.last = max(self.last or day, day)

    def as_json(self, rules: Sequence[str]) -> dict[str, Any]:
        months = sorted(self.orders_by_month)
        per_rule = []
        for rule in list(dict.fromkeys([*rules, *sorted(self.firings)])):
            firings = self.firings.get(rule, Counter())
            total = sum(firings.values())
            opioid = sum(self.opioid_orders.values())
            excluded = self.excluded_orders.get(rule, 0)
            per_rule.append(
                {
                    "rule": rule,
                    "cards": total,
                    "per_100_opioid_orders": round(100 * total / opioid, 2) if opioid else None,
                    "patients": len(self.rule_patients.get(rule, ())),
                    "prescribers": len(self.rule_prescribers.get(rule, ())),
                    "excluded_orders": excluded,
                    "excluded_share": round(excluded / self.orders, 4) if self.orders else None,
                    "exclusions": dict(sorted(self.excluded.get(rule, Counter()).items())),
                    "months": [
                        {
                            "month": month,
                            "cards": firings.get(month, 0),
                            "opioid_orders": self.opioid_orders.get(month, 0),
                            "per_100_opioid_orders": (
                                round(100 * firings.get(month, 0) / self.opioid_orders[month], 2)
                                if self.opioid_orders.get(month)
                                else None
                            ),
                        }
                        for month in months
                    ],
                }
            )
        return {
            "orders_replayed": self.orders,
            "opioid_orders": sum(self.opioid_orders.values()),
            "patients_with_orders": len(self.patients_with_orders),
            "patients_with_cards": len(self.patients),
            "prescribers_with_cards": len(self.prescribers),
            "rules": per_rule,
            "patient_view_cards": dict(sorted(self.view_cards.items())),
            "unusable_replays": dict(sorted(self.unreadable.items())),
        }


def problem_summary(problems: Sequence[Problem]) -> dict[str, Any]:
    by_file: dict[str, Counter[str]] = defaultdict(Counter)
    for problem in problems:
        by_file[problem.file][problem.reason] += 1
    return {
        "count": len(problems),
        "by_reason": dict(sorted(Counter(p.reason for p in problems).items())),
        "by_file": {f: dict(sorted(c.items())) for f, c in sorted(by_file.items())},
        "listed": [
            {"file": p.file, "line": p.line, "reason": p.reason}
            for p in problems[:MAX_LISTED_PROBLEMS]
        ],
    }


class ReportLog:
    """The governance report (analytics/report.py) over the would-fire cards: each replay is
    written into a throw-away SQLite card log as one hook call on its day, with its cards, as
    the live service logs them, and the report is built from that log, so the shape is the
    live report's."""

    def __init__(self, folder: Path) -> None:
        from cds_service.config import Config
        from cds_service.store import open_store

        config = Config().with_overrides(
            {
                "database_url": f"sqlite:///{folder / 'report.sqlite3'}",
                "pseudonym_key": secrets.token_hex(32),
                "log_level": "WARNING",
            }
        )
        self.store = open_store(config)
        self.entries: list[Any] = []

    def add(self, result: PatientResult) -> None:
        from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, OrderCall

        by_call: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
        for card in result.cards:
            by_call[(card["hook"], card["order_key"] or card["order_date"])].append(card)
        calls: list[tuple[str, Any, dt.date, int, dict[str, Any] | None]] = [
            ("order-sign", o["order_key"], o["order_date"], o["status"], o) for o in result.orders
        ]
        calls += [("patient-view", day, day, 200, None) for day in result.views]
        for hook, key, day, status, order in calls:
            if status != 200:
                continue
            service = SIGN_SERVICE if hook == "order-sign" else VIEW_SERVICE
            at = dt.datetime.combine(day, dt.time(12), dt.UTC)
            # each replayed order is one ordering decision (the per-100 denominator)
            order_call = (
                OrderCall(
                    at,
                    service,
                    hook,
                    str(key),
                    bool(order["opioid"]),
                    str(key),
                    (str(key),),
                    (str(key),),
                    tuple(order["drug_classes"]),
                    order["prescriber_key"],
                )
                if order is not None
                else None
            )
            cards = tuple(
                IssuedCard(
                    card_uuid=str(uuid.uuid4()),
                    rule_id=card["rule"],
                    service_id=service,
                    hook=hook,
                    indicator=card["indicator"],
                    issued_at=at,
                    patient_key=card["patient_key"],
                    suggestions=(),
                    silent=card["silent"],
                    covers=tuple(card["covered_rules"]),
                    decision_key=order_call.decision_key if order_call else None,
                    prescriber_key=card.get("prescriber_key"),
                )
                for card in by_call.get((hook, key), [])
            )
            with_cards = any(not c.silent for c in cards)
            self.entries.append(CardLogEntry(HookCall(day, service, with_cards, order_call), cards))
        if len(self.entries) >= 20_000:  # fewer, larger transactions: calls aggregate per day
            self.flush()

    def flush(self) -> None:
        if self.entries:
            self.store.write_card_log(self.entries)
            self.entries.clear()

    def report(
        self, rules: Iterable[Any], settings_rules: Any, first: dt.date, last: dt.date
    ) -> dict[str, Any]:
        from cds_service.analytics import report as rep

        self.flush()
        period = rep.Period(first, max(last, first))
        return rep.build_report(self.store, rep.context_for(rules, settings_rules), period)

    def close(self) -> None:
        self.store.close()


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
