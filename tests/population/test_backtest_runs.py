"""`cds-service backtest`: the command on the sample, its outputs, bad input reported with
file and line without stopping the run, and the process pool giving the same tables."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import ROOT

from cds_service.cli import main
from cds_service.config import Config
from cds_service.population.generate import generate
from cds_service.population.run import Run, execute

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("duckdb")

SAMPLE = ROOT / "fixtures" / "bulk" / "sample"
KEY = "k" * 32


def _config(tmp_path: Path) -> Config:
    return Config().with_overrides({"pseudonym_key": KEY, "data_dir": str(tmp_path / "data")})


def test_command_on_the_sample_prints_the_summary_and_writes_the_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-rule summary is printed; the Parquet tables and a summary.json in the
    governance report's shape (source "backtest") are written under the data directory."""
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDS_PSEUDONYM_KEY", KEY)
    assert main(["backtest", str(SAMPLE), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "opioid-benzodiazepine" in printed and "/100 opioid" in printed
    (out,) = (tmp_path / "data" / "backtests").iterdir()
    for name in ("cards.parquet", "orders.parquet", "problems.parquet", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "backtest"
    assert {"since", "until", "rule", "services", "rules"} <= set(summary)
    rows = {(r["rule"], r["service"]): r for r in summary["rules"]}
    benzo = rows[("opioid-benzodiazepine", "opioid-lbp-order-sign")]
    assert benzo["cards"] > 0 and benzo["calls"] > 0
    backtest = summary["backtest"]
    assert backtest["patients"] == 81 and backtest["problems"]["count"] == 0
    per_rule = {r["rule"]: r for r in backtest["rules"]}
    assert per_rule["opioid-benzodiazepine"]["per_100_opioid_orders"] > 0
    assert per_rule["opioid-start-chronic-lbp"]["exclusions"]
    orders = pq.read_table(out / "orders.parquet").to_pylist()
    assert len(orders) == backtest["orders_replayed"] > 0
    assert any(not o["cards"] for o in orders)  # orders without a card are kept too
    cards = pq.read_table(out / "cards.parquet")
    assert set(cards.column_names) >= {
        "rule", "variant", "indicator", "order_date", "patient_key", "prescriber_key",
        "mme_per_day", "covered_rules",
    }  # fmt: skip
    text = (out / "cards.parquet").read_bytes() + (out / "summary.json").read_bytes()
    assert b"p0000001" not in text  # patient ids never leave the run
    assert all(len(k) == 64 for k in cards.column("patient_key").to_pylist())


def test_bad_input_is_reported_with_file_and_line_and_the_run_completes(tmp_path: Path) -> None:
    """A non-JSON line, a resource without a patient, a reference to a patient not in the
    export, an unknown resource type and a truncated gzip are each reported by file and line;
    the good records are still replayed."""
    export = tmp_path / "export"
    generate(export, 3, 5)
    with (export / "Patient.ndjson").open("a") as handle:
        handle.write("{not json\n")
        handle.write('{"resourceType": "Spaceship", "id": "x"}\n')
    with (export / "Condition.ndjson").open("a") as handle:
        handle.write('{"resourceType": "Condition", "id": "orphan"}\n')
        handle.write(
            '{"resourceType": "Condition", "id": "stranger", '
            '"subject": {"reference": "Patient/nobody"}}\n'
        )
    whole = gzip.compress(b"".join(b'{"resourceType": "Observation"}\n' for _ in range(2000)))
    (export / "Observation.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    summary = execute(Run(export, out, workers=1), _config(tmp_path))
    problems = summary["backtest"]["problems"]
    listed = {(p["file"], p["line"], p["reason"]) for p in problems["listed"]}
    patients = sum(1 for _ in (export / "Patient.ndjson").open()) - 2
    conditions = sum(1 for _ in (export / "Condition.ndjson").open())
    assert ("Patient.ndjson", patients + 1, "not-json") in listed
    assert ("Patient.ndjson", patients + 2, "unknown-resource-type") in listed
    assert ("Condition.ndjson", conditions - 1, "no-patient-reference") in listed
    assert ("Condition.ndjson", conditions, "unknown-patient") in listed
    assert any(
        f == "Observation.ndjson.gz" and r == "truncated-or-corrupt-gzip" for f, _, r in listed
    )
    assert problems["count"] == 5
    assert summary["backtest"]["patients"] == 3
    assert summary["backtest"]["skipped_types"]["Observation"] > 0
    table = pq.read_table(out / "problems.parquet").to_pylist()
    assert len(table) == 5


def test_two_workers_write_the_same_tables_as_one(tmp_path: Path) -> None:
    """The process pool changes nothing in the output: same rows, same order."""
    one, two = tmp_path / "one", tmp_path / "two"
    execute(Run(SAMPLE, one, workers=1), _config(tmp_path))
    execute(Run(SAMPLE, two, workers=2), _config(tmp_path))
    for name in ("orders", "cards"):
        assert pq.read_table(one / f"{name}.parquet").equals(pq.read_table(two / f"{name}.parquet"))


def test_since_until_and_rules_narrow_the_replay(tmp_path: Path) -> None:
    """Only orders authored in the window are replayed, and only the named rules run."""
    out = tmp_path / "out"
    run = Run(SAMPLE, out, workers=1, rules=("opioid-benzodiazepine",))
    run.options.since = __import__("datetime").date(2025, 1, 1)
    summary = execute(run, _config(tmp_path))
    orders = pq.read_table(out / "orders.parquet").to_pylist()
    assert orders and all(o["order_date"].isoformat() >= "2025-01-01" for o in orders)
    fired = {c["rule"] for c in pq.read_table(out / "cards.parquet").to_pylist()}
    assert fired == {"opioid-benzodiazepine"}
    assert [r["rule"] for r in summary["backtest"]["rules"]] == ["opioid-benzodiazepine"]


def test_progress_shows_patients_per_second_and_eta_on_a_terminal_only() -> None:
    """On a terminal the progress line names patients done, patients/s and the ETA; piped
    output gets nothing."""
    import io

    from cds_service.population.local import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(100, stream)
        progress.advance(100)
        progress.finish()
    assert "100/100 patients" in terminal.getvalue()
    assert "/s ETA 0:00" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_patient_view_replay_adds_the_chart_review_cards(tmp_path: Path) -> None:
    """--patient-view replays the chart once a month: its cards are in the cards table under
    the patient-view hook and in the report's patient-view rows; the order-sign rows are
    unchanged."""
    plain, views = tmp_path / "plain", tmp_path / "views"
    execute(Run(SAMPLE, plain, workers=1), _config(tmp_path))
    run = Run(SAMPLE, views, workers=1)
    run.options.patient_view = True
    summary = execute(run, _config(tmp_path))
    cards = pq.read_table(views / "cards.parquet").to_pylist()
    chart = [c for c in cards if c["hook"] == "patient-view"]
    assert {c["rule"] for c in chart} >= {"opioid-safety-summary"}
    assert all(c["order_key"] is None for c in chart)
    rows = {(r["rule"], r["service"]): r for r in summary["rules"]}
    assert rows[("opioid-safety-summary", "opioid-lbp-patient-view")]["cards"] == sum(
        c["rule"] == "opioid-safety-summary" for c in chart
    )
    signed = [c for c in cards if c["hook"] == "order-sign"]
    assert signed == pq.read_table(plain / "cards.parquet").to_pylist()


def test_orders_naming_a_medication_resource_are_joined_to_it(tmp_path: Path) -> None:
    """An order whose drug is a Medication resource elsewhere in the export (referenced as
    Medication/id or urn:uuid:id) is classified by that Medication and replayed; a
    Medication nobody references is not attached to anyone."""
    export = tmp_path / "export"
    export.mkdir()
    oxycodone = {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1049621",
                "display": "Oxycodone Hydrochloride 5 MG Oral Tablet",
            }
        ]
    }
    medications = [
        {"resourceType": "Medication", "id": "oxy", "code": oxycodone},
        {"resourceType": "Medication", "id": "unused", "code": oxycodone},
    ]
    patients = [
        {"resourceType": "Patient", "id": "a", "birthDate": "1970-01-01"},
        {"resourceType": "Patient", "id": "b", "birthDate": "1970-01-01"},
    ]
    orders = [
        {
            "resourceType": "MedicationRequest",
            "id": f"o{n}",
            "status": "completed",
            "intent": "order",
            "medicationReference": {"reference": reference},
            "subject": {"reference": subject},
            "authoredOn": "2025-06-01",
        }
        for n, (reference, subject) in enumerate(
            [("Medication/oxy", "Patient/a"), ("urn:uuid:oxy", "urn:uuid:b")]
        )
    ]
    for name, rows in (
        ("Medication", medications),
        ("Patient", patients),
        ("MedicationRequest", orders),
    ):
        (export / f"{name}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    summary = execute(Run(export, out, workers=1), _config(tmp_path))
    replayed = pq.read_table(out / "orders.parquet").to_pylist()
    assert [o["drug_classes"] for o in replayed] == [["opioid-analgesic"], ["opioid-analgesic"]]
    assert summary["backtest"]["problems"]["count"] == 0
