"""Daily dose and morphine milligram equivalents (MME) of an opioid order.

MME/day = daily dose of each opioid ingredient in mg x its conversion factor (CDC 2022 by
default; the CDC 2016 table is selectable). Fentanyl patches: 2.4 x the patch strength in
mcg/h, whatever the change interval. Buprenorphine is never counted. When a dose cannot be
computed the answer is "unknown" with the reason: never a silent 0 (the reference CQL scores
products outside its table as 0 and once computed fentanyl patches three times too high).

Read from each dosage (knowledge/dosage.py): dose per administration: doseQuantity, or the
high end of doseRange. Administrations per day:
frequencyMax or frequency per period (periodUnit s, min, h, d, wk, mo, a), else the count of
timeOfDay or when entries, else a timing code (BID, Q6H...). As-needed orders use
maxDosePerPeriod when given, else the scheduled maximum. Several dosageInstruction entries
with different `sequence` values are consecutive phases (the highest phase counts); entries
sharing a sequence, or with none, run concurrently (they add up).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cds_service.fhir.read import JSON, as_list
from cds_service.knowledge.classifier import (
    ANTITUSSIVE,
    MOUD,
    OPIOID,
    Classification,
    Ingredient,
)
from cds_service.knowledge.dosage import (
    DailyAmount,
    administrations_per_day,
    daily_amount,
)

_COUNT_UNITS = frozenset(
    {
        "tablet",
        "tablets",
        "tab",
        "tabs",
        "{tablet}",
        "{tbl}",
        "tbl",
        "capsule",
        "capsules",
        "cap",
        "caps",
        "{capsule}",
        "{cap}",
        "{pill}",
        "pill",
        "pills",
        "each",
        "ea",
        "{each}",
        "1",
        "{unit}",
        "unit",
        "units",
        "patch",
        "patches",
        "{patch}",
        "system",
        "{system}",
        "film",
        "films",
        "{film}",
        "suppository",
        "suppositories",
        "{suppository}",
        "lozenge",
        "troche",
        "spray",
        "sprays",
        "{spray}",
        "actuation",
        "{actuat}",
        "actuat",
        "puff",
        "{puff}",
        "dose",
        "{dose}",
    }
)
_MASS_MG = {
    "mg": 1.0,
    "milligram": 1.0,
    "milligrams": 1.0,
    "mcg": 0.001,
    "ug": 0.001,
    "microgram": 0.001,
    "micrograms": 0.001,
    "g": 1000.0,
    "gram": 1000.0,
}
_VOLUME_ML = {"ml": 1.0, "milliliter": 1.0, "milliliters": 1.0, "l": 1000.0, "cc": 1.0}
_PER_HOUR_MCG = {"ug/h": 1.0, "mcg/h": 1.0, "mcg/hr": 1.0, "ug/hr": 1.0, "mg/h": 1000.0}


@dataclass(frozen=True)
class IngredientDose:
    name: str
    daily_dose_mg: float | None
    factor: float | None
    factor_basis: str  # "mg/day", or "mcg/h" for fentanyl patches
    mme_per_day: float | None
    dose_mcg_per_hour: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "daily_dose_mg": _round(self.daily_dose_mg),
            "factor": self.factor,
            "factor_basis": self.factor_basis,
            "mme_per_day": _round(self.mme_per_day),
        }
        if self.dose_mcg_per_hour is not None:
            out["dose_mcg_per_hour"] = _round(self.dose_mcg_per_hour)
        return out


@dataclass(frozen=True)
class MmeResult:
    mme_per_day: float | None  # None: unknown (see reason) or not counted (excluded)
    reason: str  # why unknown / excluded, or how an as-needed dose was counted
    ingredients: tuple[IngredientDose, ...] = ()
    excluded: bool = False  # not an opioid analgesic, or buprenorphine: outside MME totals

    def as_json(self) -> dict[str, Any]:
        return {
            "mme_per_day": _round(self.mme_per_day),
            "reason": self.reason or None,
            "excluded": self.excluded,
            "ingredients": [i.as_json() for i in self.ingredients],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round_mme(value)


def round_mme(value: float) -> float:
    """The one rounding of MME/day figures (an order, a total), so the two always agree."""
    return round(value, 2)


class MmeTables:
    def __init__(self, data: dict[str, Any]) -> None:
        self.tables: dict[str, dict[str, Any]] = data["tables"]
        self.never_counted = frozenset(data["never_counted"])


def _factor(name: str, daily_mg: float | None, tables: MmeTables, table: str) -> float | None:
    factors = tables.tables[table]
    if name in factors:
        return float(factors[name])
    if name == "methadone" and "methadone-by-daily-dose" in factors and daily_mg is not None:
        for ceiling, factor in factors["methadone-by-daily-dose"]:
            if ceiling is None or daily_mg <= ceiling:
                return float(factor)
    return None


def _ingredient_mg(amount: DailyAmount, ingredient: Ingredient, opioid_count: int) -> float | str:
    """Daily mg of one ingredient from a daily amount in the order's dose unit."""
    unit = amount.unit
    if unit in _MASS_MG:
        if opioid_count > 1:
            return "a dose in mass units is ambiguous for a product with two opioids"
        return amount.amount * _MASS_MG[unit]
    strength, s_unit = ingredient.strength_value, ingredient.strength_unit
    if strength is None or s_unit is None:
        return (
            f"the strength of {ingredient.name} is not known (no strength in the code, "
            "name or Medication)"
        )
    if unit in _COUNT_UNITS or unit == "":
        if s_unit in {"mg", "mcg", "mg/actuat", "mcg/actuat"}:
            per_unit = strength * (0.001 if s_unit.startswith("mcg") else 1.0)
            return amount.amount * per_unit
        return f"a dose counted in units does not fit a strength in {s_unit}"
    if unit in _VOLUME_ML:
        if s_unit in {"mg/mL", "mcg/mL"}:
            per_ml = strength * (0.001 if s_unit.startswith("mcg") else 1.0)
            return amount.amount * _VOLUME_ML[unit] * per_ml
        return f"a dose in mL needs a strength per mL, not {s_unit}"
    return f"the dose unit '{unit}' cannot be converted to mg"


def _fentanyl(
    amount: DailyAmount,
    ingredient: Ingredient,
    classification: Classification,
    tables: MmeTables,
    table: str,
) -> IngredientDose | str:
    factor = _factor("fentanyl-transdermal", None, tables, table)
    per_hour_strength = ingredient.strength_unit in {"mg/h", "mcg/h"}
    if (
        classification.route != "transdermal"
        and not per_hour_strength
        and amount.unit not in _PER_HOUR_MCG
    ):
        return "no CDC conversion factor for fentanyl other than transdermal patches"
    if factor is None:
        return f"no factor for transdermal fentanyl in the {table} table"
    if amount.unit in _PER_HOUR_MCG:
        mcg_h = amount.amount * _PER_HOUR_MCG[amount.unit]
    elif amount.unit in _COUNT_UNITS or amount.unit == "":
        if not per_hour_strength or ingredient.strength_value is None:
            return "the patch strength (mcg/h) is not known"
        rate = ingredient.strength_value * (1000.0 if ingredient.strength_unit == "mg/h" else 1.0)
        mcg_h = amount.amount * rate
    else:
        return f"the dose unit '{amount.unit}' does not fit a fentanyl patch"
    return IngredientDose("fentanyl", mcg_h * 24 / 1000, factor, "mcg/h", mcg_h * factor, mcg_h)


def mme_for(
    resource: JSON, classification: Classification, tables: MmeTables, table: str = "cdc-2022"
) -> MmeResult:
    """MME/day of one MedicationRequest (or MedicationStatement: its `dosage`)."""
    if table not in tables.tables:
        raise ValueError(f"unknown MME table {table!r}; choose one of {', '.join(tables.tables)}")
    if classification.has(MOUD) and not classification.has(OPIOID):
        return MmeResult(
            None, "buprenorphine for opioid use disorder is not converted to MME", excluded=True
        )
    if classification.has(ANTITUSSIVE) and not classification.has(OPIOID):
        return MmeResult(
            None, "an opioid cough product is not counted as a pain opioid", excluded=True
        )
    if not classification.has(OPIOID):
        reason = classification.unclassified_reason or "not an opioid analgesic"
        return MmeResult(None, reason, excluded=True)
    opioids = [i for i in classification.ingredients if OPIOID in i.classes]
    counted = [i for i in opioids if i.name not in tables.never_counted]
    if not counted:
        return MmeResult(None, "buprenorphine is never converted to MME (CDC 2022)", excluded=True)
    dosages = [
        d
        for d in as_list(resource.get("dosageInstruction") or resource.get("dosage"))
        if isinstance(d, dict)
    ]
    if not dosages:
        return MmeResult(None, "MME unknown: the order has no dosage instructions")
    phases: dict[Any, list[JSON]] = defaultdict(list)
    for dosage in dosages:
        sequence = dosage.get("sequence")
        phases[
            sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None
        ].append(dosage)
    transdermal = classification.route == "transdermal"
    best: tuple[float, list[IngredientDose], list[str]] | None = None
    for phase in phases.values():
        totals: dict[str, IngredientDose] = {}
        notes: list[str] = []
        for dosage in phase:
            amount = daily_amount(dosage, transdermal)
            if isinstance(amount, str):
                return MmeResult(None, f"MME unknown: {amount}")
            if amount.amount <= 0:  # never silently counted as 0 (clinical brief 5)
                return MmeResult(None, "MME unknown: the dose is zero")
            if amount.note:
                notes.append(amount.note)
            for ingredient in counted:
                dose = _dose_for(ingredient, amount, classification, len(counted), tables, table)
                if isinstance(dose, str):
                    return MmeResult(None, f"MME unknown: {dose}")
                previous = totals.get(ingredient.name)
                if (
                    previous is not None
                    and previous.mme_per_day is not None
                    and dose.mme_per_day is not None
                ):
                    dose = IngredientDose(
                        dose.name,
                        (previous.daily_dose_mg or 0) + (dose.daily_dose_mg or 0),
                        dose.factor,
                        dose.factor_basis,
                        previous.mme_per_day + dose.mme_per_day,
                        None
                        if dose.dose_mcg_per_hour is None
                        else (previous.dose_mcg_per_hour or 0) + dose.dose_mcg_per_hour,
                    )
                totals[ingredient.name] = dose
        phase_total = sum(d.mme_per_day or 0 for d in totals.values())
        if best is None or phase_total > best[0]:
            best = (phase_total, list(totals.values()), notes)
    if best is None:  # every order has at least one dosage phase (checked above)
        return MmeResult(None, "MME unknown: the order has no dosage instructions")
    total, doses, notes = best
    if len(phases) > 1:
        notes.append("several dosage phases: the highest phase is counted")
    if round_mme(total) <= 0:
        return MmeResult(None, "MME unknown: the dose rounds to 0 MME/day")
    return MmeResult(round_mme(total), "; ".join(dict.fromkeys(notes)), tuple(doses))


def _dose_for(
    ingredient: Ingredient,
    amount: DailyAmount,
    classification: Classification,
    opioid_count: int,
    tables: MmeTables,
    table: str,
) -> IngredientDose | str:
    if ingredient.name == "fentanyl":
        return _fentanyl(amount, ingredient, classification, tables, table)
    daily_mg = _ingredient_mg(amount, ingredient, opioid_count)
    if isinstance(daily_mg, str):
        return daily_mg
    factor = _factor(ingredient.name, daily_mg, tables, table)
    if factor is None:
        return f"no conversion factor for {ingredient.name} in the {table} table"
    return IngredientDose(ingredient.name, daily_mg, factor, "mg/day", daily_mg * factor)


@dataclass(frozen=True)
class MmeTotal:
    mme_per_day: float  # the sum of the orders whose MME is known
    complete: bool  # False when some opioid order's MME is unknown
    unknown_reasons: tuple[str, ...]


def total_mme(results: list[MmeResult]) -> MmeTotal:
    known = sum(r.mme_per_day for r in results if r.mme_per_day is not None)
    unknown = tuple(r.reason for r in results if r.mme_per_day is None and not r.excluded)
    return MmeTotal(round_mme(known), not unknown, unknown)


__all__ = [
    "IngredientDose",
    "MmeResult",
    "MmeTables",
    "MmeTotal",
    "administrations_per_day",
    "mme_for",
    "total_mme",
]
