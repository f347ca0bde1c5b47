"""`cds-service backtest`: read the export, replay, write the tables and the summary."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cds_service.config import Config, default_data_dir
from cds_service.population.output import (
    Figures,
    ReportLog,
    TableWriter,
    problem_summary,
    write_summary,
)
from cds_service.population.replay import Options
from cds_service.population.worker import EngineSpec, replayer


class BacktestError(ValueError):
    """The backtest cannot start (bad arguments, missing engine); the message says why."""


@dataclass
class Run:
    source: Path
    out: Path
    options: Options = field(default_factory=Options)
    rules: tuple[str, ...] = ()
    engine: str = "local"
    workers: int = 1
    memory_mb: int = 512
    spark_master: str = ""


def default_out(config: Config, now: dt.datetime | None = None) -> Path:
    """backtests/<UTC timestamp> under the store's data directory (/analytics looks there)."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(config.data_dir or default_data_dir()) / "backtests" / stamp


def pseudonym_key(config: Config) -> bytes:
    """The store's pseudonym key ring (store/pseudonym.py), so backtest and live keys of the
    same patient on the same FHIR server agree: its keys oldest first, joined by newlines
    (a single key is the key itself; population/replay.py splits them)."""
    from cds_service.store.pseudonym import generated_ring, read_key_ring

    if config.pseudonym_key:
        previous = [k.strip().encode() for k in config.pseudonym_previous_keys.split(",")]
        return b"\n".join([*(k for k in previous if k), config.pseudonym_key.encode()])
    if config.pseudonym_key_file:
        return b"\n".join(read_key_ring(Path(config.pseudonym_key_file)))
    directory = Path(config.data_dir or default_data_dir())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return b"\n".join(generated_ring(directory))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("CDS_")}


def execute(run: Run, config: Config, stream: TextIO | None = None) -> dict[str, Any]:
    """Run the backtest; the engines it builds log at WARNING, and the caller's logging
    levels are restored afterwards (an in-process run must not quieten the caller)."""
    loggers = [logging.getLogger(name) for name in ("cds_service", "cds_service.hooks")]
    levels = [logger.level for logger in loggers]
    try:
        return _execute(run, config, stream)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _execute(run: Run, config: Config, stream: TextIO | None = None) -> dict[str, Any]:
    """Run the backtest; returns the summary (also written to run.out/summary.json)."""
    if not run.source.exists():
        raise BacktestError(f"{run.source}: no such file or folder")
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise BacktestError(
            "the backtest needs the [backtest] extra: pip install 'opioid-lbp-cds[backtest]'"
        ) from None
    spec = EngineSpec(pseudonym_key(config), run.options, run.rules, _env())
    main = replayer(spec)  # fails early on a bad rule or settings file
    known = {r.id for r in main.engine.rules}
    unknown = sorted(set(run.rules) - known)
    if unknown:
        raise BacktestError(f"--rules: unknown rule {', '.join(unknown)}")
    run.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cds-backtest-") as folder:
        work = Path(folder)
        close: Any
        if run.engine == "spark":
            from cds_service.population.spark import run_spark

            ingested, results, close = run_spark(run.source, spec, run.spark_master, run.workers)
        else:
            from cds_service.population.local import run_local

            ingested, results, con = run_local(
                run.source, work, spec, run.workers, run.memory_mb, stream
            )
            close = con.close
        log = ReportLog(work)
        figures = Figures()
        tables = TableWriter(run.out)
        try:
            for result in results:
                tables.add(result)
                figures.add(result)
                log.add(result)
            problems = sorted(ingested.problems, key=lambda p: (p.file, p.line, p.reason))
            tables.close(problems)
            first = figures.first or run.options.since or dt.datetime.now(dt.UTC).date()
            last = figures.last or run.options.until or first
            if run.options.since:
                first = min(first, run.options.since)
            if run.options.until:
                last = max(last, run.options.until)
            report = log.report(main.engine.rules, main.settings.rules, first, last)
        finally:
            log.close()
            close()
    seconds = time.monotonic() - started
    summary = {
        **report,
        "source": "backtest",
        "backtest": {
            "export": run.source.name,
            "engine": run.engine,
            "since": run.options.since.isoformat() if run.options.since else None,
            "until": run.options.until.isoformat() if run.options.until else None,
            "patients": ingested.patients,
            "resources_read": ingested.resources,
            "skipped_types": dict(sorted(ingested.skipped.items())),
            "problems": problem_summary(problems),
            "seconds": round(seconds, 2),
            **figures.as_json([r.id for r in main.engine.rules_for("order-sign")]),
        },
    }
    write_summary(run.out, summary)
    return summary


def print_summary(summary: dict[str, Any], out: Path, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    bt = summary["backtest"]
    lines = [
        (
            f"Backtest of {bt['export']} ({bt['engine']}): {bt['patients']} patients, "
            f"{bt['orders_replayed']} orders replayed ({bt['opioid_orders']} opioid), "
            f"{summary['since']} to {summary['until']}, {bt['seconds']} s"
        ),
        "",
        (
            f"{'rule':<34} {'cards':>7} {'/100 opioid':>11} {'patients':>9} "
            f"{'prescribers':>11} {'excluded':>9}"
        ),
    ]
    for row in bt["rules"]:
        per100 = (
            "-" if row["per_100_opioid_orders"] is None else f"{row['per_100_opioid_orders']:g}"
        )
        share = "-" if row["excluded_share"] is None else f"{100 * row['excluded_share']:.1f}%"
        lines.append(
            f"{row['rule']:<34} {row['cards']:>7} {per100:>11} {row['patients']:>9} "
            f"{row['prescribers']:>11} {share:>9}"
        )
    problems = bt["problems"]
    lines.append("")
    if problems["count"]:
        lines.append(f"{problems['count']} lines or entries could not be used:")
        for file, reasons in problems["by_file"].items():
            text = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
            lines.append(f"  {file}: {text}")
        for item in problems["listed"][:10]:
            lines.append(f"  {item['file']}:{item['line']}: {item['reason']}")
    else:
        lines.append("Every line was read.")
    lines.append(f"Tables and summary.json in {out}")
    stream.write("\n".join(lines) + "\n")
