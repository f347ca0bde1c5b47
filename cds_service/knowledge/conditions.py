"""Condition categories (low back pain, chronic pain, and the exclusions: cancer, sickle cell
disease, hospice / palliative / end-of-life care, opioid use disorder) and non-drug therapy
steps, recognised in any CodeableConcept: Condition.code, Procedure.code, ServiceRequest.code,
Encounter.type / reasonCode, CarePlan.category / activity.detail.code.

Exclusion codes come from the public value sets in use (knowledge/valuesets.py, after the
project's overrides); low back pain codes and all text patterns from data/conditions.json.
ICD-10-CM codes are compared without the dot, upper case (M54.50 / M5450), and match through
their parents; an override's removal wins over a listed parent (D57.3 trait under D57).
Codes of every system the sets carry count (ICD-10-CM, SNOMED CT, HCPCS, CPT). Text is the
fallback: an exclusion is read from the concept's text and displays when none of its codings is
in an exclusion set (a coding in a known system but in no set in use is "unknown", like an
EHR-local or IMO placeholder code), unless an override removed one of its codes (then the code
decided: sickle cell trait, carcinoma in situ); low back pain is also read from text next to
codes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, TypeVar

from cds_service.fhir.read import CPT, ICD10CM, JSON, SNOMED, codings, concept_text
from cds_service.knowledge.bounded import ConceptCache, clip_concept
from cds_service.knowledge.valuesets import ValueSets, icd_ancestors, load_valuesets, normal_code


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath(f"data/{name}").read_text("utf-8")
    )
    return data


def _pattern(phrases: list[str], within: Any = ()) -> re.Pattern[str]:
    """Phrases that start a word, or (`within`) that may end one (adenocarcinoma)."""
    alternatives = [r"\b(?:" + "|".join(re.escape(p) for p in phrases) + ")"]
    if within:
        alternatives.append(r"(?:" + "|".join(re.escape(p) for p in within) + ")")
    return re.compile("|".join(alternatives), re.IGNORECASE)


_K = TypeVar("_K")


def _add(index: dict[_K, set[str]], code: _K, categories: Any) -> None:
    index.setdefault(code, set()).update(categories)


# A well-formed ICD-10-CM code (letter, digit, alphanumeric, up to four more characters).
_ICD10CM_CODE = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}\Z")
# Exclusion categories an ICD-10-CM code decides without its text: the code sets cover the
# whole category (C00-D49 and G89.3 for cancer), so text may only add what a code cannot say.
_ICD_DECIDES = frozenset({"cancer"})


class ConditionSets:
    """`data` is data/conditions.json; `valuesets` the value sets in use (their condition sets
    feed the exclusion categories)."""

    def __init__(self, data: Mapping[str, Any], valuesets: ValueSets | None = None) -> None:
        self._icd: dict[str, set[str]] = {}
        self._icd_not: dict[str, set[str]] = {}
        # (system, code) of every other system (SNOMED CT, HCPCS, CPT) -> categories
        self._coded: dict[tuple[str, str], set[str]] = {}
        self._coded_not: dict[tuple[str, str], set[str]] = {}
        for category, prefixes in data["icd10_prefixes"].items():
            for prefix in prefixes:
                _add(self._icd, prefix, (category,))
        for category, prefixes in data.get("icd10_exclude_prefixes", {}).items():
            for prefix in prefixes:
                _add(self._icd_not, prefix, (category,))
        for category, codes in data["snomed"].items():
            for code in codes:
                _add(self._coded, (SNOMED, code), (category,))
        for table in valuesets.of_kind("condition") if valuesets else ():
            for system, code in table.codes:
                if system == ICD10CM:
                    _add(self._icd, code, table.categories)
                else:
                    _add(self._coded, (system, code), table.categories)
            for system, code in table.removed:
                if system == ICD10CM:
                    _add(self._icd_not, code, table.categories)
                else:
                    _add(self._coded_not, (system, code), table.categories)
        self._text = {k: _pattern(v) for k, v in data["text_patterns"].items()}
        self._exclusion_text = [
            (
                category,
                _pattern(spec["match"], spec.get("match_within", ())),
                _pattern(spec["unless"]),
            )
            for category, spec in data.get("exclusion_text", {}).items()
        ]
        self._exclusion_categories = frozenset(data.get("exclusion_text", {}))
        pain = data.get("pain_indication", {})
        self._pain_icd = tuple(pain.get("icd10_prefixes", ()))
        self._pain_snomed = frozenset(pain.get("snomed", ()))
        self._pain_text = _pattern(pain.get("text", ["pain"]))
        # Set by create_app from Config (CDS_MAX_NAME_CHARS, CDS_CACHE_MAX_BYTES).
        self._cache: ConceptCache[frozenset[str]] = ConceptCache(8 * 1024 * 1024, 512)

    def bound_memory(self, max_name_chars: int, cache_max_bytes: int) -> None:
        """Clip names to `max_name_chars` and keep at most `cache_max_bytes` of results."""
        self._cache = ConceptCache(cache_max_bytes, max_name_chars)

    def _icd_categories(self, code: str) -> tuple[set[str], bool]:
        """The code's categories, and whether an override removed it from one."""
        decided: dict[str, bool] = {}
        for prefix in icd_ancestors(normal_code(ICD10CM, code)):
            for category in self._icd_not.get(prefix, ()):
                decided.setdefault(category, False)
            for category in self._icd.get(prefix, ()):
                decided.setdefault(category, True)
        return {category for category, inside in decided.items() if inside}, (
            False in decided.values()
        )

    def is_pain(self, concept: Any) -> bool:
        """Whether an order's reason (a CodeableConcept) names pain: the low back / chronic
        pain categories, a pain code (data/conditions.json pain_indication) or pain words."""
        if not isinstance(concept, dict):
            return False
        if self.categories(concept) & {"low-back-pain", "chronic-pain", "chronic-low-back-pain"}:
            return True
        for system, code, _ in codings(concept):
            if system == ICD10CM and normal_code(ICD10CM, code).startswith(self._pain_icd):
                return True
            if system == SNOMED and code in self._pain_snomed:
                return True
        text = concept_text(clip_concept(concept, 512))
        words = " ".join([text, *(d for _, _, d in codings(concept))])
        return bool(self._pain_text.search(words))

    def categories(self, concept: Any) -> frozenset[str]:
        """Every category a CodeableConcept belongs to (low-back-pain, cancer, ...)."""
        if not isinstance(concept, dict):
            return frozenset()
        # bounded text, bounded memory (knowledge/bounded.py)
        return self._cache.lookup(concept, self._categories)

    def _categories(self, concept: JSON) -> frozenset[str]:
        found: set[str] = set()
        texts: list[str] = []
        removed = False  # an override took one of the codes out of an exclusion set
        code_decides: set[str] = set()  # categories a well-formed code decides on its own
        for system, code, display in codings(concept):
            if display:
                texts.append(display)
            if not code:
                continue
            if system == ICD10CM:
                if _ICD10CM_CODE.match(normal_code(ICD10CM, code)):
                    # a closed classification: a valid code outside C00-D49 / G89.3 is not
                    # cancer, whatever its display says ("malignant hypertension")
                    code_decides |= _ICD_DECIDES
                categories, was_removed = self._icd_categories(code)
                found |= categories
                removed = removed or was_removed
            else:
                not_in = self._coded_not.get((system, code), set())
                found |= self._coded.get((system, code), set()) - not_in
                removed = removed or bool(not_in)
        # an exclusion coded by any coding decides; otherwise the text does
        decided = removed or any(c in self._exclusion_categories for c in found)
        text = concept.get("text")
        if isinstance(text, str):
            texts.append(text)
        joined = " ".join(texts)
        if joined:
            if self._text["low-back-pain"].search(joined):
                found.add("low-back-pain")
                if self._text["chronic"].search(joined):
                    found.add("chronic-low-back-pain")
            if not decided:
                for category, match, unless in self._exclusion_text:
                    if category in code_decides:
                        continue
                    if match.search(joined) and not unless.search(joined):
                        found.add(category)
        return frozenset(found)


class TherapySets:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.step_labels: dict[str, str] = data["steps"]
        self._snomed: dict[str, str] = data["snomed"]
        self._cpt: dict[str, str] = data["cpt"]
        self._text: dict[str, re.Pattern[str]] = {
            step: _pattern(p) for step, p in data["text_patterns"].items()
        }
        self._other_system = (
            _pattern(data.get("other_body_systems", ())) if data.get("other_body_systems") else None
        )
        self.max_name_chars = 512  # CDS_MAX_NAME_CHARS, set in create_app
        # results per concept ("" for none), like the condition categories: bounded in bytes
        self._cache: ConceptCache[str] = ConceptCache(8 * 1024 * 1024, self.max_name_chars)

    def bound_memory(self, max_name_chars: int, cache_max_bytes: int) -> None:
        """Clip names to `max_name_chars` and keep at most `cache_max_bytes` of results."""
        self.max_name_chars = max_name_chars
        self._cache = ConceptCache(cache_max_bytes, max_name_chars)

    def step(self, concept: Any) -> str | None:
        """The first-line non-drug step a Procedure / ServiceRequest code records, if any."""
        if not isinstance(concept, dict):
            return None
        return self._cache.lookup(concept, self._step) or None

    def _step(self, concept: JSON) -> str:
        concept = clip_concept(concept, self.max_name_chars)
        texts = [d for _, _, d in codings(concept) if d]
        text = concept.get("text")
        if isinstance(text, str):
            texts.append(text)
        joined = " ".join(texts)
        if self._other_system is not None and self._other_system.search(joined):
            return ""  # chest physiotherapy, pelvic floor, cardiac rehabilitation...
        for system, code, _ in codings(concept):
            if system == SNOMED and code in self._snomed:
                return str(self._snomed[code])
            if system == CPT and code in self._cpt:  # codings() gives canonical systems
                return str(self._cpt[code])
        for step, pattern in self._text.items():
            if joined and pattern.search(joined):
                return step
        return ""


def load_condition_sets(
    valuesets_dir: str | None = None, valuesets: ValueSets | None = None
) -> ConditionSets:
    """Condition categories for the value sets in use (packaged, or newer ones in
    valuesets_dir)."""
    return ConditionSets(_load("conditions.json"), valuesets or load_valuesets(valuesets_dir))


def load_therapy_sets() -> TherapySets:
    return TherapySets(_load("therapies.json"))
