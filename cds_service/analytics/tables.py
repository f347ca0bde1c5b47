"""The report as flat tables (the page's tables, the CSV downloads, `report --format
table|csv`), each a list of columns and rows of plain values."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Cell = str | int | float | bool | None


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


TABLE_NAMES = ("rules", "override-reasons", "suggestions", "weeks")

_RULE_COLUMNS = (
    "rule",
    "service",
    "mode",
    "calls",
    "cards",
    "own_cards",
    "covered_cards",
    "silent_cards",
    "cards_per_100_calls",
    "patients",
    "accepted",
    "overridden",
    "no_response",
    "accepted_share",
    "overridden_share",
    "no_response_share",
)


def tables(report: Mapping[str, Any]) -> dict[str, Table]:
    rules: Sequence[Mapping[str, Any]] = report["rules"]
    return {
        "rules": Table(
            "rules",
            "Cards and outcomes per rule",
            _RULE_COLUMNS,
            tuple(tuple(row[c] for c in _RULE_COLUMNS) for row in rules),
        ),
        "override-reasons": Table(
            "override-reasons",
            "Override reasons",
            ("rule", "service", "code", "display", "count"),
            tuple(
                (row["rule"], row["service"], r["code"], r["display"], r["count"])
                for row in rules
                for r in row["override_reasons"]
            ),
        ),
        "suggestions": Table(
            "suggestions",
            "Suggestions accepted",
            ("rule", "service", "label", "count"),
            tuple(
                (row["rule"], row["service"], s["label"], s["count"])
                for row in rules
                for s in row["suggestions_accepted"]
            ),
        ),
        "weeks": Table(
            "weeks",
            "Weekly trend",
            ("rule", "service", "week", "cards", "accepted", "overridden"),
            tuple(
                (row["rule"], row["service"], w["week"], w["cards"], w["accepted"], w["overridden"])
                for row in rules
                for w in row["weeks"]
            ),
        ),
    }


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text  # a spreadsheet must not run a cell as a formula
    return text


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def to_json(table: Table) -> list[dict[str, Cell]]:
    return [dict(zip(table.columns, row, strict=True)) for row in table.rows]


def to_text(table: Table) -> str:
    """A plain-text table for a terminal."""
    cells = [list(table.columns)] + [[_plain(v) for v in row] for row in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    lines = [table.title, ""]
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(
                value.ljust(width) if not _numeric(value) or index == 0 else value.rjust(width)
                for value, width in zip(row, widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    if not table.rows:
        lines.append("(none)")
    return "\n".join(lines)


def _plain(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return _cell(value)


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


# --- per decision (report["decisions"]): the first screen, the committee's tables ----------

DECISION_TABLE_NAMES = ("decisions", "variants", "reason-classes", "firing-rates")


def rule_label(row: Mapping[str, Any]) -> str:
    """A rule with where it fires when the rule fires in two places."""
    return f"{row['rule']} ({row['context']})"


def decision_tables(report: Mapping[str, Any]) -> dict[str, Table]:
    decisions: Mapping[str, Any] = report.get("decisions") or {"rules": []}
    rows: Sequence[Mapping[str, Any]] = decisions["rules"]
    return {
        "decisions": Table(
            "decisions",
            "Per rule, per ordering decision",
            (
                "rule",
                "context",
                "mode",
                "decisions",
                "firings",
                "firings_per_100",
                "accepted_pct",
                "acted_on_pct",
                "overridden_pct",
                "should_not_have_fired_pct",
                "no_response_pct",
                "covered",
                "trend",
            ),
            tuple(
                (
                    r["rule"],
                    r["context"],
                    r["mode"],
                    r["decisions"],
                    r["firings"],
                    r["firings_per_100"],
                    r["accepted_pct"],
                    r["acted_on_pct"],
                    r["overridden_pct"],
                    r["should_not_have_fired_pct"],
                    r["no_response_pct"],
                    r["covered"],
                    r["trend"],
                )
                for r in rows
            ),
        ),
        "variants": Table(
            "variants",
            "Per rule and variant",
            (
                "rule",
                "context",
                "variant",
                "firings",
                "accepted",
                "acted_on",
                "overridden",
                "should_not_have_fired",
                "no_response",
            ),
            tuple(
                (
                    r["rule"],
                    r["context"],
                    v["variant"],
                    v["firings"],
                    v["accepted"],
                    v["acted_on"],
                    v["overridden"],
                    v["should_not_have_fired"],
                    v["no_response"],
                )
                for r in rows
                for v in r["variants"]
            ),
        ),
        "reason-classes": Table(
            "reason-classes",
            "Override reasons per rule, by class",
            ("rule", "context", "class", "code", "display", "count"),
            tuple(
                (r["rule"], r["context"], x["class"], x["code"], x["display"], x["count"])
                for r in rows
                for x in r["reasons"]
            ),
        ),
        "firing-rates": Table(
            "firing-rates",
            "Weekly firing rate (weeks with data only)",
            ("rule", "context", "week", "firings", "decisions", "per_100", "change"),
            tuple(
                (
                    r["rule"],
                    r["context"],
                    p["week"],
                    p["firings"],
                    p["decisions"],
                    p["rate"],
                    p["change"] or "",
                )
                for r in rows
                for p in r["weekly"]
            ),
        ),
    }


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def short_label(row: Mapping[str, Any]) -> str:
    """The rule, marked [chart] where it fires on patient-view (ordering is the default)."""
    return str(row["rule"]) + (" [chart]" if row["context"] != "ordering" else "")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def committee_text(report: Mapping[str, Any], width: int = 119) -> str:
    """The terminal report: short tables under `width` columns, percentages, only weeks
    with data (the full figures are in --format json / csv)."""
    decisions: Mapping[str, Any] = report.get("decisions") or {"rules": []}
    rows: Sequence[Mapping[str, Any]] = decisions["rules"]
    name_width = min(40, max([len(short_label(r)) for r in rows] + [4]))
    main = Table(
        "main",
        "Which rule to tune or retire (unit: ordering decision; % of shown firings)",
        (
            "Rule",
            "Mode",
            "Fired",
            "Per 100",
            "Accepted",
            "Acted on",
            "Overridden",
            "Not applic.",
            "No resp.",
            "Trend",
        ),
        tuple(
            (
                _fit(short_label(r), name_width),
                r["mode"],
                r["firings"],
                "n/a" if r["firings_per_100"] is None else f"{r['firings_per_100']:.1f}",
                _pct(r["accepted_pct"]),
                _pct(r["acted_on_pct"]),
                _pct(r["overridden_pct"]),
                _pct(r["should_not_have_fired_pct"]),
                _pct(r["no_response_pct"]),
                r["trend"],
            )
            for r in rows
        ),
    )
    parts = [
        to_text(main)
        + "\nFired: decisions the rule fired on (select + sign of one draft once). Per 100: per"
        " 100 decisions. Accepted, Acted on (a later order-sign shows it done), Overridden, Not"
        " applic. (overridden as not applicable or data wrong: should not have fired), No resp.:"
        " % of shown firings; silent rules are never shown (n/a). [chart]: patient-view."
    ]
    denominators = decisions.get("denominators") or {}
    if denominators:
        parts.append(
            "Per 100: firings per 100 opioid order decisions "
            f"({denominators['opioid_order_decisions']} in the period; "
            f"{denominators['order_decisions']} order decisions in all) or per 100 "
            f"patient-view calls ({denominators['chart_reviews']})."
        )
    no_response = decisions.get("no_response") or {}
    if no_response:
        without = ", ".join(no_response["services_without_feedback"]) or "none"
        parts.append(
            "No response: the EHR sent no feedback at all for the service "
            f"({no_response['no_feedback_from_ehr']} firings; services: {without}), or it "
            f"sends feedback but this card was not answered ({no_response['not_answered']})."
        )
    concentration = decisions.get("concentration") or {}
    if concentration:
        fired, over = concentration["firings"], concentration["overrides"]
        parts.append(
            f"Prescribers (pseudonymous): {fired['prescribers']}; the top 10 % "
            f"({fired['top_prescribers']}) received {_pct(fired['top_share_pct'])} of firings; "
            f"the top 10 % of overriders ({over['top_prescribers']}) gave "
            f"{_pct(over['top_share_pct'])} of overrides."
        )
    classes = Table(
        "classes",
        "Overrides by reason class (count)",
        ("Rule", "Not applicable", "Clinical judgement", "Patient benefit", "Unclassified"),
        tuple(
            (_fit(short_label(r), name_width), *(c["count"] for c in r["reason_classes"]))
            for r in rows
            if r["overridden"]
        ),
    )
    parts.append(to_text(classes))
    markers = decisions.get("markers") or []
    parts.append(
        "Changes in the service: "
        + (
            "; ".join(f"{m['date']} {_marker_name(m)} {m['from']} -> {m['to']}" for m in markers)
            if markers
            else "none recorded in the period"
        )
    )
    weekly = Table(
        "weekly",
        "Weekly firings per 100 decisions (weeks with data; ! = change against the weeks before)",
        ("Week", "Rule", "Fired", "Decisions", "Per 100", "Change"),
        tuple(
            (
                p["week"],
                _fit(short_label(r), name_width),
                p["firings"],
                p["decisions"],
                "-" if p["rate"] is None else f"{p['rate']:.1f}",
                f"! {p['change']}" if p["change"] else "",
            )
            for r in rows
            for p in r["weekly"]
            if p["firings"]
        ),
    )
    parts.append(to_text(weekly))
    backtest = report.get("backtest")
    if backtest:
        parts.append(to_text(backtest_table(backtest)))
    text = "\n\n".join(parts)
    return "\n".join(_wrap(line, width) for line in text.splitlines())


def _marker_name(marker: Mapping[str, Any]) -> str:
    if marker["kind"] == "knowledge":
        return "knowledge version"
    return f"{marker['rule']} settings"


def backtest_table(backtest: Mapping[str, Any]) -> Table:
    return Table(
        "backtest",
        f"Backtest {backtest['folder']} beside live figures (per 100 decisions)",
        ("Rule", "Live fired", "Live per 100", "Backtest fired", "Backtest per 100"),
        tuple(
            (
                short_label(r),
                r["live_firings"],
                "-" if r["live_per_100"] is None else f"{r['live_per_100']:.1f}",
                "-" if r["backtest_firings"] is None else r["backtest_firings"],
                "-" if r["backtest_per_100"] is None else f"{r['backtest_per_100']:.1f}",
            )
            for r in backtest["rules"]
        ),
    )


def _wrap(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    import textwrap

    return "\n".join(textwrap.wrap(line, width, subsequent_indent="  "))
