"""Condition and non-drug therapy value sets (data/conditions.json, data/therapies.json).

ICD-10-CM codes are compared without the dot and in upper case, as real data carries both
forms (M54.50 / M5450); SNOMED codes exactly; names by whole-word patterns.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from cds_service.fhir.read import CPT, ICD10CM, SNOMED, codings, concept_key


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath(f"data/{name}").read_text("utf-8"))
    return data


def _pattern(phrases: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")", re.IGNORECASE)


class ConditionSets:
    def __init__(self, data: dict[str, Any]) -> None:
        self._icd = {k: tuple(v) for k, v in data["icd10_prefixes"].items()}
        self._icd_not = {k: tuple(v) for k, v in data.get("icd10_exclude_prefixes", {}).items()}
        self._snomed: dict[str, set[str]] = {}
        for category, codes in data["snomed"].items():
            for code in codes:
                self._snomed.setdefault(code, set()).add(category)
        self._text = {k: _pattern(v) for k, v in data["text_patterns"].items()}
        self._cache: dict[Any, frozenset[str]] = {}

    def categories(self, concept: Any) -> frozenset[str]:
        """Every category a Condition.code belongs to (low-back-pain, cancer, ...)."""
        if not isinstance(concept, dict):
            return frozenset()
        key = concept_key(concept)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found: set[str] = set()
        texts: list[str] = []
        for system, code, display in codings(concept):
            if display:
                texts.append(display)
            if system == ICD10CM or (system.endswith("icd-10") and code):
                normal = code.replace(".", "").upper()
                for category, prefixes in self._icd.items():
                    if normal.startswith(prefixes) and not normal.startswith(
                            self._icd_not.get(category, ("\0",))):
                        found.add(category)
            elif system == SNOMED:
                found |= self._snomed.get(code, set())
        text = concept.get("text")
        if isinstance(text, str):
            texts.append(text)
        joined = " ".join(texts)
        if joined:
            if self._text["low-back-pain"].search(joined):
                found.add("low-back-pain")
                if self._text["chronic"].search(joined):
                    found.add("chronic-low-back-pain")
        result = frozenset(found)
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[key] = result
        return result


class TherapySets:
    def __init__(self, data: dict[str, Any]) -> None:
        self.step_labels: dict[str, str] = data["steps"]
        self._snomed: dict[str, str] = data["snomed"]
        self._cpt: dict[str, str] = data["cpt"]
        self._text: dict[str, re.Pattern[str]] = {
            step: _pattern(p) for step, p in data["text_patterns"].items()}

    def step(self, concept: Any) -> str | None:
        """The first-line non-drug step a Procedure / ServiceRequest code records, if any."""
        if not isinstance(concept, dict):
            return None
        texts: list[str] = []
        for system, code, display in codings(concept):
            if system == SNOMED and code in self._snomed:
                return str(self._snomed[code])
            if system == CPT and code in self._cpt:  # codings() gives canonical systems
                return str(self._cpt[code])
            if display:
                texts.append(display)
        text = concept.get("text")
        if isinstance(text, str):
            texts.append(text)
        joined = " ".join(texts)
        for step, pattern in self._text.items():
            if joined and pattern.search(joined):
                return step
        return None


CONDITIONS = ConditionSets(_load("conditions.json"))
THERAPIES = TherapySets(_load("therapies.json"))
