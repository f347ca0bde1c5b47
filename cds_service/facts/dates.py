"""Dates as the facts and the cards use them."""

from __future__ import annotations

import datetime as dt

from cds_service.fhir.read import JSON, parse_date

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_day(day: dt.date) -> str:
    """A date as clinicians read it in a card: 15 Nov 2026 (English month abbreviations,
    whatever the process locale: the cards are English)."""
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


# at most this many days are added (a supply of a century is a data error, not a date)
_MAX_ADDED_DAYS = 36_500
_LAST_ORDINAL = dt.date.max.toordinal()


def add_days(start: dt.date, days: float) -> dt.date | None:
    """`start` plus `days` (at most 100 years; a fraction of a day is dropped, as date +
    timedelta drops it); None when the result falls outside the calendar. A whole number of
    days (every supply in practice) is added as day ordinals, cheaper than a timedelta."""
    if days > _MAX_ADDED_DAYS:
        days = _MAX_ADDED_DAYS
    try:
        whole = int(days)
        if whole != days:  # a fraction: the timedelta's own rounding decides
            return start + dt.timedelta(days=days)
    except (OverflowError, ValueError):  # NaN, infinite, or out of the calendar
        return None
    day = start.toordinal() + whole
    return dt.date.fromordinal(day) if 0 < day <= _LAST_ORDINAL else None


def add_years(day: dt.date, years: float) -> dt.date | None:
    try:
        return day.replace(year=day.year + int(years))
    except ValueError:
        try:
            return day.replace(year=day.year + int(years), day=28)
        except ValueError:
            return None


def period_dates(resource: JSON, *elements: str) -> tuple[dt.date | None, dt.date | None]:
    for element in elements:
        value = resource.get(element)
        if isinstance(value, dict):
            return parse_date(value.get("start")), parse_date(value.get("end"))
        day = parse_date(value)
        if day is not None:
            return day, day
    return None, None


def resource_date(resource: JSON) -> dt.date | None:
    for element in ("performedDateTime", "occurrenceDateTime", "authoredOn"):
        day = parse_date(resource.get(element))
        if day is not None:
            return day
    start, end = period_dates(resource, "performedPeriod", "occurrencePeriod")
    return start or end
