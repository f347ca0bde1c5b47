"""The local engine: stream the export into DuckDB (on disk, its memory capped by
--memory-mb, spilling to its temp folder past that), read it back ordered by patient, and
replay each patient's group on a process pool, a batch of patients per task.

Memory: DuckDB's memory limit, plus per worker one engine (the service's knowledge tables)
and the batches in flight (at most 2 x workers batches of BATCH_PATIENTS patients). Neither
the population nor any file is ever held whole in memory (a Bundle file is: one patient).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cds_service.population.replay import PatientResult
from cds_service.population.source import (
    UNKNOWN_PATIENT,
    Item,
    Problem,
    export_files,
    read_file,
    relative_name,
)
from cds_service.population.worker import EngineSpec, evaluate_groups

BATCH_ROWS = 5_000  # rows appended to DuckDB at a time
BATCH_PATIENTS = 64  # patients per pool task
Group = tuple[str, list[tuple[str, str]]]


@dataclass
class Ingested:
    patients: int = 0
    resources: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # unused resource types, by type
    problems: list[Problem] = field(default_factory=list)


class _Tables:
    """Row buffers appended to DuckDB in batches (as Arrow tables)."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.buffers: dict[str, list[tuple[Any, ...]]] = {
            "res": [],
            "meds": [],
            "medrefs": [],
            "pats": [],
        }
        self.columns = {
            "res": ("patient", "file", "line", "full_url", "json"),
            "meds": ("med", "file", "line", "full_url", "json"),
            "medrefs": ("med", "patient"),
            "pats": ("patient",),
        }

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        buffer = self.buffers[table]
        buffer.append(row)
        if len(buffer) >= BATCH_ROWS:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        import pyarrow as pa

        for name in [table] if table else list(self.buffers):
            rows = self.buffers[name]
            if not rows:
                continue
            columns = self.columns[name]
            arrow = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
            self.con.register("batch_rows", arrow)
            self.con.execute(f"INSERT INTO {name} SELECT * FROM batch_rows")  # noqa: S608
            self.con.unregister("batch_rows")
            rows.clear()


_ROW = "file VARCHAR, line BIGINT, full_url VARCHAR, json VARCHAR"


def connect(work_dir: Path, memory_mb: int) -> Any:
    import duckdb

    work_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(work_dir / "group.duckdb"))
    con.execute(f"SET memory_limit='{int(memory_mb)}MB'")
    con.execute(f"SET temp_directory='{work_dir / 'spill'}'")
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET threads=2")
    for statement in (
        f"CREATE TABLE res (patient VARCHAR, {_ROW})",
        f"CREATE TABLE meds (med VARCHAR, {_ROW})",
        "CREATE TABLE medrefs (med VARCHAR, patient VARCHAR)",
        "CREATE TABLE pats (patient VARCHAR)",
    ):
        con.execute(statement)
    return con


def ingest(con: Any, source: Path) -> Ingested:
    """Every line of every file into DuckDB, keyed by patient; problems counted."""
    tables = _Tables(con)
    out = Ingested()
    for path in export_files(source):
        name = relative_name(path, source)
        for got in read_file(path, name):
            if isinstance(got, Problem):
                out.problems.append(got)
                continue
            _add(tables, got, out)
    tables.flush()
    out.patients = int(con.execute("SELECT count(DISTINCT patient) FROM pats").fetchone()[0])
    rows = con.execute(
        "SELECT file, line FROM res WHERE patient NOT IN (SELECT patient FROM pats) "
        "ORDER BY file, line"
    ).fetchall()
    out.problems += [Problem(file, int(line), UNKNOWN_PATIENT) for file, line in rows]
    return out


def _add(tables: _Tables, item: Item, out: Ingested) -> None:
    if item.kind == "skipped":
        out.skipped[item.key] = out.skipped.get(item.key, 0) + 1
        return
    out.resources += 1
    if item.kind == "medication":
        tables.add("meds", (item.key, item.file, item.line, item.full_url, item.text))
        return
    tables.add("res", (item.key, item.file, item.line, item.full_url, item.text))
    if item.rtype == "Patient":
        tables.add("pats", (item.key,))
    for med in item.medication_refs:
        tables.add("medrefs", (med, item.key))


GROUPS_SQL = """
WITH known AS (SELECT DISTINCT patient FROM pats),
refs AS (SELECT DISTINCT r.med, r.patient FROM medrefs r SEMI JOIN known k ON r.patient = k.patient)
SELECT patient, file, line, full_url, json FROM (
    SELECT r.patient, r.file, r.line, r.full_url, r.json FROM res r
    SEMI JOIN known k ON r.patient = k.patient
    UNION ALL
    SELECT refs.patient, m.file, m.line, m.full_url, m.json
    FROM refs JOIN meds m ON m.med = refs.med
)
ORDER BY patient, file, line
"""


def groups(con: Any) -> Iterator[Group]:
    """(patient id, [(fullUrl, resource JSON)]) in patient id order, rows in file/line order."""
    reader = con.sql(GROUPS_SQL).to_arrow_reader(BATCH_ROWS)
    current: str | None = None
    rows: list[tuple[str, str]] = []
    for batch in reader:
        data = batch.to_pydict()
        for patient, url, text in zip(data["patient"], data["full_url"], data["json"], strict=True):
            if patient != current:
                if current is not None:
                    yield current, rows
                current, rows = patient, []
            rows.append((url or "", text))
    if current is not None:
        yield current, rows


def _batches(source: Iterator[Group], size: int) -> Iterator[list[Group]]:
    batch: list[Group] = []
    for group in source:
        batch.append(group)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Progress:
    """patients/s and ETA on a terminal (stderr); silent otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.done = 0
        self._shown = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if not self.enabled or (now - self._shown < 0.2 and self.done < self.total):
            return
        self._shown = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else 0.0
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} patients "
            f"{rate:,.0f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def evaluate(
    con: Any, spec: EngineSpec, workers: int, total: int, stream: TextIO | None = None
) -> Iterator[PatientResult]:
    """Each patient's result, in patient id order."""
    progress = Progress(total, stream)
    try:
        if workers <= 1:
            for batch in _batches(groups(con), BATCH_PATIENTS):
                yield from evaluate_groups(spec, batch)
                progress.advance(len(batch))
            return
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no DuckDB handle or lock carried over
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending: list[tuple[Future[list[PatientResult]], int]] = []
            for batch in _batches(groups(con), BATCH_PATIENTS):
                pending.append((pool.submit(evaluate_groups, spec, batch), len(batch)))
                while len(pending) >= 2 * workers:
                    future, count = pending.pop(0)
                    yield from future.result()
                    progress.advance(count)
            for future, count in pending:
                yield from future.result()
                progress.advance(count)
    finally:
        progress.finish()


def run_local(
    source: Path,
    work_dir: Path,
    spec: EngineSpec,
    workers: int,
    memory_mb: int,
    stream: TextIO | None = None,
) -> tuple[Ingested, Iterator[PatientResult], Any]:
    """(what was read, the results in patient order, the connection to close)."""
    con = connect(work_dir, memory_mb)
    ingested = ingest(con, source)
    return ingested, evaluate(con, spec, workers, ingested.patients, stream), con
