"""The governance report on seeded stores (SQLite and a throwaway PostgreSQL): exact counts,
reasons, suggestions and weekly trends, covered rules, silent mode end to end, and the
`cds-service report` command."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analytics_seed import (
    CATALOGUE,
    SIGN,
    Seed,
    calls_between,
    expected,
    iso_week,
    make_seed,
    write_seed,
)
from conftest import CheckedClient, make_app, seeded_store
from servers import PostgresServer, cards_body

from cds_service.analytics.report import Period, ReportError, build_report, context_for
from cds_service.config import Config
from cds_service.rules.registry import default_rules
from cds_service.settings import load_settings
from cds_service.store import Store, open_store

PSEUDONYM_KEY = "report-test-pseudonym-key-0123456789"
SINCE, UNTIL = dt.date(2026, 10, 7), dt.date(2026, 11, 15)  # mid-week to a Sunday


SILENT_BY_DEFAULT = {
    rule.id: load_settings({r.id: r.settings_type for r in default_rules()}).rules[rule.id].mode
    for rule in default_rules()
}


def context() -> Any:
    rules = default_rules()
    settings = load_settings(
        {r.id: r.settings_type for r in rules},
        overrides={"rules": {"first-line-therapy-not-tried": {"mode": "silent"}}},
    )
    return context_for(rules, settings.rules)


@pytest.fixture(scope="module")
def seed() -> Seed:
    return make_seed()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(
    request: pytest.FixtureRequest, seed: Seed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """The seeded store, once per backend for the module (the tests only read it)."""
    yield from seeded_store(
        request, tmp_path_factory, PSEUDONYM_KEY, lambda store: write_seed(store, seed)
    )


def _check(
    report: dict[str, Any], seed: Seed, since: dt.date, until: dt.date, rule: str | None = None
) -> None:
    ctx = context()
    want = {
        k: v
        for k, v in expected(seed, since, until, dict(ctx.reasons)).items()
        if rule in (None, k[0])
    }
    rows = {(r["rule"], r["service"]): r for r in report["rules"]}
    assert set(want) <= set(rows)
    weeks = Period(since, until).weeks()
    for key, row in rows.items():
        exp = want.get(key)
        assert row["calls"] == calls_between(seed, key[1], since, until)
        if exp is None:
            assert row["cards"] == 0 and row["weeks"] == [
                {"week": w, "cards": 0, "accepted": 0, "overridden": 0} for w in weeks
            ]
            continue
        for name in (
            "cards",
            "own_cards",
            "covered_cards",
            "silent_cards",
            "patients",
            "accepted",
            "overridden",
            "no_response",
        ):
            assert row[name] == exp[name], (key, name)
        assert row["cards_per_100_calls"] == round(100 * exp["cards"] / row["calls"], 2)
        assert {(r["code"], r["count"]) for r in row["override_reasons"]} == set(
            exp["reasons"].items()
        ), key
        counts = [r["count"] for r in row["override_reasons"]]
        assert counts == sorted(counts, reverse=True)  # ranked
        for reason in row["override_reasons"]:
            if reason["code"] in ctx.reasons:
                assert reason["display"] == ctx.reasons[reason["code"]]
        assert {(s["label"], s["count"]) for s in row["suggestions_accepted"]} == set(
            exp["suggestions"].items()
        ), key
        assert [w["week"] for w in row["weeks"]] == weeks
        for week in row["weeks"]:
            assert {k: week[k] for k in ("cards", "accepted", "overridden")} == {
                k: exp["weeks"][week["week"]][k] for k in ("cards", "accepted", "overridden")
            }
        # silent: the seeded silent rule, and any rule the shipped settings ship silent
        silent_rules = {"first-line-therapy-not-tried"} | {
            r for r, s in SILENT_BY_DEFAULT.items() if s == "silent"
        }
        assert row["mode"] == ("silent" if key[0] in silent_rules else "active")


def test_report_matches_the_seeded_store_exactly(seeded: Store, seed: Seed) -> None:
    """Calls, cards, patients, outcomes, ranked reasons, suggestions by label and the weekly
    trend equal the figures computed independently from the seed, on SQLite and PostgreSQL."""
    report = build_report(seeded, context(), Period(SINCE, UNTIL))
    assert (report["since"], report["until"]) == (SINCE.isoformat(), UNTIL.isoformat())
    _check(report, seed, SINCE, UNTIL)
    signs = {r["rule"]: r for r in report["rules"] if r["service"] == SIGN}
    # the seed exercises what the counting rules are about
    assert signs["first-line-therapy-not-tried"]["covered_cards"] > 0
    assert signs["first-line-therapy-not-tried"]["silent_cards"] > 0
    assert any(
        r["code"] == "other"
        for r in signs["opioid-start-chronic-lbp"]["override_reasons"]
        + signs["opioid-benzodiazepine"]["override_reasons"]
    )
    assert sum(r["accepted"] for r in report["rules"]) > 0


def test_report_filters_by_rule_and_by_a_one_day_period(seeded: Store, seed: Seed) -> None:
    """--rule keeps that rule's rows only; a one-day period counts that UTC day alone."""
    report = build_report(seeded, context(), Period(SINCE, UNTIL), "opioid-benzodiazepine")
    assert {r["rule"] for r in report["rules"]} == {"opioid-benzodiazepine"}
    assert len(report["rules"]) == 3  # on all three services
    _check(report, seed, SINCE, UNTIL, "opioid-benzodiazepine")
    day = seed.cards[40].issued_at.date()
    _check(build_report(seeded, context(), Period(day, day)), seed, day, day)


def test_silent_cards_are_logged_and_counted_but_never_returned(tmp_path: Path) -> None:
    """A rule in silent mode: its card is not in the hook response, is logged marked
    silent, and the report counts it (what the rule would have shown)."""
    app = make_app(data_dir=str(tmp_path / "data"))
    loud = (
        CheckedClient(app.test_client())
        .post("/cds-services/" + SIGN, cards_body())
        .get_json()["cards"]
    )
    assert "opioid-benzodiazepine" in {c["source"]["topic"]["code"] for c in loud}
    from conftest import TODAY, shared_knowledge

    from cds_service import create_app

    quiet_app = create_app(
        Config(today=TODAY, data_dir=str(tmp_path / "data")),
        knowledge=shared_knowledge(),
        settings_overrides={"rules": {"opioid-benzodiazepine": {"mode": "silent"}}},
    )
    response = CheckedClient(quiet_app.test_client()).post("/cds-services/" + SIGN, cards_body())
    shown = response.get_json()["cards"]
    assert "opioid-benzodiazepine" not in {c["source"]["topic"]["code"] for c in shown}
    assert shown and "silent" not in json.dumps(response.get_json())
    for application in (app, quiet_app):
        assert application.extensions["cds_card_log"].flush(10)
    store: Store = quiet_app.extensions["cds_store"]
    rows = store.issued_cards()
    silent = [r for r in rows if r["silent"]]
    assert [r["rule_id"] for r in silent] == ["opioid-benzodiazepine"]
    assert silent[0]["card_uuid"] not in {c["uuid"] for c in shown}
    today = dt.date.today()
    engine = quiet_app.extensions["cds_engine"]
    report = build_report(
        store, context_for(engine.rules, engine.settings.rules), Period(today, today)
    )
    row = next(
        r for r in report["rules"] if (r["rule"], r["service"]) == ("opioid-benzodiazepine", SIGN)
    )
    assert (row["mode"], row["cards"], row["silent_cards"], row["no_response"]) == (
        "silent",
        2,
        1,
        2,
    )
    # the low back pain card says first-line too: counted for that rule as covered
    first_line = next(
        r
        for r in report["rules"]
        if (r["rule"], r["service"]) == ("first-line-therapy-not-tried", SIGN)
    )
    assert first_line["covered_cards"] == 2 and first_line["own_cards"] == 0
    assert report["services"] == [{"service": SIGN, "calls": 2, "calls_with_cards": 2}]
    for application in (app, quiet_app):
        application.extensions["cds_card_log"].close()
        application.extensions["cds_store"].close()


def test_purge_removes_the_attribution_rows_of_old_cards(tmp_path: Path, seed: Seed) -> None:
    """Retention deletes old cards together with the rows that attribute them to rules."""
    store = open_store(Config(data_dir=str(tmp_path / "data"), retention_days=30))
    write_seed(store, seed)
    store.purge(now=dt.datetime.combine(dt.date(2026, 11, 23), dt.time(), dt.UTC))
    report = build_report(store, context(), Period(dt.date(2026, 9, 1), dt.date(2026, 11, 23)))
    kept = [c for c in seed.cards if c.issued_at.date() >= dt.date(2026, 10, 24)]
    assert sum(r["own_cards"] for r in report["rules"]) == len(kept)
    from cds_service.store.schema import card_rule

    (rows,) = store.read_many("test", [card_rule.select()])
    assert len(rows) == sum(1 + len(c.covers) for c in kept)
    store.close()


def test_period_parsing_and_limits() -> None:
    """Dates are ISO days; the default is twelve weeks to today; bad or reversed dates and
    periods over the limit are refused with a message."""
    today = dt.date(2026, 11, 23)
    assert Period.parse(None, None, today) == Period(dt.date(2026, 9, 1), today)
    assert Period.parse("2026-11-01", "2026-11-02", today).weeks() == ["2026-W44", "2026-W45"]
    assert iso_week(dt.date(2027, 1, 1)) == "2026-W53"
    for since, until, message in (
        ("yesterday", None, "since"),
        ("2026-11-05", "2026-11-01", "after"),
        ("2020-01-01", None, "longer"),
        ("0001-01-01", None, "outside the dates"),
        (None, "9999-12-31", "outside the dates"),
        ("9999-12-31", "9999-12-31", "outside the dates"),
    ):
        with pytest.raises(ReportError, match=message):
            Period.parse(since, until, today)


def test_report_command_prints_json_csv_and_a_table(
    tmp_path: Path, seed: Seed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cds-service report` prints the documented JSON object, the CSV of a table and a
    plain-text table from the configured store; a bad date exits with 2."""
    from cds_service.cli import main

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"rules": {"first-line-therapy-not-tried": {"mode": "silent"}}}))
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDS_RULE_SETTINGS_FILE", str(settings))
    store = open_store(Config(data_dir=str(tmp_path / "data")))
    write_seed(store, seed)
    store.close()
    args = ["report", "--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    assert main([*args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"since", "until", "rules"}
    for row in report["rules"]:
        assert set(row) >= {
            "rule",
            "service",
            "mode",
            "calls",
            "cards",
            "patients",
            "accepted",
            "overridden",
            "no_response",
            "override_reasons",
            "suggestions_accepted",
            "weeks",
        }
    _check(report, seed, SINCE, UNTIL)

    assert (
        main(
            [
                *args,
                "--format",
                "csv",
                "--table",
                "override-reasons",
                "--rule",
                "opioid-start-chronic-lbp",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    want = expected(seed, SINCE, UNTIL, {c: c for c in CATALOGUE})
    assert rows and {r["rule"] for r in rows} == {"opioid-start-chronic-lbp"}
    assert {(r["service"], r["code"], int(r["count"])) for r in rows} == {
        (service, code, n)
        for (rule, service), row in want.items()
        if rule == "opioid-start-chronic-lbp"
        for code, n in row["reasons"].items()
    }

    assert main([*args]) == 0
    text = capsys.readouterr().out
    assert "Which rule to tune or retire" in text and "Weekly firings per 100" in text
    assert f"Database: sqlite:///{tmp_path / 'data'}" in text
    assert max(len(line) for line in text.splitlines()) < 120

    assert main(["report", "--since", "23/11/2026"]) == 2
    assert "since: not a date" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrading_from_0001_keeps_old_cards_in_the_report(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A database with cards logged before migration 0002 upgrades in place: old cards are
    shown (not silent, covering nothing) and counted for their rule; downgrade works too."""
    from sqlalchemy import text

    from cds_service.store.engine import database_url, make_engine
    from cds_service.store.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.sqlite3"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database("m")
    config = Config(database_url=url, pseudonym_key=PSEUDONYM_KEY)
    engine = make_engine(database_url(config), 5.0, statement_timeout=False)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO issued_card (card_uuid, rule_id, service_id, hook, indicator, "
                "issued_at, patient_key, suggestions) VALUES ('old-1', 'opioid-benzodiazepine', "
                "'opioid-lbp-order-sign', 'order-sign', 'warning', :at, :key, '[]')"
            ),
            {"at": dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC), "key": "k" * 64},
        )
    upgrade(engine)
    engine.dispose()
    store = open_store(config)
    row = store.issued_cards()[0]
    assert (row["silent"], row["covers"]) == (False, [])
    report = build_report(
        store,
        context(),
        Period(dt.date(2026, 11, 1), dt.date(2026, 11, 8)),
        "opioid-benzodiazepine",
    )
    sign = next(r for r in report["rules"] if r["service"] == SIGN)
    assert (sign["cards"], sign["own_cards"], sign["no_response"]) == (1, 1, 1)
    from alembic import command

    from cds_service.store.migrate import alembic_config

    alembic = alembic_config()
    with store.engine.begin() as connection:
        alembic.attributes["connection"] = connection
        command.downgrade(alembic, "0001")
    store.close()
