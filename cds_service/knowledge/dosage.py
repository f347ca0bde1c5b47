"""What one dosageInstruction gives per day: the dose per administration (doseQuantity, or
the high end of doseRange), administrations per day (frequencyMax or frequency per period,
timeOfDay or when entries, a timing code such as BID or Q6H), maxDosePerPeriod for as-needed
orders; patches count the patches on (knowledge/dosing.py turns the amount into MME)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.fhir.read import JSON, as_list, codings
from cds_service.units import days_per_unit

_TIMING_CODES = {
    "QD": 1,
    "QOD": 0.5,
    "BID": 2,
    "TID": 3,
    "QID": 4,
    "AM": 1,
    "PM": 1,
    "QAM": 1,
    "QPM": 1,
    "QHS": 1,
    "HS": 1,
    "Q1H": 24,
    "Q2H": 12,
    "Q3H": 8,
    "Q4H": 6,
    "Q6H": 4,
    "Q8H": 3,
    "Q12H": 2,
    "Q24H": 1,
    "WK": 1 / 7,
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not 0 <= value <= 1e7:  # NaN, negative, absurd (a huge int cannot become a float)
        return None
    return float(value)


def _quantity(q: Any) -> tuple[float, str] | None:
    if not isinstance(q, dict):
        return None
    value = _number(q.get("value"))
    if value is None:
        return None
    unit = q.get("code") or q.get("unit") or ""
    return value, str(unit).strip().lower()


def administrations_per_day(dosage: JSON) -> float | None:
    timing = dosage.get("timing")
    if not isinstance(timing, dict):
        return None
    repeat = timing.get("repeat")
    if isinstance(repeat, dict):
        frequency = _number(repeat.get("frequencyMax")) or _number(repeat.get("frequency"))
        period = _number(repeat.get("period"))
        unit = repeat.get("periodUnit")
        days = days_per_unit(unit)
        if period and days:
            return (frequency or 1.0) / (period * days)
        times = as_list(repeat.get("timeOfDay"))
        if times:
            return float(len(times))
        when = as_list(repeat.get("when"))
        if when:
            return float(len(when))
    for _, code, _ in codings(timing.get("code")):
        if code.upper() in _TIMING_CODES:
            return float(_TIMING_CODES[code.upper()])
    return None


def _dose(dosage: JSON) -> tuple[float, str] | None:
    for dose_rate in as_list(dosage.get("doseAndRate")):
        if not isinstance(dose_rate, dict):
            continue
        quantity = _quantity(dose_rate.get("doseQuantity"))
        if quantity is not None:
            return quantity
        dose_range = dose_rate.get("doseRange")
        if isinstance(dose_range, dict):
            high = _quantity(dose_range.get("high")) or _quantity(dose_range.get("low"))
            if high is not None:
                return high
    return None


def _max_per_day(dosage: JSON) -> tuple[float, str] | None:
    for ratio in as_list(dosage.get("maxDosePerPeriod")):
        if not isinstance(ratio, dict):
            continue
        numerator = _quantity(ratio.get("numerator"))
        denominator = _quantity(ratio.get("denominator"))
        if numerator is None:
            continue
        days = 1.0
        if denominator is not None:
            value, unit = denominator
            per_unit = days_per_unit(unit)
            if per_unit is None or value <= 0:
                continue
            days = value * per_unit
        return numerator[0] / days, numerator[1]
    return None


@dataclass(frozen=True)
class DailyAmount:
    amount: float  # per day (or, for patches, applied at once)
    unit: str
    note: str


def daily_amount(dosage: JSON, transdermal: bool) -> DailyAmount | str:
    """The daily amount one dosage entry gives, or why it cannot be known."""
    dose = _dose(dosage)
    as_needed = dosage.get("asNeededBoolean") is True or isinstance(
        dosage.get("asNeededCodeableConcept"), dict
    )
    if transdermal and dose is not None:
        # A patch delivers its hourly rate whatever the change interval: count patches on.
        return DailyAmount(dose[0], dose[1], "")
    per_day = administrations_per_day(dosage)
    maximum = _max_per_day(dosage)
    if as_needed and maximum is not None:
        return DailyAmount(maximum[0], maximum[1], "as needed: counted at maxDosePerPeriod")
    if dose is None:
        if maximum is not None:
            return DailyAmount(maximum[0], maximum[1], "counted at maxDosePerPeriod")
        return "the dosage gives no dose quantity"
    if per_day is None:
        if maximum is not None:
            return DailyAmount(maximum[0], maximum[1], "counted at maxDosePerPeriod")
        return "the dosage gives no frequency"
    note = "as needed: counted at the most frequent scheduled use" if as_needed else ""
    return DailyAmount(dose[0] * per_day, dose[1], note)
