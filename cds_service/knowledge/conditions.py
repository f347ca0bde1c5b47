"""Condition and non-drug therapy value sets (data/conditions.json, data/therapies.json).

ICD-10-CM codes are compared without the dot and in upper case, as real data carries both
forms (M54.50 / M5450); SNOMED codes exactly; names by whole-word patterns.
"""

from __future__ import annotations

import re
from typing import Any

from cds_service.fhir.read import ICD10CM, SNOMED, codings
from cds_service.knowledge.bounded import BoundedCache, clip_concept, concept_digest

CPT = "http://www.ama-assn.org/go/cpt"
_CPT_ALIASES = {CPT, "urn:oid:2.16.840.1.113883.6.12", "http://www.ama-assn.org/go/cpt/"}


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
        # Set by Knowledge.load from Config (CDS_MAX_NAME_CHARS, CDS_CACHE_MAX_BYTES).
        self.max_name_chars = 512
        self._cache: BoundedCache[bytes, frozenset[str]] = BoundedCache(8 * 1024 * 1024)

    def bound_memory(self, max_name_chars: int, cache_max_bytes: int) -> None:
        """Clip names to `max_name_chars` and keep at most `cache_max_bytes` of results."""
        self.max_name_chars = max_name_chars
        self._cache = BoundedCache(cache_max_bytes)

    def categories(self, concept: Any) -> frozenset[str]:
        """Every category a Condition.code belongs to (low-back-pain, cancer, ...)."""
        if not isinstance(concept, dict):
            return frozenset()
        concept = clip_concept(concept, self.max_name_chars)  # bounded text, bounded key
        key = concept_digest(concept)
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
        self._cache.put(key, result)
        return result


class TherapySets:
    def __init__(self, data: dict[str, Any]) -> None:
        self.step_labels: dict[str, str] = data["steps"]
        self._snomed: dict[str, str] = data["snomed"]
        self._cpt: dict[str, str] = data["cpt"]
        self._text: dict[str, re.Pattern[str]] = {
            step: _pattern(p) for step, p in data["text_patterns"].items()}
        self.max_name_chars = 512  # CDS_MAX_NAME_CHARS, set in create_app

    def step(self, concept: Any) -> str | None:
        """The first-line non-drug step a Procedure / ServiceRequest code records, if any."""
        if not isinstance(concept, dict):
            return None
        concept = clip_concept(concept, self.max_name_chars)
        texts: list[str] = []
        for system, code, display in codings(concept):
            if system == SNOMED and code in self._snomed:
                return str(self._snomed[code])
            if system in _CPT_ALIASES and code in self._cpt:
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

