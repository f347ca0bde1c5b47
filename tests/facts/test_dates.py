"""Dates as cards print them."""

from __future__ import annotations

import datetime as dt

from cds_service.facts.dates import add_days, format_day


def test_a_card_date_is_day_english_month_abbreviation_year() -> None:
    """format_day prints the day without padding, the English month abbreviation and the year."""
    assert format_day(dt.date(2026, 11, 15)) == "15 Nov 2026"
    assert format_day(dt.date(2027, 1, 3)) == "3 Jan 2027"
    months = [format_day(dt.date(2026, m, 1)).split()[1] for m in range(1, 13)]
    assert months == [
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
    ]


def _timedelta_sum(start: dt.date, days: float) -> dt.date | None:
    """The definition add_days keeps: date + timedelta, capped at 36,500 days, None out of range."""
    try:
        return start + dt.timedelta(days=min(days, 36_500))
    except (OverflowError, ValueError):
        return None


def test_adding_days_gives_what_date_plus_timedelta_gives() -> None:
    """add_days (day ordinals for whole days) equals date + timedelta for whole, fractional,
    capped, negative, non-finite and out-of-calendar amounts."""
    starts = [dt.date(1, 1, 1), dt.date(1, 1, 5), dt.date(2024, 2, 29), dt.date(9999, 12, 31)]
    amounts: list[float] = [0, 1, 30, 30.0, 90.0, 36_500, 36_501, 1e6, -1, -5, -1e12, 1e300]
    amounts += [2.5, -0.5, 1 / 24, 0.9999999999999, 1.0000000000001, 29.999999999999996]
    amounts += [float("nan"), float("inf"), -float("inf"), 10**20]
    for start in starts:
        for days in amounts:
            assert add_days(start, days) == _timedelta_sum(start, days), (start, days)
    assert add_days(dt.date(2026, 1, 31), 30) == dt.date(2026, 3, 2)
    assert add_days(dt.date(9999, 12, 1), 31) is None
