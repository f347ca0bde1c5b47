"""/analytics in a real browser: Playwright driving the distribution's Chromium (never a
downloaded browser) against the app on a loopback port with a seeded store. Each chart shows
the seeded numbers, the filters change them, downloads return the tables, the page is usable
at 1280 and 800 px and its tables work with JavaScript disabled. Screenshots go to
$CDS_TEST_SCREENSHOTS (docs/ for the README's picture) or the test's temporary folder."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analytics_seed import expected as expected_rows
from analytics_seed import make_seed, write_seed
from conftest import TODAY, open_page, serve_app, shared_knowledge

from cds_service import create_app
from cds_service.analytics.report import Period
from cds_service.config import Config

SINCE, UNTIL = dt.date(2026, 10, 5), dt.date(2026, 11, 22)  # seven whole ISO weeks
SILENT = "first-line-therapy-not-tried"

EMPTY = "\u2013"  # the page shows an en dash for an empty cell


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app (first-line-therapy-not-tried in silent mode) with a seeded store, served on
    a free loopback port by werkzeug's threaded server."""
    data = tmp_path_factory.mktemp("analytics-browser")
    app = create_app(
        Config(today=TODAY, data_dir=str(data), log_level="WARNING"),
        knowledge=shared_knowledge(),
        settings_overrides={"rules": {SILENT: {"mode": "silent"}}},
    )
    write_seed(app.extensions["cds_store"], make_seed(silent_rule=SILENT))
    with serve_app(app) as base:
        yield base


def per_rule(since: dt.date, until: dt.date, rule: str | None = None) -> dict[str, dict[str, Any]]:
    """The seed's figures per rule over all services (independent of the service's code)."""
    from cds_service.analytics.report import reason_catalogue
    from cds_service.cards import cards_dir

    rows = expected_rows(make_seed(silent_rule=SILENT), since, until, reason_catalogue(cards_dir()))
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "cards": 0,
            "accepted": 0,
            "overridden": 0,
            "no_response": 0,
            "own_cards": 0,
            "weeks": Counter(),
            "reasons": Counter(),
        }
    )
    from cds_service.rules.registry import default_rules

    for registered in default_rules():  # the report lists every rule, a rule with no card too
        if rule in (None, registered.id):
            out[registered.id]
    for (rule_id, _service), row in rows.items():
        if rule and rule_id != rule:
            continue
        total = out[rule_id]
        for name in ("cards", "accepted", "overridden", "no_response", "own_cards"):
            total[name] += row[name]
        for week, counts in row["weeks"].items():
            total["weeks"][week] += counts["cards"]
        total["reasons"].update(row["reasons"])
    return out


def _url(base: str, since: dt.date = SINCE, until: dt.date = UNTIL) -> str:
    return f"{base}/analytics?since={since}&until={until}"


def _open(
    browser: Any, url: str, width: int = 1280, javascript: bool = True, height: int = 900
) -> tuple[Any, Any, list[str]]:
    return open_page(
        browser,
        url,
        viewport={"width": width, "height": height},
        java_script_enabled=javascript,
        accept_downloads=True,
    )


def _chart_numbers(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate("""() => ({
      points: [...document.querySelectorAll('#chart-weeks circle.point')].map(c =>
        [c.dataset.rule, c.dataset.week, Number(c.dataset.cards)]),
      pooled: document.querySelectorAll('#chart-outcomes, #chart-reasons').length,
    })""")
    )


def _check_charts(page: Any, since: dt.date, until: dt.date, rule: str | None = None) -> None:
    want = per_rule(since, until, rule)
    weeks = Period(since, until).weeks()
    numbers = _chart_numbers(page)
    assert sorted(numbers["points"]) == sorted(
        [rule_id, week, want[rule_id]["weeks"][week]] for rule_id in want for week in weeks
    )
    # outcomes and reasons are per decision and per rule (the decision section, checked in
    # test_governance_browser.py); no per-card chart pools them or credits covered rules
    assert numbers["pooled"] == 0


def test_each_chart_shows_the_seeded_numbers(browser: Any, server: str, shots: Path) -> None:
    """Weekly cards per rule show exactly the seeded figures, no pooled per-card outcome or
    reason chart remains, the silent rule is marked; no console or CSP errors."""
    context, page, problems = _open(browser, _url(server), height=1260)
    _check_charts(page, SINCE, UNTIL)
    silent_row = page.locator(f'#chart-decisions g.decision-row[data-rule="{SILENT}"]')
    assert silent_row.first.get_attribute("data-mode") == "silent"
    want = per_rule(SINCE, UNTIL)
    assert page.locator("#total-cards").inner_text() == str(
        sum(t["own_cards"] for t in want.values())
    )
    page.screenshot(path=str(shots / "analytics.png"), full_page=False)
    page.screenshot(path=str(shots / "analytics-full.png"), full_page=True)
    assert problems == []
    context.close()


def test_filters_change_the_figures(browser: Any, server: str) -> None:
    """Choosing a rule (applied at once by the script) and then a shorter period (the Show
    button) redraws the charts and tables with that selection's numbers."""
    context, page, problems = _open(browser, _url(server))
    with page.expect_navigation():
        page.select_option("select[name=rule]", "opioid-benzodiazepine")
    assert "rule=opioid-benzodiazepine" in page.url
    _check_charts(page, SINCE, UNTIL, "opioid-benzodiazepine")
    assert page.locator("#chart-weeks g.series").count() == 1
    since, until = dt.date(2026, 10, 19), dt.date(2026, 11, 1)
    page.fill("input[name=since]", since.isoformat())
    page.fill("input[name=until]", until.isoformat())
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert f"since={since}" in page.url and f"until={until}" in page.url
    _check_charts(page, since, until, "opioid-benzodiazepine")
    want = per_rule(since, until, "opioid-benzodiazepine")["opioid-benzodiazepine"]
    cards = page.locator("table[data-table=rules] td[data-column=cards]").all_inner_texts()
    assert sum(int(c) for c in cards) == want["cards"]
    assert page.locator("#chart-weeks circle.point").count() == 2  # two ISO weeks
    assert problems == []
    context.close()


def test_downloads_return_the_tables(browser: Any, server: str, tmp_path: Path) -> None:
    """The CSV link of each table downloads the rows the page shows; the JSON link the same
    rows as objects."""
    context, page, _ = _open(browser, _url(server))
    for name in ("rules", "override-reasons", "suggestions", "weeks"):
        block = page.locator(f"#table-{name}")
        shown = block.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
        with page.expect_download() as info:
            block.locator("a[data-format=csv]").click()
        target = tmp_path / f"{name}.csv"
        info.value.save_as(target)
        assert info.value.suggested_filename == f"governance-{name}-{SINCE}-{UNTIL}.csv"
        rows = list(csv.reader(io.StringIO(target.read_text("utf-8"))))
        header = block.locator("th").evaluate_all("hs => hs.map(h => h.dataset.column)")
        assert rows[0] == header
        assert len(rows) - 1 == len(shown) and len(shown) > 0
        for got, cells in zip(rows[1:], shown, strict=True):
            for column, raw, cell in zip(header, got, cells, strict=True):
                if column.endswith("_share"):
                    assert cell == (EMPTY if raw == "" else f"{float(raw) * 100:.1f}%")
                else:
                    assert cell == (raw or EMPTY)
        with page.expect_download() as info:
            block.locator("a[data-format=json]").click()
        info.value.save_as(tmp_path / f"{name}.json")
        import json

        body = json.loads((tmp_path / f"{name}.json").read_text("utf-8"))
        assert body["table"] == name and len(body["rows"]) == len(shown)
    context.close()


@pytest.mark.parametrize("width", [1280, 800])
def test_usable_at_1280_and_800_pixels(browser: Any, server: str, shots: Path, width: int) -> None:
    """At both widths nothing overflows the page sideways, every chart fits the viewport
    and its text stays legible, and the filters stay on screen (screenshots saved)."""
    context, page, problems = _open(browser, _url(server), width=width)
    layout = page.evaluate("""() => ({
      scroll: document.scrollingElement.scrollWidth,
      inner: window.innerWidth,
      charts: [...document.querySelectorAll('svg.chart')].map(s => {
        const b = s.getBoundingClientRect();
        const t = s.querySelector('text.legend, text.label, text.tick');
        return [s.id, b.left, b.right, t ? t.getBoundingClientRect().height : 0];
      }),
      form: document.getElementById('filters').getBoundingClientRect().right,
    })""")
    assert layout["scroll"] <= layout["inner"]
    assert {c[0] for c in layout["charts"]} >= {"chart-weeks", "chart-decisions"}
    for _chart_id, left, right, text_height in layout["charts"]:
        assert left >= 0 and right <= width
        assert text_height >= 10  # legible: scaled text at least 10 px high
    assert layout["form"] <= width
    page.screenshot(path=str(shots / f"analytics-{width}.png"), full_page=True)
    assert problems == []
    context.close()


def test_tables_work_with_javascript_disabled(browser: Any, server: str) -> None:
    """With JavaScript off the tables and charts are all there, and the filter form still
    filters (the Show button submits it)."""
    context, page, _ = _open(browser, _url(server), javascript=False)
    want = per_rule(SINCE, UNTIL)
    cells = page.locator("table[data-table=rules] tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].innerText, Number(r.cells[4].innerText)])"
    )
    totals: Counter[str] = Counter()
    for rule_id, cards in cells:
        totals[rule_id] += cards
    assert dict(totals) == {r: t["cards"] for r, t in want.items()} | {
        r: 0 for r in totals if r not in want
    }
    # the weekly per-card chart, the decision outcomes, and two per rule in the details
    details = page.locator("section.rule-detail").count()
    assert details > 0 and page.locator("svg.chart").count() == 2 + 2 * details
    page.select_option("select[name=rule]", SILENT)
    with page.expect_navigation():
        page.click("button[type=submit]")
    rules = set(page.locator("table[data-table=rules] td[data-column=rule]").all_inner_texts())
    assert rules == {SILENT}
    modes = set(page.locator("table[data-table=rules] td[data-column=mode]").all_inner_texts())
    assert modes == {"silent"}
    context.close()
