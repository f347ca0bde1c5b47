"""Charts for the /analytics page, rendered on the server as inline SVG (no script, no CDN).

Built with ElementTree, so every text and attribute is escaped. Each mark carries its figure
in data-* attributes and a <title> (the browser's tooltip, and what a screen reader reads),
and the tables under the charts hold the same numbers.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
OUTCOME_COLOURS = (
    ("accepted", "Accepted", "#009E73"),
    ("overridden", "Overridden", "#D55E00"),
    ("no_response", "No response", "#8C8C8C"),
)
WIDTH = 960  # the weekly chart spans the page
SMALL = 640  # the two charts side by side
FONT = 13


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    element = ET.SubElement(
        parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()}
    )
    if text is not None:
        element.text = text
    return element


def _svg(chart_id: str, width: int, title: str, description: str) -> ET.Element:
    svg = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {width} 100",
            "role": "img",
            "class": "chart",
            "id": chart_id,
            "aria-labelledby": f"{chart_id}-title {chart_id}-desc",
            "font-family": "system-ui, sans-serif",
            "font-size": str(FONT),
        },
    )
    _el(svg, "title", title, id=f"{chart_id}-title")
    _el(svg, "desc", description, id=f"{chart_id}-desc")
    return svg


def _markup(svg: ET.Element) -> str:
    return ET.tostring(svg, encoding="unicode", short_empty_elements=True)


def nice_step(maximum: float, ticks: int = 5) -> float:
    """A 1-2-5 step that divides 0..maximum into at most `ticks` intervals."""
    if maximum <= 0:
        return 1
    raw = maximum / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(f * power for f in (1.0, 2.0, 5.0, 10.0) if f * power >= raw)
    return max(1.0, step)


def _legend(
    svg: ET.Element, items: Sequence[tuple[str, str]], y: float, chart_width: int = WIDTH
) -> float:
    """Swatches and names in rows across the top; returns the height used."""
    x, row = 12.0, 0
    for name, colour in items:
        width = 28 + 7.2 * len(name)
        if x + width > chart_width - 12 and x > 12:
            x, row = 12.0, row + 1
        top = y + row * 22
        _el(svg, "rect", x=x, y=top, width=14, height=14, fill=colour, rx=2)
        _el(svg, "text", name, x=x + 20, y=top + 12, class_="legend")
        x += width + 16
    return (row + 1) * 22


def rule_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule, over its services: cards, outcomes, weekly cards (in report row order)."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = totals.setdefault(
            row["rule"],
            {
                "cards": 0,
                "accepted": 0,
                "overridden": 0,
                "no_response": 0,
                "mode": row["mode"],
                "weeks": defaultdict(int),
            },
        )
        for name in ("cards", "accepted", "overridden", "no_response"):
            total[name] += row[name]
        for week in row["weeks"]:
            total["weeks"][week["week"]] += week["cards"]
    return totals


def weekly_cards(rows: Sequence[Mapping[str, Any]], weeks: Sequence[str]) -> str:
    """Cards per ISO week, one line per rule (all services of the rule together)."""
    totals = rule_totals(rows)
    series = [(rule, [total["weeks"][w] for w in weeks]) for rule, total in totals.items()]
    colours = {rule: PALETTE[i % len(PALETTE)] for i, (rule, _) in enumerate(series)}
    svg = _svg(
        "chart-weeks",
        WIDTH,
        "Cards per week per rule",
        "Number of cards each rule issued (shown or silent) per ISO week.",
    )
    legend_height = _legend(svg, [(rule, colours[rule]) for rule, _ in series], 10)
    top, left, right, plot_height = 20 + legend_height, 52, 24, 220
    bottom = top + plot_height
    maximum = max([v for _, values in series for v in values] + [0])
    step = nice_step(maximum)
    y_max = step * max(1, math.ceil(maximum / step))
    plot = _el(svg, "g", class_="plot")
    for index in range(int(y_max / step) + 1):
        value = index * step
        y = bottom - plot_height * value / y_max
        _el(plot, "line", x1=left, x2=WIDTH - right, y1=y, y2=y, class_="grid", stroke="#d9d9d9")
        _el(plot, "text", f"{value:g}", x=left - 8, y=y + 4, text_anchor="end", class_="tick")
    span = WIDTH - left - right
    count = max(1, len(weeks))

    def x_of(i: int) -> float:
        return left + span * (i + 0.5) / count

    every = max(1, math.ceil(count / 12))
    for i, week in enumerate(weeks):
        if i % every == 0 or i == count - 1:
            _el(
                plot,
                "text",
                week.split("-")[1],
                x=x_of(i),
                y=bottom + 18,
                text_anchor="middle",
                class_="tick",
            )
    _el(
        plot,
        "text",
        "ISO week",
        x=left + span / 2,
        y=bottom + 36,
        text_anchor="middle",
        class_="axis-label",
    )
    for rule, values in series:
        group = _el(svg, "g", class_="series", data_rule=rule)
        points = " ".join(
            f"{x_of(i):.1f},{bottom - plot_height * v / y_max:.1f}" for i, v in enumerate(values)
        )
        _el(group, "polyline", points=points, fill="none", stroke=colours[rule], stroke_width=2.5)
        for i, value in enumerate(values):
            mark = _el(
                group,
                "circle",
                cx=f"{x_of(i):.1f}",
                cy=f"{bottom - plot_height * value / y_max:.1f}",
                r=4,
                fill=colours[rule],
                class_="point",
                data_rule=rule,
                data_week=weeks[i],
                data_cards=value,
            )
            _el(mark, "title", f"{rule}, {weeks[i]}: {value} cards")
    svg.set("viewBox", f"0 0 {WIDTH} {math.ceil(bottom + 48)}")
    if not series:
        _el(
            svg,
            "text",
            "No rules in this selection",
            x=WIDTH / 2,
            y=top + plot_height / 2,
            text_anchor="middle",
            class_="empty",
        )
    return _markup(svg)


# --- per decision: one chart per rule, labels wrapped (never cut) ---------------------------

DECISION_OUTCOMES = (
    ("accepted", "Accepted", "#009E73"),
    ("overridden", "Overridden", "#D55E00"),
    ("no_response", "No response", "#8C8C8C"),
)
CLASS_COLOURS = {
    "not-applicable": "#CC79A7",
    "clinical-judgement": "#E69F00",
    "patient-benefit": "#56B4E9",
    "unclassified": "#8C8C8C",
}
CHAR_WIDTH = 7.0  # px per character at FONT, a little generous


def _lines(text: str, chars: int) -> list[str]:
    """Words in lines of at most `chars` characters; a longer word gets a line of its own,
    split after its hyphens where it has them; nothing is cut off."""
    out: list[str] = []
    glued = False  # the last piece was the first part of a word split at a hyphen
    for word in text.split():
        pieces = [word]
        if len(word) > chars and "-" in word.strip("-"):
            parts = word.split("-")
            pieces = [p + "-" for p in parts[:-1]] + [parts[-1]]
        for index, piece in enumerate(pieces):
            joined = (out[-1] + piece) if glued else (out[-1] + " " + piece if out else piece)
            if out and len(joined) <= chars:
                out[-1] = joined
            else:
                out.append(piece)
            glued = index < len(pieces) - 1
    return out or [""]


def _text_block(parent: ET.Element, text: str, x: float, y: float, chars: int, **attrs: Any) -> int:
    """A multi-line label (tspans); returns the number of lines."""
    lines = _lines(text, chars)
    element = _el(parent, "text", None, x=x, y=y, **attrs)
    for index, line in enumerate(lines):
        _el(element, "tspan", line, x=x, dy=0 if index == 0 else 17)
    element.set("data-full", text)
    return len(lines)


def decision_outcomes(rows: Sequence[Mapping[str, Any]], chart_id: str = "chart-decisions") -> str:
    """Per rule row: shown firings split into accepted / overridden / no response; a silent
    rule's would-be firings as a hatched bar with its count."""
    label_chars, bar_width, width = 26, 300, SMALL
    label_width = int(label_chars * CHAR_WIDTH) + 10
    svg = _svg(
        chart_id,
        width,
        "Outcome of each rule's firings (per decision)",
        "For each rule, the share of its shown firings accepted, overridden or left without a "
        "response; silent rules show how often they would have fired.",
    )
    legend = _legend(svg, [(name, colour) for _, name, colour in DECISION_OUTCOMES], 10, width)
    y = 20 + legend
    for row in rows:
        label = f"{row['rule']} ({row['context']})"
        group = _el(
            svg,
            "g",
            class_="decision-row",
            data_rule=row["rule"],
            data_context=row["context"],
            data_firings=row["firings"],
            data_mode=row["mode"],
        )
        lines = _text_block(
            group, label, label_width - 10, y + 16, label_chars, text_anchor="end", class_="label"
        )
        height = max(30, 17 * lines + 10)
        shown = row["shown"]
        if row["mode"] == "silent" or not shown:
            _el(group, "rect", x=label_width, y=y + 3, width=bar_width, height=20, fill="#f0f0f0")
            note = (
                f"silent: {row['firings']} would-be firings"
                if row["silent"]
                else "no shown firings"
            )
            _el(group, "text", note, x=label_width + 8, y=y + 17, class_="empty")
        else:
            x = float(label_width)
            for key, name, colour in DECISION_OUTCOMES:
                count = row[key]
                part = bar_width * count / shown
                segment = _el(
                    group,
                    "rect",
                    x=f"{x:.2f}",
                    y=y + 3,
                    width=f"{part:.2f}",
                    height=20,
                    fill=colour,
                    class_="segment",
                    data_outcome=key,
                    data_count=count,
                )
                _el(segment, "title", f"{label}: {name.lower()} {count} of {shown}")
                if part >= 40:
                    _el(
                        group,
                        "text",
                        f"{100 * count / shown:.0f}%",
                        x=f"{x + part / 2:.2f}",
                        y=y + 17,
                        text_anchor="middle",
                        fill="#ffffff",
                        class_="share",
                    )
                x += part
            _el(
                group,
                "text",
                f"{shown} shown",
                x=label_width + bar_width + 8,
                y=y + 17,
                class_="total",
            )
        y += height
    if not rows:
        _el(svg, "text", "No rules in this selection", x=width / 2, y=y + 18, class_="empty")
        y += 30
    svg.set("viewBox", f"0 0 {width} {math.ceil(y + 8)}")
    return _markup(svg)


def rule_reasons(row: Mapping[str, Any], chart_id: str) -> str:
    """One rule's override reasons, ranked, coloured by class, labels wrapped in full."""
    reasons = row["reasons"]
    label_chars, bar_width, width = 34, 200, SMALL
    label_width = int(label_chars * CHAR_WIDTH) + 10
    svg = _svg(
        chart_id,
        width,
        f"Override reasons: {row['rule']} ({row['context']})",
        "Why clinicians overrode this rule, coloured by class: should not have fired, "
        "clinical judgement, patient-specific benefit.",
    )
    legend = _legend(
        svg,
        [
            ("Should not have fired", CLASS_COLOURS["not-applicable"]),
            ("Clinical judgement", CLASS_COLOURS["clinical-judgement"]),
            ("Patient benefit", CLASS_COLOURS["patient-benefit"]),
            ("Unclassified", CLASS_COLOURS["unclassified"]),
        ],
        10,
        width,
    )
    y = 20 + legend
    maximum = max([r["count"] for r in reasons] + [1])
    for reason in reasons:
        group = _el(
            svg,
            "g",
            class_="reason",
            data_code=reason["code"],
            data_class=reason["class"],
            data_count=reason["count"],
        )
        lines = _text_block(
            group,
            reason["display"],
            label_width - 10,
            y + 15,
            label_chars,
            text_anchor="end",
            class_="label",
        )
        length = bar_width * reason["count"] / maximum
        bar = _el(
            group,
            "rect",
            x=label_width,
            y=y + 3,
            width=f"{length:.2f}",
            height=18,
            fill=CLASS_COLOURS.get(reason["class"], CLASS_COLOURS["unclassified"]),
            class_="bar",
        )
        _el(bar, "title", f"{reason['display']}: {reason['count']}")
        _el(
            group,
            "text",
            str(reason["count"]),
            x=f"{label_width + length + 8:.2f}",
            y=y + 16,
            class_="count",
        )
        y += max(28, 17 * lines + 8)
    if not reasons:
        _el(svg, "text", "No overrides in this selection", x=12, y=y + 16, class_="empty")
        y += 28
    svg.set("viewBox", f"0 0 {width} {math.ceil(y + 8)}")
    return _markup(svg)


def firing_rate(row: Mapping[str, Any], markers: Sequence[Mapping[str, Any]], chart_id: str) -> str:
    """One rule's weekly firings per 100 decisions (weeks with data), changes flagged, and
    vertical markers where the knowledge version or this rule's settings changed."""
    series = row["weekly"]
    width, left, right, top, plot_height = SMALL, 48, 16, 34, 150
    svg = _svg(
        chart_id,
        width,
        f"Weekly firing rate: {row['rule']} ({row['context']})",
        "Firings per 100 decisions per ISO week with data; a ringed point differs from the "
        "previous weeks; dashed lines mark knowledge or settings changes.",
    )
    _legend(svg, [("Firings per 100", PALETTE[0]), ("Change flagged", "#D55E00")], 6, width)
    bottom = top + plot_height
    rates = [p["rate"] for p in series if p["rate"] is not None]
    step = nice_step(max([*rates, 0.0]))
    y_max = step * max(1, math.ceil(max([*rates, 0.0]) / step))
    for index in range(int(y_max / step) + 1):
        value = index * step
        y = bottom - plot_height * value / y_max
        _el(svg, "line", x1=left, x2=width - right, y1=y, y2=y, stroke="#d9d9d9", class_="grid")
        _el(svg, "text", f"{value:g}", x=left - 6, y=y + 4, text_anchor="end", class_="tick")
    span = width - left - right
    count = max(1, len(series))

    def x_of(i: int) -> float:
        return left + span * (i + 0.5) / count

    weeks = [p["week"] for p in series]
    relevant = [m for m in markers if m["kind"] == "knowledge" or m["rule"] == row["rule"]]
    for marker in relevant:
        if marker["week"] not in weeks:
            continue
        x = x_of(weeks.index(marker["week"]))
        line = _el(
            svg,
            "line",
            x1=x,
            x2=x,
            y1=top - 4,
            y2=bottom,
            stroke="#000000",
            stroke_dasharray="4 3",
            class_="marker",
            data_kind=marker["kind"],
            data_week=marker["week"],
            data_date=marker["date"],
        )
        what = "knowledge version" if marker["kind"] == "knowledge" else "settings"
        _el(line, "title", f"{marker['date']}: {what} {marker['from']} -> {marker['to']}")
        _el(
            svg,
            "text",
            "K" if marker["kind"] == "knowledge" else "S",
            x=x + 3,
            y=top + 6,
            class_="marker-label",
        )
    every = max(1, math.ceil(count / 10))
    for i, week in enumerate(weeks):
        if i % every == 0 or i == count - 1:
            _el(
                svg,
                "text",
                week.split("-")[1],
                x=x_of(i),
                y=bottom + 16,
                text_anchor="middle",
                class_="tick",
            )
    points = [
        (x_of(i), bottom - plot_height * p["rate"] / y_max)
        for i, p in enumerate(series)
        if p["rate"] is not None
    ]
    if points:
        _el(
            svg,
            "polyline",
            points=" ".join(f"{x:.1f},{y:.1f}" for x, y in points),
            fill="none",
            stroke=PALETTE[0],
            stroke_width=2.5,
        )
    for i, point in enumerate(series):
        if point["rate"] is None:
            continue
        y = bottom - plot_height * point["rate"] / y_max
        mark = _el(
            svg,
            "circle",
            cx=f"{x_of(i):.1f}",
            cy=f"{y:.1f}",
            r=6 if point["change"] else 4,
            fill=PALETTE[0],
            stroke="#D55E00" if point["change"] else PALETTE[0],
            stroke_width=3 if point["change"] else 1,
            class_="rate" + (" flagged" if point["change"] else ""),
            data_week=point["week"],
            data_rate=point["rate"],
            data_firings=point["firings"],
            data_decisions=point["decisions"],
            data_change=point["change"] or "",
        )
        _el(
            mark,
            "title",
            f"{point['week']}: {point['rate']} per 100 ({point['firings']} of "
            f"{point['decisions']})" + (f", {point['change']}" if point["change"] else ""),
        )
    if not series:
        _el(
            svg,
            "text",
            "No weeks with data",
            x=width / 2,
            y=top + 60,
            text_anchor="middle",
            class_="empty",
        )
    svg.set("viewBox", f"0 0 {width} {bottom + 26}")
    return _markup(svg)
