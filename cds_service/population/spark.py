"""The Spark engine: read the export with Spark, key every resource by its patient (the same
readers as the local engine: source.py), group by patient, and replay each partition's
patients with the same engine (one Replayer per Python worker, built once; no per-row UDF).

Plain NDJSON is read with `textFile` (split across tasks, any Hadoop path); .ndjson.gz and
Bundle files are read one file per task by Python (gzip cannot be split anyway, and a
truncated gzip then becomes a reported problem instead of a failed job), so those paths must
be visible to the executors (a shared or FUSE-mounted folder such as /dbfs or /Volumes).
Results come back to the driver in patient order and are written by the same writers as the
local engine's, so both give identical tables.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cds_service.population.local import Ingested
from cds_service.population.replay import PatientResult
from cds_service.population.source import (
    UNKNOWN_PATIENT,
    Item,
    Problem,
    export_files,
    parse_line,
    read_file,
    relative_name,
)
from cds_service.population.worker import EngineSpec, replayer

Row = tuple[str, int, str, str]  # file, line, fullUrl, JSON text


def session(master: str = "", workers: int = 0) -> tuple[Any, bool]:
    """(the active SparkSession or a new one, whether this call created it). Without
    --spark-master: the spark-submit's master when launched by spark-submit, else local[*]."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and not master:
        return active, False
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName("cds-backtest")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        builder = builder.master(f"local[{workers}]" if workers > 0 else "local[*]")
    return builder.getOrCreate(), True


def _read_whole(path: str, name: str) -> Iterator[Item | Problem]:
    yield from read_file(Path(path), name)


def _items(sc: Any, source: Path) -> Any:
    rdds = []
    for path in export_files(source):
        name = relative_name(path, source)
        if path.name.endswith(".ndjson"):
            lines = sc.textFile(path.resolve().as_uri()).zipWithIndex()
            rdds.append(
                lines.filter(lambda pair: bool(pair[0].strip())).map(
                    lambda pair, name=name: parse_line(name, pair[1] + 1, pair[0])
                )
            )
        else:
            rdds.append(sc.parallelize([(str(path), name)], 1).flatMap(lambda pn: _read_whole(*pn)))
    partitions = max(sc.defaultParallelism, 1)
    return sc.union(rdds).coalesce(partitions) if rdds else sc.parallelize([], 1)


def _is_resource(item: Any) -> bool:
    return isinstance(item, Item) and item.kind == "resource"


def _unknown(entry: tuple[str, tuple[Iterable[Any], Iterable[Any]]]) -> list[Problem]:
    _, (rows, _) = entry
    return [Problem(row[0], row[1], UNKNOWN_PATIENT) for tag, row in rows if tag == "r"]


def _tally(items: Iterable[Any]) -> Iterator[tuple[list[Problem], Counter[str], int]]:
    """One partition's problems, skipped types and usable resources (one job for all)."""
    problems: list[Problem] = []
    skipped: Counter[str] = Counter()
    resources = 0
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
        elif item.kind == "skipped":
            skipped[item.key] += 1
        else:
            resources += 1
    yield problems, skipped, resources


def _patients_and_unknown(
    groups: Iterable[tuple[str, tuple[Iterable[Any], Iterable[Any]]]],
) -> Iterator[tuple[int, list[Problem]]]:
    """One partition's count of known patients and its rows naming an unknown patient."""
    known = 0
    unknown: list[Problem] = []
    for entry in groups:
        if list(entry[1][1]):
            known += 1
        else:
            unknown += _unknown(entry)
    yield known, unknown


def _group(entry: tuple[str, tuple[Iterable[Any], Iterable[Any]]]) -> tuple[str, list[Row]]:
    patient, (rows, _) = entry
    return patient, sorted((row for _, row in rows), key=lambda r: (r[0], r[1]))


def _evaluate(spec: EngineSpec, groups: Iterable[tuple[str, list[Row]]]) -> Iterator[PatientResult]:
    engine = replayer(spec)  # once per Python worker process
    for patient, rows in groups:
        yield engine.patient(patient, [(url or "", text) for _, _, url, text in rows])


def run_spark(
    source: Path, spec: EngineSpec, master: str = "", workers: int = 0
) -> tuple[Ingested, Iterator[PatientResult], Any]:
    spark, created = session(master, workers)
    sc = spark.sparkContext
    if created:
        sc.setLogLevel("ERROR")
    partitions = max(sc.defaultParallelism, 1)
    items = _items(sc, source).persist()
    problems: list[Problem] = []
    skipped: Counter[str] = Counter()
    resources = 0
    for part_problems, part_skipped, part_resources in items.mapPartitions(_tally).collect():
        problems += part_problems
        skipped.update(part_skipped)
        resources += part_resources
    used = items.filter(lambda i: isinstance(i, Item) and i.kind != "skipped")
    patients = (
        used.filter(lambda i: _is_resource(i) and i.rtype == "Patient")
        .map(lambda i: (i.key, None))
        .distinct(partitions)
    )
    rows = used.filter(_is_resource).map(
        lambda i: (i.key, ("r", (i.file, i.line, i.full_url, i.text)))
    )
    meds = used.filter(lambda i: i.kind == "medication").map(
        lambda i: (i.key, (i.file, i.line, i.full_url, i.text))
    )
    refs = (
        used.filter(lambda i: _is_resource(i) and bool(i.medication_refs))
        .flatMap(lambda i: [(med, i.key) for med in i.medication_refs])
        .distinct(partitions)
    )
    med_rows = refs.join(meds, partitions).map(lambda kv: (kv[1][0], ("m", kv[1][1])))
    grouped = rows.union(med_rows).cogroup(patients, numPartitions=partitions).persist()
    count = 0
    for known, unknown in grouped.mapPartitions(_patients_and_unknown).collect():
        count += known
        problems += unknown
    results = (
        grouped.filter(lambda kv: bool(list(kv[1][1])))
        .map(_group)
        .sortByKey(numPartitions=partitions)
        .mapPartitions(lambda groups: _evaluate(spec, groups))
    )
    ingested = Ingested(count, resources, dict(skipped), problems)

    def close() -> None:
        grouped.unpersist()
        items.unpersist()
        if created:
            spark.stop()

    return ingested, results.toLocalIterator(prefetchPartitions=True), close
