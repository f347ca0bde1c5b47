"""Strengths as medication names and FHIR Ratios write them ("5 MG", "10-325 mg",
"0.025 MG/HR", "5 mg/5 mL"), normalised to mg, mcg, mg/mL, mcg/mL, mg/h, mcg/h or mg/actuat."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cds_service.fhir.read import codings
from cds_service.knowledge.classification import Ingredient

WORD = re.compile(r"[a-z0-9]+")
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_STRENGTH = re.compile(
    rf"(?<![\w.])(?P<nums>{_NUM}(?:\s*[-/]\s*{_NUM})*)\s*"
    r"(?P<unit>mg/ml|mcg/ml|ug/ml|mg/hr|mcg/hr|ug/hr|mg/h|mcg/h|ug/h|mcg/hour|mg/actuat|"
    r"mcg/actuat|mg|mcg|ug|g)(?![a-z])"
    rf"(?:\s*/\s*(?P<per>{_NUM})?\s*ml\b)?"
)
BARE_COMBO = re.compile(rf"(?<![\w.])(?P<nums>{_NUM}(?:\s*[-/]\s*{_NUM})+)(?![\w.])")
COMPONENT_SPLIT = re.compile(r"\s+/\s+(?=[a-z])")
_UNITS = {
    "mg": "mg",
    "mcg": "mcg",
    "ug": "mcg",
    "g": "mg",
    "mg/ml": "mg/mL",
    "mcg/ml": "mcg/mL",
    "ug/ml": "mcg/mL",
    "mg/hr": "mg/h",
    "mg/h": "mg/h",
    "mcg/hr": "mcg/h",
    "ug/hr": "mcg/h",
    "mcg/h": "mcg/h",
    "ug/h": "mcg/h",
    "mcg/hour": "mcg/h",
    "mg/actuat": "mg/actuat",
    "mcg/actuat": "mcg/actuat",
}


def disagree(by_code: tuple[Ingredient, ...], by_text: tuple[Ingredient, ...]) -> bool:
    code_names = {i.name: i for i in by_code}
    if {i.name for i in by_text} - set(code_names):
        return True
    for ingredient in by_text:
        known = code_names[ingredient.name]
        if (
            ingredient.strength_value is not None
            and known.strength_value is not None
            and ingredient.strength_unit == known.strength_unit
            and abs(ingredient.strength_value - known.strength_value) > 1e-9
        ):
            return True
    return False


def strength_groups(lower: str) -> list[tuple[list[float], str]]:
    groups = []
    for match in _STRENGTH.finditer(lower):
        values = [float(v) for v in re.split(r"\s*[-/]\s*", match.group("nums"))]
        raw_unit = match.group("unit")
        unit = _UNITS[raw_unit]
        if raw_unit == "g":
            values = [v * 1000 for v in values]
        per = match.group("per")
        if per is not None or (match.group(0).rstrip().endswith("ml") and unit in {"mg", "mcg"}):
            volume = float(per) if per else 1.0
            if volume > 0:
                values = [v / volume for v in values]
                unit = f"{unit}/mL"
        groups.append((values, unit))
    return groups


def concept_words(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    parts = [concept.get("text")] + [d for _, _, d in codings(concept)]
    return " ".join(p for p in parts if isinstance(p, str))


def ratio_strength(ratio: Any) -> tuple[float | None, str | None]:
    """A Medication.ingredient.strength Ratio as (value, unit): 5 mg/1 tablet -> (5, mg);
    10 mg/5 mL -> (2, mg/mL)."""
    if not isinstance(ratio, dict):
        return None, None
    numerator = ratio.get("numerator")
    denominator = ratio.get("denominator")
    if not isinstance(numerator, dict):
        return None, None
    value = numerator.get("value")
    unit = str(numerator.get("code") or numerator.get("unit") or "").lower()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or unit not in _UNITS:
        return None, None
    out_unit = _UNITS[unit]
    amount = float(value) * (1000 if unit == "g" else 1)
    if isinstance(denominator, dict):
        d_value = denominator.get("value", 1)
        d_unit = str(denominator.get("code") or denominator.get("unit") or "").lower()
        if isinstance(d_value, (int, float)) and not isinstance(d_value, bool) and d_value > 0:
            if d_unit in {"ml", "milliliter"}:
                return amount / d_value, f"{out_unit}/mL"
            if d_unit in {"h", "hr", "hour"}:
                return amount / d_value, f"{out_unit}/h"
            return amount / d_value, out_unit
    return amount, out_unit


def assign_strengths(
    names: list[str], lower: str, names_in: Callable[[str], list[str]]
) -> dict[str, tuple[float, str]]:
    """Each named ingredient's strength in a lower-case medication name: per "/" component
    ("acetaminophen 325 MG / oxycodone hydrochloride 5 MG"), else in order ("10-325 mg")."""
    strengths: dict[str, tuple[float, str]] = {}
    components = COMPONENT_SPLIT.split(lower)
    if len(components) > 1:
        for component in components:
            # a bracketed brand ("[Cheracol with Codeine]") names no component's strength
            comp_names = names_in(re.sub(r"\[[^\]]*\]", " ", component))
            groups = strength_groups(component)
            if len(comp_names) == 1 and len(groups) >= 1 and len(groups[0][0]) == 1:
                value, unit = groups[0][0][0], groups[0][1]
                previous = strengths.get(comp_names[0])
                if previous is not None and previous[1] == unit:
                    # two salts of one ingredient (Percodan: oxycodone hydrochloride 4.5 MG
                    # / oxycodone terephthalate 0.38 MG) add up
                    value += previous[0]
                strengths[comp_names[0]] = (round(value, 6), unit)
    by_component = dict(strengths)
    if len(strengths) < len(names):
        groups = strength_groups(lower)
        if len(groups) == 1 and len(groups[0][0]) == len(names):
            values, unit = groups[0]
            strengths = {n: (v, unit) for n, v in zip(names, values, strict=True)}
        elif len(groups) == len(names) and all(len(g[0]) == 1 for g in groups):
            strengths = {n: (g[0][0], g[1]) for n, g in zip(names, groups, strict=True)}
        elif not groups and len(names) > 1:
            bare = BARE_COMBO.search(lower)
            if bare:
                values = [float(v) for v in re.split(r"\s*[-/]\s*", bare.group("nums"))]
                if len(values) == len(names):
                    strengths = {n: (v, "mg") for n, v in zip(names, values, strict=True)}
        strengths.update(by_component)  # a component's own strength wins
    return strengths
