"""Medication classification: which ingredients an order holds and which clinical classes they fall in.

Evidence is trusted in this order: RxNorm ingredient codes; ingredient and brand names found in
the coding display or text (RxNorm product names spell their ingredients out, EHR names carry
them too); a referenced Medication's code and ingredients. A name is matched as a whole word,
case-, salt- and punctuation-insensitive, so oxybutynin never reads as oxycodone and clonidine
never as clonazepam. What cannot be matched is reported unclassified with the reason, never
guessed. The data (data/ingredients.json) is loaded once; results are cached per distinct code
and name, so a 5,000-order history costs one dictionary look-up per order after the first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..fhir import RXNORM, JSON, as_list, codings

OPIOID = "opioid-analgesic"
BENZODIAZEPINE = "benzodiazepine"
MOUD = "moud"
NALOXONE = "naloxone-rescue"
ANTITUSSIVE = "opioid-antitussive"

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Classification:
    ingredients: tuple[str, ...]
    classes: frozenset[str]
    how: str  # "rxnorm-ingredient-code" | "name" | "brand" | "medication-resource" | ""
    label: str  # the order's medication name as the EHR wrote it (for card text)
    unclassified_reason: str = ""

    def has(self, drug_class: str) -> bool:
        return drug_class in self.classes


UNKNOWN = Classification((), frozenset(), "", "", "the order names no medication")


class Classifier:
    def __init__(self, data: dict[str, Any]) -> None:
        self.class_labels: dict[str, str] = dict(data["classes"])
        self._by_name: dict[str, tuple[str, frozenset[str]]] = {}
        self._by_rxcui: dict[str, str] = {}
        for ing in data["ingredients"]:
            self._by_name[ing["name"]] = (ing["name"], frozenset(ing["classes"]))
            if ing.get("rxcui"):
                self._by_rxcui[ing["rxcui"]] = ing["name"]
        for alias, target in data.get("name_aliases", {}).items():
            self._by_name[alias] = self._by_name[target]
        self._brands: dict[str, tuple[str, ...]] = {
            brand: tuple(ings) for brand, ings in data.get("brands", {}).items()
        }
        self._antitussive = frozenset(data.get("antitussive_companions", ()))
        self._bup_pain = tuple(data.get("buprenorphine_pain_markers", ()))
        self._cache: dict[Any, Classification] = {}

    # -- public -----------------------------------------------------------------------------
    def classify_order(self, order: JSON, medication: JSON | None = None) -> Classification:
        """Classify a MedicationRequest / MedicationStatement / MedicationDispense."""
        concept = order.get("medicationCodeableConcept")
        if medication is not None:
            return self._classify_medication(medication)
        if not isinstance(concept, dict):
            ref = order.get("medicationReference")
            display = ref.get("display") if isinstance(ref, dict) else None
            if isinstance(display, str) and display.strip():
                concept = {"text": display}
            else:
                return UNKNOWN
        return self.classify_concept(concept)

    def classify_concept(self, concept: JSON) -> Classification:
        key = self._key(concept)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._classify(concept)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def classify_text(self, text: str) -> Classification:
        return self.classify_concept({"text": text})

    # -- internals --------------------------------------------------------------------------
    @staticmethod
    def _key(concept: JSON) -> Any:
        coding = concept.get("coding")
        parts: list[Any] = [concept.get("text")]
        if isinstance(coding, list):
            for c in coding:
                if isinstance(c, dict):
                    parts.append((c.get("system"), c.get("code"), c.get("display")))
        elif isinstance(coding, dict):
            parts.append((coding.get("system"), coding.get("code"), coding.get("display")))
        try:
            hash(tuple(parts))
        except TypeError:
            return repr(parts)
        return tuple(parts)

    def _classify(self, concept: JSON) -> Classification:
        names: list[str] = []
        texts: list[str] = []
        how = ""
        text = concept.get("text")
        if isinstance(text, str):
            texts.append(text)
        for system, code, display in codings(concept):
            if display:
                texts.append(display)
            if system == RXNORM and code in self._by_rxcui:
                names.append(self._by_rxcui[code])
                how = "rxnorm-ingredient-code"
        label = next((t.strip() for t in texts if t.strip()), "")
        if not label and not names:
            return Classification((), frozenset(), "", "", "the order has no medication name "
                                  "and no RxNorm ingredient code")
        words = _WORD.findall(" ".join(texts).lower())
        found, found_how = self._names_in(words)
        if found and not how:
            how = found_how
        for name in found:
            if name not in names:
                names.append(name)
        if not label:
            label = " / ".join(names)
        return self._finish(tuple(names), words, how, label)

    def _names_in(self, words: list[str]) -> tuple[list[str], str]:
        found: list[str] = []
        how = ""
        for i, word in enumerate(words):
            hit = self._by_name.get(word)
            if hit is not None:
                if hit[0] not in found:
                    found.append(hit[0])
                how = how or "name"
                continue
            brand = self._brands.get(word)
            if brand is None and i + 1 < len(words):
                brand = self._brands.get(f"{word} {words[i + 1]}")
            if brand is not None:
                found.extend(n for n in brand if n not in found)
                how = how or "brand"
        return found, how

    def _finish(self, names: tuple[str, ...], words: list[str], how: str,
                label: str) -> Classification:
        if not names:
            return Classification((), frozenset(), "", label,
                                  "no ingredient of a monitored class found in the code or name")
        classes: set[str] = set()
        for name in names:
            classes |= self._by_name[name][1]
        joined = " ".join(words)
        if "buprenorphine" in names:
            # Buprenorphine patches and Belbuca treat pain; tablets, films, implants and
            # long-acting injections treat opioid use disorder (CDC 2022; FDA labels).
            if any(marker in joined for marker in self._bup_pain):
                classes.discard(MOUD)
                classes.add(OPIOID)
            else:
                classes.discard(NALOXONE)  # naloxone in Suboxone is an abuse deterrent
        if NALOXONE in classes and len(names) > 1:
            classes.discard(NALOXONE)  # pentazocine/naloxone is an analgesic, not rescue
        if OPIOID in classes and self._antitussive.intersection(words):
            # Codeine or hydrocodone with an antihistamine/expectorant is a cough product.
            classes.discard(OPIOID)
            classes.add(ANTITUSSIVE)
        return Classification(names, frozenset(classes), how, label)

    def _classify_medication(self, medication: JSON) -> Classification:
        concept = medication.get("code")
        base = self.classify_concept(concept) if isinstance(concept, dict) else UNKNOWN
        names = list(base.ingredients)
        texts = [base.label] if base.label else []
        for ingredient in as_list(medication.get("ingredient")):
            if not isinstance(ingredient, dict):
                continue
            item = ingredient.get("itemCodeableConcept")
            if isinstance(item, dict):
                sub = self.classify_concept(item)
                names.extend(n for n in sub.ingredients if n not in names)
                if sub.label:
                    texts.append(sub.label)
        if not names:
            return base
        words = _WORD.findall(" ".join(texts).lower())
        return self._finish(tuple(names), words, "medication-resource", base.label or
                            " / ".join(names))


def _load() -> Classifier:
    raw = resources.files(__package__).joinpath("data/ingredients.json").read_text("utf-8")
    return Classifier(json.loads(raw))


CLASSIFIER = _load()
