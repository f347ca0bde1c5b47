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
