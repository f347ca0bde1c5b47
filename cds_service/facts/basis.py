"""Why a medication counts as current, as a card line ("basis-*" keys in cards/lines.json)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cds_service.facts.dates import format_day
from cds_service.findings import Line
from cds_service.settings import MedicationActivity


def _count(value: float) -> str:
    return f"{value:g}"


def _until(day: dt.date | None) -> str:
    return format_day(day) if day else ""


def basis_line(basis: tuple[str, tuple[Any, ...]], activity: MedicationActivity) -> Line:
    key, raw = basis
    grace = str(activity.grace_days)
    if key in ("basis-validity", "basis-statement-period"):
        return Line(key, {"until": _until(raw[0])})
    if key == "basis-supply":
        start, supply, until = raw
        return Line(
            key,
            {
                "supply_days": _count(round(supply, 1)),
                "start": format_day(start),
                "grace_days": grace,
                "until": _until(until),
            },
        )
    if key == "basis-supply-refills":
        start, supply, until, fills = raw
        return Line(
            key,
            {
                "supply_days": _count(round(supply, 1)),
                "start": format_day(start),
                "grace_days": grace,
                "until": _until(until),
                "fills": str(fills),
            },
        )
    if key == "basis-undated":
        start, until = raw
        return Line(
            key,
            {
                "start": format_day(start),
                "until": _until(until),
                "days": str(activity.undated_lookback_days),
            },
        )
    if key == "basis-dispensed-assumed":
        start, until = raw
        return Line(
            key,
            {
                "start": format_day(start),
                "until": _until(until),
                "days": str(activity.assumed_supply_days),
            },
        )
    if key == "basis-dispensed":
        start, supply, until = raw
        return Line(
            key,
            {
                "supply_days": _count(round(supply, 1)),
                "start": format_day(start),
                "grace_days": grace,
                "until": _until(until),
            },
        )
    # basis-statement-confirmed
    return Line(
        key,
        {"confirmed": format_day(raw[0]), "days": str(activity.statement_confirmed_within_days)},
    )
