"""The per-decision governance screen in a real browser (Playwright + the distribution's
Chromium) at 1280 and 800 px, on a store seeded per decision: the decision table never
scrolls sideways (stacked at 800 px), each chart shows the seeded numbers, change markers
appear, labels are whole, tables are paged, a backtest can be picked, the printable report
is one PDF page, and no identifier or key is in the HTML or the PDF."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TODAY, open_page, serve_app, shared_knowledge
from decision_seed import (
    BENZO,
    DAYS,
    FIRST_DAY,
    FIRST_LINE,
    LBP,
    ORDER,
    PRESCRIBERS,
    DecisionSeed,
    make_decision_seed,
    write_decision_seed,
)

from cds_service import create_app
from cds_service.analytics.report import build_report
from cds_service.config import Config

SINCE, UNTIL = FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1)
QUERY = f"since={SINCE}&until={UNTIL}"


@pytest.fixture(scope="module")
def dseed() -> DecisionSeed:
    return make_decision_seed()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dseed: DecisionSeed) -> Iterator[str]:
    """The app (first-line in silent mode) on a loopback port, its store seeded per decision,
    and one backtest run folder under <data dir>/backtests written from the report JSON."""

    data = tmp_path_factory.mktemp("governance-browser")
    app = create_app(
        Config(today=TODAY, data_dir=str(data), log_level="WARNING"),
        knowledge=shared_knowledge(),
        settings_overrides={"rules": {FIRST_LINE: {"mode": "silent"}}},
    )
    store = app.extensions["cds_store"]
    write_decision_seed(store, dseed)
    from cds_service.analytics.report import Period

    report = build_report(store, app.extensions["cds_report_context"], Period(SINCE, UNTIL))
    summary = {**json.loads(json.dumps(report)), "source": "backtest"}
    for row in summary["decisions"]["rules"]:
        row["firings_per_100"] = 12.3  # a recognisable backtest figure
    run = data / "backtests" / "2026-12-01-lbp-threshold"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary), "utf-8")
    with serve_app(app) as base:
        yield base


def _open(browser: Any, url: str, width: int) -> tuple[Any, Any, list[str]]:
    return open_page(browser, url, viewport={"width": width, "height": 900})


def _forbidden(dseed: DecisionSeed) -> list[str]:
    keys = {c.decision_key for e in dseed.entries for c in e.cards if c.decision_key}
    keys |= {c.patient_key for e in dseed.entries for c in e.cards}
    return [*PRESCRIBERS, *dseed.patient_ids, *sorted(keys)]


@pytest.mark.parametrize("width", [1280, 800])
def test_decision_table_fits_and_stacks(
    browser: Any, server: str, shots: Path, width: int, dseed: DecisionSeed
) -> None:
    """At 1280 px the decision table is on the first screen with no horizontal overflow; at
    800 px its rows are stacked cards with labels; chart labels are whole, never cut."""
    context, page, problems = _open(browser, f"{server}/analytics?{QUERY}", width)
    layout = page.evaluate("""() => {
      const t = document.getElementById('decision-table');
      const b = t.getBoundingClientRect();
      const row = t.tBodies[0].rows[0];
      return {
        scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth,
        right: b.right, left: b.left, top: b.top + window.scrollY,
        tableScroll: t.scrollWidth, tableClient: t.clientWidth,
        rowDisplay: getComputedStyle(row).display,
        cellsOverflow: [...t.querySelectorAll('tbody td, tbody th')].filter(
          c => c.scrollWidth > c.clientWidth + 1).length,
        labels: [...document.querySelectorAll('svg.chart text[data-full]')].map(x =>
          [x.dataset.full, [...x.querySelectorAll('tspan')].map(s => s.textContent)]),
        clipped: [...document.querySelectorAll('svg.chart text[data-full]')].filter(x => {
          const s = x.ownerSVGElement.getBoundingClientRect(), r = x.getBoundingClientRect();
          return r.left < s.left - 1 || r.right > s.right + 1;
        }).length,
      };
    }""")
    assert layout["scroll"] <= layout["inner"]
    assert layout["left"] >= 0 and layout["right"] <= width
    assert layout["tableScroll"] <= layout["tableClient"] + 1
    assert layout["cellsOverflow"] == 0
    if width == 1280:
        assert layout["rowDisplay"] == "table-row"
        assert layout["top"] < 900  # starts on the first screen
    else:
        assert layout["rowDisplay"] == "block"  # stacked
        label = page.evaluate(
            "() => getComputedStyle(document.querySelector("
            "'#decision-table td[data-column=trend]'), '::before').content"
        )
        assert "Trend" in label
    assert layout["labels"] and layout["clipped"] == 0
    for full, spans in layout["labels"]:
        # the lines, read in order, are the whole label (a word split after a hyphen joins)
        assert re.sub(r"(?<=\w-)\s", "", " ".join(spans)) == re.sub(r"(?<=\w-)\s", "", full), full
        assert "\u2026" not in " ".join(spans)
    page.screenshot(path=str(shots / f"governance-{width}.png"), full_page=False)
    page.screenshot(path=str(shots / f"governance-{width}-full.png"), full_page=True)
    html = page.content()
    for secret in _forbidden(dseed):
        assert secret not in html, secret
    assert problems == []
    context.close()


def test_charts_show_the_seeded_numbers_and_markers(
    browser: Any, server: str, dseed: DecisionSeed
) -> None:
    """The decision outcome bars, each rule's reasons (with classes) and weekly rate points
    carry the seed's numbers; knowledge and settings change markers are on the timeline."""
    exp = dseed.expected
    context, page, problems = _open(browser, f"{server}/analytics?{QUERY}", 1280)
    numbers = page.evaluate("""() => ({
      rows: [...document.querySelectorAll('#chart-decisions g.decision-row')].map(g => [
        g.dataset.rule, g.dataset.context, Number(g.dataset.firings), g.dataset.mode,
        Object.fromEntries([...g.querySelectorAll('rect.segment')].map(r =>
          [r.dataset.outcome, Number(r.dataset.count)]))]),
      details: [...document.querySelectorAll('section.rule-detail')].map(s => ({
        rule: s.dataset.rule, context: s.dataset.context,
        reasons: [...s.querySelectorAll('g.reason')].map(g =>
          [g.dataset.code, g.dataset.class, Number(g.dataset.count)]),
        weekly: [...s.querySelectorAll('circle.rate')].map(c => Number(c.dataset.firings)),
        flagged: s.querySelectorAll('circle.rate.flagged').length,
        markers: [...s.querySelectorAll('line.marker')].map(m => [m.dataset.kind, m.dataset.week]),
      })),
      listed: [...document.querySelectorAll('#markers li.marker')].map(m =>
        [m.dataset.kind, m.dataset.rule || null]),
    })""")
    rows = {(r, c): (f, m, seg) for r, c, f, m, seg in numbers["rows"]}
    for key, firings in exp.firings.items():
        got_firings, mode, segments = rows[key]
        assert got_firings == firings, key
        if mode == "silent":
            assert segments == {}
            continue
        outcome = exp.outcome[key]
        assert segments == {
            "accepted": outcome["accepted"],
            "overridden": outcome["overridden"],
            "no_response": outcome["no_response"],
        }, key
    details = {(d["rule"], d["context"]): d for d in numbers["details"]}
    for key in ((LBP, ORDER), (BENZO, ORDER)):
        detail = details[key]
        assert {code: count for code, _, count in detail["reasons"]} == dict(exp.reasons[key])
        classes: dict[str, int] = {}
        for _, klass, count in detail["reasons"]:
            classes[klass] = classes.get(klass, 0) + count
        assert classes == dict(exp.classes[key])
        assert sum(detail["weekly"]) == exp.firings[key]
    lbp_markers = details[(LBP, ORDER)]["markers"]
    assert {kind for kind, _ in lbp_markers} == {"knowledge", "settings"}
    assert {kind for kind, _ in details[(BENZO, ORDER)]["markers"]} == {"knowledge"}
    assert sorted(numbers["listed"], key=str) == sorted(
        [["knowledge", None], ["settings", LBP]], key=str
    )
    assert page.locator("#decision-table tr[data-mode=silent]").count() >= 1
    assert problems == []
    context.close()


def test_long_tables_are_paged_not_capped(browser: Any, server: str) -> None:
    """A table longer than a page shows 25 rows with Previous/Next; every row is reachable
    and the CSV holds them all."""
    context, page, problems = _open(browser, f"{server}/analytics?{QUERY}", 1280)
    table = page.locator("table[data-table=firing-rates]")
    total = table.locator("tbody tr").count()
    assert total > 25
    assert table.locator("tbody tr:not([hidden])").count() == 25
    seen = 25
    pager = page.locator("#table-firing-rates .pager")
    while not pager.locator("button", has_text="Next").is_disabled():
        pager.locator("button", has_text="Next").click()
        seen += table.locator("tbody tr:not([hidden])").count()
    assert seen == total
    assert f"of {total}" in (pager.locator("span").text_content() or "")
    assert problems == []
    context.close()


def test_backtest_picker_shows_backtest_beside_live(browser: Any, server: str) -> None:
    """The picker lists the run folders under <data dir>/backtests; choosing one adds its
    firings per 100 decisions beside the live ones."""
    context, page, problems = _open(browser, f"{server}/analytics?{QUERY}", 1280)
    options = page.locator("select[name=backtest] option").all_inner_texts()
    assert "2026-12-01-lbp-threshold" in options
    page.select_option("select[name=backtest]", "2026-12-01-lbp-threshold")
    with page.expect_navigation():
        page.click("button[type=submit]")
    cells = page.locator("#decision-table td[data-column=backtest_per_100]").all_inner_texts()
    assert cells and set(cells) == {"12.3"}
    assert "2026-12-01-lbp-threshold" in page.locator("#backtest-note").inner_text()
    layout = page.evaluate(
        "() => document.getElementById('decision-table').getBoundingClientRect().right"
    )
    assert layout <= 1280
    assert problems == []
    context.close()


def test_printable_report_is_one_pdf_page(
    browser: Any, server: str, shots: Path, dseed: DecisionSeed
) -> None:
    """The printable report prints on one landscape page (PDF), with the decision table,
    the explanations and the markers, and no identifier or key."""
    context, page, problems = _open(browser, f"{server}/analytics/print?{QUERY}", 1280)
    # a row per seeded (rule, context), plus zero rows of registered rules the seed never fired
    rows = page.locator("#decision-table tbody tr")
    assert rows.count() >= len(dseed.expected.firings)
    table = page.locator("#decision-table").inner_text()
    assert all(rule in table for rule, _context in dseed.expected.firings)
    assert page.locator("#markers li.marker").count() == 2
    assert "No response" in page.locator("#no-response").inner_text()
    pdf = page.pdf(format="A4", landscape=True, print_background=True, prefer_css_page_size=True)
    (shots / "governance-report.pdf").write_bytes(pdf)
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages == 1
    html = page.content()
    for secret in _forbidden(dseed):
        assert secret not in html, secret
        assert secret.encode() not in pdf
    assert problems == []
    context.close()
