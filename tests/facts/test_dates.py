"""Dates as cards print them."""

from __future__ import annotations

import datetime as dt

from cds_service.facts.dates import format_day


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
