"""Units of time as real data spells them (UCUM / FHIR UnitsOfTime codes and English words),
in days: the one table for supply durations, dosing periods and max-dose periods."""

from __future__ import annotations

from typing import Any

# days per unit
DAYS_PER_UNIT: dict[str, float] = {
    "s": 1 / 86400,
    "sec": 1 / 86400,
    "second": 1 / 86400,
    "seconds": 1 / 86400,
    "min": 1 / 1440,
    "minute": 1 / 1440,
    "minutes": 1 / 1440,
    "h": 1 / 24,
    "hr": 1 / 24,
    "hour": 1 / 24,
    "hours": 1 / 24,
    "d": 1.0,
    "day": 1.0,
    "days": 1.0,
    "wk": 7.0,
    "week": 7.0,
    "weeks": 7.0,
    "mo": 30.0,
    "month": 30.0,
    "months": 30.0,
    "a": 365.0,
    "yr": 365.0,
    "year": 365.0,
    "years": 365.0,
}


def days_per_unit(unit: Any) -> float | None:
    """Days in one `unit` of time (case and spacing ignored), or None if it is not one."""
    if not isinstance(unit, str):
        return None
    factor = DAYS_PER_UNIT.get(unit)
    return factor if factor is not None else DAYS_PER_UNIT.get(unit.strip().lower())


def days_in(quantity: Any) -> float | None:
    """A Duration / Quantity as days; None when absent, negative, not finite or of an unknown
    unit (a unitless supply duration is read as days, as EHRs mean it)."""
    if not isinstance(quantity, dict):
        return None
    value = quantity.get("value")
    # `not 0 <= value < 1e6` also refuses NaN, infinities and ints too large for a float
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        return None
    unit = quantity.get("code") or quantity.get("unit") or "d"
    # a unit spelled as the table spells it is looked up at once (the hot path: every order)
    factor = DAYS_PER_UNIT.get(unit) if isinstance(unit, str) else None
    if factor is None:
        factor = days_per_unit(unit)
    return None if factor is None else float(value) * factor
