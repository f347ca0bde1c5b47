"""The Spark engine (local[2]) writes the same tables and figures as the local engine, on the
sample and on a generated 500-patient export with malformed lines. One JVM for the module:
it is slow to start."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from cds_service.config import Config
from cds_service.population.generate import generate
from cds_service.population.run import Run, execute

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("duckdb")
if os.environ.get("CI"):
    import pyspark  # noqa: F401 - CI installs the [spark] extra and a Java runtime

    assert shutil.which("java"), "CI must install a Java runtime for the Spark tests"
else:
    pytest.importorskip("pyspark")
    if not shutil.which("java"):
        pytest.skip("no Java runtime", allow_module_level=True)

SAMPLE = ROOT / "fixtures" / "bulk" / "sample"
PATIENTS = 500  # hundreds per partition of local[2]: what the identity needs; 2,000 proved no more


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from cds_service.population.spark import session

    created, _ = session("local[2]")
    yield created
    created.stop()


def _same(local: Path, spark_out: Path) -> None:
    for name in ("orders", "cards", "problems"):
        a = pq.read_table(local / f"{name}.parquet")
        b = pq.read_table(spark_out / f"{name}.parquet")
        assert a.num_rows == b.num_rows, name
        assert a.equals(b), name
    first, second = (json.loads((d / "summary.json").read_text()) for d in (local, spark_out))
    for summary in (first, second):
        summary["backtest"].pop("seconds")
        summary["backtest"].pop("engine")
    assert first == second


def test_spark_and_local_engines_write_identical_output(spark: Any, tmp_path: Path) -> None:
    """Identical Parquet tables and summary from both engines on the sample and on 500
    generated patients (with a non-JSON line and a truncated gzip reported alike)."""
    config = Config().with_overrides({"pseudonym_key": "s" * 32, "data_dir": str(tmp_path)})
    export = tmp_path / "export"
    generate(export, PATIENTS, 7, gz=True)
    with gzip.open(export / "Condition.ndjson.gz", "at") as handle:
        handle.write("{broken\n")
    whole = (export / "Procedure.ndjson.gz").read_bytes()
    (export / "Procedure.ndjson.gz").write_bytes(whole[: len(whole) - 40])
    for source, name in ((SAMPLE, "sample"), (export, "generated")):
        local, remote = tmp_path / f"{name}-local", tmp_path / f"{name}-spark"
        execute(Run(source, local, workers=1), config)
        execute(Run(source, remote, engine="spark"), config)
        _same(local, remote)
    summary = json.loads((tmp_path / "generated-spark" / "summary.json").read_text())
    assert summary["backtest"]["patients"] == PATIENTS
    reasons = summary["backtest"]["problems"]["by_reason"]
    assert reasons["not-json"] == 1 and reasons["truncated-or-corrupt-gzip"] == 1
