"""Governance per ordering decision on seeded stores (SQLite and a throwaway PostgreSQL):
select+sign counted once, covered cards apart, last answer wins, reason classes, acted on,
no response explained, prescriber concentration, firing rates and change markers."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import seeded_store
from decision_seed import (
    BENZO,
    CHART,
    DAYS,
    FIRST_DAY,
    FIRST_LINE,
    KNOWLEDGE_CHANGE,
    LBP,
    ORDER,
    SETTINGS_CHANGE,
    DecisionSeed,
    make_decision_seed,
    top_share_pct,
    write_decision_seed,
)

from cds_service.analytics.decisions import iso_week
from cds_service.analytics.report import Period, build_report, context_for
from cds_service.config import Config
from cds_service.rules.registry import default_rules
from cds_service.settings import load_settings
from cds_service.store import Store, open_store

PSEUDONYM_KEY = "decision-test-pseudonym-key-0123456789"
PERIOD = Period(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))


def context() -> Any:
    rules = default_rules()
    settings = load_settings(
        {r.id: r.settings_type for r in rules},
        overrides={"rules": {FIRST_LINE: {"mode": "silent"}}},
    )
    return context_for(rules, settings.rules, knowledge_version="test-knowledge")


@pytest.fixture(scope="module")
def dseed() -> DecisionSeed:
    return make_decision_seed()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dstore(
    request: pytest.FixtureRequest, dseed: DecisionSeed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """The seeded store, once per backend for the module (the tests only read it)."""
    yield from seeded_store(
        request, tmp_path_factory, PSEUDONYM_KEY, lambda store: write_decision_seed(store, dseed)
    )


def _rows(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["rule"], r["context"]): r for r in report["decisions"]["rules"]}


def test_decision_counts_match_the_seed_exactly(dstore: Store, dseed: DecisionSeed) -> None:
    """Firings per decision (select+sign once), covered, silent, outcomes by last answer,
    acted on, reasons and classes, no-response split and rates equal the seed's truth."""
    report = build_report(dstore, context(), PERIOD)
    exp = dseed.expected
    decisions = report["decisions"]
    assert decisions["denominators"] == {
        "opioid_order_decisions": exp.opioid_decisions,
        "order_decisions": exp.order_decisions,
        "chart_reviews": exp.view_calls,
    }
    rows = _rows(report)
    assert set(exp.firings) <= set(rows)
    for key, row in rows.items():
        firings = exp.firings.get(key, 0)
        outcome: dict[str, int] = exp.outcome.get(key, {})
        assert row["firings"] == firings, key
        assert row["silent"] == exp.silent.get(key, 0), key
        assert row["shown"] == firings - exp.silent.get(key, 0), key
        assert row["covered"] == exp.covered.get(key, 0), key
        for name in (
            "accepted",
            "acted_on",
            "overridden",
            "no_response",
            "no_feedback_from_ehr",
            "not_answered",
        ):
            assert row[name] == outcome.get(name, 0), (key, name)
        classes: dict[str, int] = exp.classes.get(key, {})
        assert row["should_not_have_fired"] == classes.get("not-applicable", 0), key
        assert {r["code"]: r["count"] for r in row["reasons"]} == dict(exp.reasons.get(key, {}))
        assert {c["class"]: c["count"] for c in row["reason_classes"] if c["count"]} == dict(
            classes
        ), key
        assert {v["variant"]: v["firings"] for v in row["variants"]} == dict(
            exp.variants.get(key, {})
        ), key
        denominator = exp.opioid_decisions if key[1] == ORDER else exp.view_calls
        assert row["decisions"] == denominator
        assert row["firings_per_100"] == round(100 * firings / denominator, 1)
        shown = row["shown"]
        if shown and key[0] in (LBP, BENZO) and key[1] == ORDER:  # cards with suggestions
            assert row["offers_suggestions"]
            assert row["accepted_pct"] == round(100 * outcome.get("accepted", 0) / shown, 1)
        elif shown:  # information cards: nothing to accept, no acceptance rate
            assert not row["offers_suggestions"] and row["accepted_pct"] is None
        assert row["concentration"]["firings"]["top_share_pct"] == top_share_pct(
            exp.by_prescriber.get(key, Counter())
        ), key
        assert row["concentration"]["overrides"]["top_share_pct"] == top_share_pct(
            exp.overrides_by.get(key, Counter())
        ), key
    # what the seed is about is really there
    assert rows[(LBP, ORDER)]["firings"] < exp.cards[(LBP, ORDER)]  # select+sign pairs
    assert rows[(FIRST_LINE, ORDER)]["covered"] > 0
    assert rows[(FIRST_LINE, ORDER)]["mode"] == "silent"
    assert rows[(LBP, ORDER)]["acted_on"] > 0 and rows[(BENZO, ORDER)]["acted_on"] > 0
    assert rows[(BENZO, CHART)]["no_feedback_from_ehr"] > 0
    assert decisions["no_response"]["services_without_feedback"] == ["opioid-lbp-patient-view"]
    overall = decisions["concentration"]
    assert overall["firings"]["top_share_pct"] == top_share_pct(exp.all_firings_by)
    assert overall["overrides"]["top_share_pct"] == top_share_pct(exp.all_overrides_by)
    assert overall["firings"]["top_share_pct"] > 10  # skewed: the top 10 % write more
    # the legacy card-level rows still count cards (select and sign separately)
    legacy = sum(r["own_cards"] for r in report["rules"] if r["rule"] == LBP)
    assert legacy == exp.cards[(LBP, ORDER)]


def test_markers_weeks_and_trend(dstore: Store, dseed: DecisionSeed) -> None:
    """The knowledge-version and settings changes appear as markers on the day they
    happened; the weekly series holds only weeks with data, each rate the week's firings
    per 100 decisions, and changes are flagged against the previous weeks."""
    report = build_report(dstore, context(), PERIOD)
    markers = report["decisions"]["markers"]
    knowledge = [m for m in markers if m["kind"] == "knowledge"]
    assert [(m["from"], m["to"]) for m in knowledge] == [("2026.10", "2026.11")]
    assert knowledge[0]["date"] >= KNOWLEDGE_CHANGE.isoformat()
    assert knowledge[0]["date"] <= (KNOWLEDGE_CHANGE + dt.timedelta(days=2)).isoformat()
    settings = [m for m in markers if m["kind"] == "settings"]
    assert [(m["rule"], m["from"], m["to"]) for m in settings] == [(LBP, "a" * 16, "b" * 16)]
    assert settings[0]["date"] >= SETTINGS_CHANGE.isoformat()
    row = _rows(report)[(LBP, ORDER)]
    weeks = [p["week"] for p in row["weekly"]]
    assert weeks == sorted(
        {iso_week(FIRST_DAY + dt.timedelta(days=d)) for d in range(DAYS)}
    )  # six weeks, no empty ones
    for point in row["weekly"]:
        assert point["rate"] == round(100 * point["firings"] / point["decisions"], 1)
    assert sum(p["firings"] for p in row["weekly"]) == row["firings"]
    assert row["trend"] in {"up", "down", "steady"}
    # an empty later period: no weeks at all rather than rows of zeros
    empty = build_report(dstore, context(), Period(dt.date(2027, 3, 1), dt.date(2027, 3, 28)))
    assert all(r["weekly"] == [] for r in empty["decisions"]["rules"])
    assert report["knowledge_version"] == "test-knowledge"


def test_rule_filter_keeps_one_rule(dstore: Store, dseed: DecisionSeed) -> None:
    """With a rule filter, only that rule's rows are in the decision figures."""
    report = build_report(dstore, context(), PERIOD, BENZO)
    assert {r["rule"] for r in report["decisions"]["rules"]} == {BENZO}
    assert _rows(report)[(BENZO, ORDER)]["firings"] == dseed.expected.firings[(BENZO, ORDER)]


def test_trend_flags_a_jump_against_previous_weeks() -> None:
    """A week whose rate differs from the mean of the previous weeks by at least 5 points
    and half that mean is flagged up or down; too few previous weeks are never flagged."""
    from cds_service.analytics.decisions import _flag_changes

    series: list[dict[str, Any]] = [
        {"rate": 10.0},
        {"rate": 11.0},
        {"rate": 10.5},
        {"rate": 30.0},
        {"rate": 2.0},
        {"rate": 13.0},
    ]
    _flag_changes(series)
    assert [p["change"] for p in series] == [None, None, None, "up", "down", None]


def test_top_share_counts_at_least_one_prescriber() -> None:
    """The top 10 % of 25 prescribers are the 3 busiest; of 4 prescribers, the busiest one."""
    from cds_service.analytics.decisions import top_share

    counts = {f"k{i}": n for i, n in enumerate([50, 20, 10] + [1] * 22)}
    assert top_share(counts)["top_prescribers"] == 3
    assert top_share(counts)["top_share_pct"] == round(100 * 80 / 102, 1)
    assert top_share({"a": 3, "b": 1, "c": 1, "d": 1})["top_share_pct"] == 50.0
    assert top_share({})["top_share_pct"] is None


def test_report_command_names_its_database_fits_120_columns_and_shows_a_backtest(
    tmp_path: Path,
    dseed: DecisionSeed,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`cds-service report` names the database and knowledge version, prints percentages in
    lines under 120 columns with only weeks that have data, puts a backtest run's figures
    beside the live ones, and answers year-1 or year-9999 dates with a message (exit 2)."""
    import json

    from cds_service.cli import main

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"rules": {FIRST_LINE: {"mode": "silent"}}}))
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDS_RULE_SETTINGS_FILE", str(settings))
    store = open_store(Config(data_dir=str(tmp_path / "data")))
    write_decision_seed(store, dseed)
    store.close()
    args = ["report", "--since", PERIOD.since.isoformat(), "--until", PERIOD.until.isoformat()]
    assert main([*args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["database"].endswith("cds.sqlite3")
    assert report["knowledge_version"]
    run = tmp_path / "backtests" / "run-1"
    run.mkdir(parents=True)
    summary = {**json.loads(json.dumps(report)), "source": "backtest"}
    summary["decisions"]["rules"][0]["firings"] = 999
    (run / "summary.json").write_text(json.dumps(summary))

    assert main([*args, "--backtest", str(run)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 120
    assert f"Database: sqlite:///{tmp_path / 'data' / 'cds.sqlite3'}" in text
    assert f"Knowledge version: {report['knowledge_version']}" in text
    lbp = _rows(report)[(LBP, ORDER)]
    line = next(x for x in lines if x.startswith(LBP + " "))
    assert f"{lbp['accepted_pct']:.1f}%" in line and str(lbp["firings"]) in line.split()
    assert "0.0092" not in text  # shares as percentages, not fractions
    weeks_printed = {x.split()[0] for x in lines if x[:4] == "2026" and "-W" in x[:9]}
    assert weeks_printed == {p["week"] for p in lbp["weekly"]}
    backtest_line = next(x for x in lines if "Backtest run-1" in x)
    assert backtest_line
    top = report["decisions"]["rules"][0]
    assert any(x.startswith(top["rule"]) and "999" in x.split() for x in lines)
    assert "2026.10 -> 2026.11" in text

    for bad in (["--since", "0001-01-01"], ["--until", "9999-12-31"]):
        assert main(["report", *bad]) == 2
        err = capsys.readouterr().err
        assert "outside the dates a report covers" in err and "Traceback" not in err
    (run / "summary.json").write_text(json.dumps({"source": "live"}))
    assert main([*args, "--backtest", str(run)]) == 2
    assert "not a backtest summary" in capsys.readouterr().err


def test_chart_labels_wrap_whole_words_and_keep_every_character() -> None:
    """Long labels are wrapped into lines that, joined, give the label back; a word longer
    than a line is split after its hyphens; no ellipsis."""
    from cds_service.analytics.charts import _lines

    assert _lines("Refractory to first- and second-line therapy", 20) == [
        "Refractory to first-",
        "and second-line",
        "therapy",
    ]
    assert _lines("first-line-therapy-not-tried (ordering)", 12) == [
        "first-line-",
        "therapy-not-",
        "tried",
        "(ordering)",
    ]
    assert _lines("short", 20) == ["short"]
