"""Medication classification: which ingredients an order holds, their classes, strengths and form.

Evidence is trusted in this order:
1. a Medication resource's ingredients with strength (Ratio);
2. RxNorm codings: ingredient codes directly; product codes through the normalised RxNorm
   name in the display or text ("Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral
   Tablet" spells out ingredients, strengths, units and form), or a small table of product
   codes real clients send without a name;
3. NDC codings, through the text that comes with them (there is no NDC table here);
4. free text as EHRs write it ("oxyCODONE (ROXICODONE) 5 MG tablet", "hydrocodone-
   acetaminophen 10-325 mg", brand names such as Percocet or Xanax).
Names match as whole words, case-, salt- and punctuation-insensitive, so oxybutynin never
reads as oxycodone and clonidine never as clonazepam. What cannot be matched is reported
unclassified with the reason, never guessed. The data (data/ingredients.json) is loaded once
and results are cached per distinct code and name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cds_service.fhir.read import JSON, NDC, RXNORM, as_list, codings
from cds_service.knowledge.bounded import ConceptCache
from cds_service.knowledge.classification import (
    ANALGESIC_ROLES,
    ANTITUSSIVE,
    BENZODIAZEPINE,
    FIRST_LINE,
    FIRST_LINE_CLASSES,
    MOUD,
    NALOXONE,
    OPIOID,
    UNKNOWN,
    Classification,
    FirstLineMarkers,
    Ingredient,
    analgesic_role,
    unclassified,
)
from cds_service.knowledge.strengths import (
    WORD,
    assign_strengths,
    concept_words,
    disagree,
    ratio_strength,
)

log = logging.getLogger("cds_service.knowledge.classifier")


class Classifier:
    """Classifies orders from already-loaded data: `data` is data/ingredients.json; `code_table`
    maps RxNorm product codes (SCD, SBD, packs) to entries parsed from their normalised names
    when the value sets were built (see knowledge/products.py, load_classifier)."""

    def __init__(
        self, data: dict[str, Any], code_table: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        self._ingredients: dict[str, tuple[str | None, frozenset[str]]] = {}
        self._by_rxcui: dict[str, str] = {}
        for ing in data["ingredients"]:
            self._ingredients[ing["name"]] = (ing.get("rxcui"), frozenset(ing["classes"]))
            if ing.get("rxcui"):
                self._by_rxcui[ing["rxcui"]] = ing["name"]
        self._aliases: dict[str, str] = dict(data.get("name_aliases", {}))
        self._brands: dict[str, tuple[str, ...]] = {
            b: tuple(ings) for b, ings in data.get("brands", {}).items()
        }
        # multi-word names and brands, longest first, matched on the space-joined word list
        self._phrases: dict[str, tuple[str, ...]] = {}
        for name in self._ingredients:
            if " " in name:
                self._phrases[name] = (name,)
        for brand, ings in self._brands.items():
            if " " in brand or "#" in brand:
                self._phrases[" ".join(WORD.findall(brand))] = ings
        self._antitussive = frozenset(data.get("antitussive_companions", ()))
        self._bup_pain = tuple(data.get("buprenorphine_pain_markers", ()))
        self._er_markers = tuple(data.get("er_markers", ()))
        self._long_acting = frozenset(data.get("long_acting_ingredients", ()))
        self.long_acting = self._long_acting
        self._forms = [(re.compile(p), form, route) for p, form, route in data["dose_forms"]]
        self._products = {
            k: v for k, v in data.get("products", {}).items() if not k.startswith("_")
        }
        first_line = data.get("first_line", {})
        self._first_line = FirstLineMarkers.from_data(first_line)
        self.code_text_disagreements = 0
        # Set by create_app from Config (CDS_MAX_NAME_CHARS, CDS_CACHE_MAX_BYTES).
        self._cache: ConceptCache[Classification] = ConceptCache(8 * 1024 * 1024, 512)
        self._codes: dict[str, Classification] = {
            code: self._from_entry(entry) for code, entry in (code_table or {}).items()
        }

    def _from_entry(self, entry: Mapping[str, Any]) -> Classification:
        ingredients = []
        for name, value, unit in entry["ingredients"]:
            rxcui, classes = self._ingredients.get(name, (None, frozenset()))
            ingredients.append(Ingredient(name, rxcui, classes, value, unit))
        names = tuple(i.name for i in ingredients)
        return Classification(
            tuple(ingredients),
            frozenset(entry["classes"]),
            "rxnorm-product-code",
            entry["display"],
            entry.get("dose_form"),
            entry.get("route"),
            bool(entry["extended_release"]),
            "",
            names,
            entry.get("analgesic_role", ""),
        )

    @property
    def product_codes(self) -> Mapping[str, Classification]:
        """Every RxNorm product code classified from the code alone."""
        return self._codes

    def bound_memory(self, max_name_chars: int, cache_max_bytes: int) -> None:
        """Clip names to `max_name_chars` and keep at most `cache_max_bytes` of results."""
        self._cache = ConceptCache(cache_max_bytes, max_name_chars)

    # -- public -----------------------------------------------------------------------------
    def classify_order(self, order: JSON, medication: JSON | None = None) -> Classification:
        """Classify a MedicationRequest / MedicationStatement / MedicationDispense."""
        if medication is not None:
            return self.classify_medication(medication)
        concept = order.get("medicationCodeableConcept")
        if not isinstance(concept, dict):
            ref = order.get("medicationReference")
            display = ref.get("display") if isinstance(ref, dict) else None
            if isinstance(display, str) and display.strip():
                concept = {"text": display}
            else:
                return UNKNOWN
        return self.classify_concept(concept)

    def classify_concept(self, concept: JSON) -> Classification:
        # bounded text, bounded memory (knowledge/bounded.py)
        return self._cache.lookup(concept, self._classify)

    def classify_text(self, text: str) -> Classification:
        return self.classify_concept({"text": text})

    def classify_code(self, system: str, code: str) -> Classification:
        return self.classify_concept({"coding": [{"system": system, "code": code}]})

    def classify_medication(self, medication: JSON) -> Classification:
        """A Medication resource: its code, form and ingredients (with Ratio strengths)."""
        concept = medication.get("code")
        base = self.classify_concept(concept) if isinstance(concept, dict) else UNKNOWN
        form_text = concept_words(medication.get("form"))
        listed: list[Ingredient] = []
        for entry in as_list(medication.get("ingredient")):
            if not isinstance(entry, dict):
                continue
            item = entry.get("itemCodeableConcept")
            if not isinstance(item, dict):
                continue
            sub = self.classify_concept(item)
            value, unit = ratio_strength(entry.get("strength"))
            for ing in sub.ingredients:
                if value is None and ing.strength_value is not None:
                    listed.append(ing)
                else:
                    listed.append(Ingredient(ing.name, ing.rxcui, ing.classes, value, unit))
        if not listed:
            if form_text and base.ingredients:
                return self._finish(
                    base.ingredients, f"{base.label} {form_text}".lower(), base.how, base.label
                )
            return base
        # the code's parse may know strengths the ingredient list lacks
        by_name = {i.name: i for i in base.ingredients}
        merged = tuple(
            i if i.strength_value is not None or i.name not in by_name else by_name[i.name]
            for i in listed
        )
        label = base.label or " / ".join(i.name for i in merged)
        return self._finish(
            merged, f"{base.label} {form_text}".lower(), "medication-resource", label
        )

    # -- internals --------------------------------------------------------------------------
    def _classify(self, concept: JSON) -> Classification:
        if self._codes:
            for system, code, _ in codings(concept):
                if system == RXNORM and code in self._codes:
                    return self._by_code(self._codes[code], concept)
        return self._classify_text(concept)

    def _by_code(self, known: Classification, concept: JSON) -> Classification:
        """The code decides; text that names other ingredients or strengths is counted as a
        disagreement (the log carries the count, never the names) and the coded product's
        name is kept beside the text (`coded_label`) so a card shows what was counted."""
        texts = [
            t
            for t in (concept.get("text"), *(d for _, _, d in codings(concept)))
            if isinstance(t, str) and t.strip() and t.strip() != known.label
        ]
        coded_label = ""
        for text in texts:
            parsed = self._parse_text(text.lower())
            if parsed and disagree(known.ingredients, parsed):
                coded_label = known.label
                self.code_text_disagreements += 1
                log.warning(
                    "medication-code-text-disagreement",
                    extra={
                        "anomalies": self.code_text_disagreements,
                        "reason": "the RxNorm code and the medication text name different "
                        "ingredients or strengths; the code was used",
                    },
                )
                break
        if texts:
            return replace(known, label=texts[0].strip(), coded_label=coded_label)
        return known

    def _classify_text(self, concept: JSON) -> Classification:
        texts: list[tuple[str, str]] = []  # (text, where it came from)
        code_names: list[str] = []
        code_how = ""
        has_ndc = False
        text = concept.get("text")
        if isinstance(text, str) and text.strip():
            texts.append((text.strip(), "text"))
        for system, code, display in codings(concept):
            if system == NDC:
                has_ndc = True
            if display.strip():
                texts.append((display.strip(), "rxnorm-name" if system == RXNORM else "text"))
            if system == RXNORM and code:
                if code in self._by_rxcui:
                    code_names.append(self._by_rxcui[code])
                    code_how = code_how or "rxnorm-ingredient-code"
                elif code in self._products and not texts:
                    texts.append((self._products[code], "rxnorm-product-code"))
        label = texts[0][0] if texts else ""
        if not texts and not code_names:
            if has_ndc:
                return unclassified(
                    "",
                    "an NDC code without a medication name (no NDC table "
                    "is used; send the RxNorm code or the name)",
                )
            return unclassified("", "no medication name and no known RxNorm code")
        # parse the most informative text: a name that carries strengths wins
        parsed: tuple[Ingredient, ...] = ()
        parsed_source = ""
        for candidate, source in texts:
            ingredients = self._parse_text(candidate)
            if ingredients and (
                not parsed
                or (
                    any(i.strength_value is not None for i in ingredients)
                    and not any(i.strength_value is not None for i in parsed)
                )
            ):
                parsed, parsed_source = ingredients, source
                if source == "text" and self._brand_only(candidate):
                    parsed_source = "brand"
        names = [i.name for i in parsed]
        found = list(parsed)
        for name in code_names:
            if name not in names:
                rxcui, classes = self._ingredients[name]
                found.append(Ingredient(name, rxcui, classes))
                names.append(name)
        if not found:
            return unclassified(
                label, "no ingredient of a monitored class found in the code or name"
            )
        how = code_how or parsed_source
        if how == "text" and has_ndc:
            how = "ndc-text"
        return self._finish(tuple(found), " ".join(t for t, _ in texts).lower(), how, label)

    def _brand_only(self, text: str) -> bool:
        words = set(WORD.findall(text.lower()))
        return bool(words & set(self._brands)) and not any(
            self._aliases.get(w, w) in self._ingredients for w in words
        )

    def _names_in(self, lower: str) -> list[str]:
        """Ingredient names in order of first appearance (brands expand to their ingredients)."""
        words = WORD.findall(lower)
        joined = " " + " ".join(words) + " "
        found: list[tuple[int, str]] = []
        for phrase, ings in self._phrases.items():
            at = joined.find(f" {phrase} ")
            if at >= 0:
                found.extend((at, n) for n in ings)
        position = 0
        for word in words:
            at = joined.find(f" {word} ", position)
            position = max(position, at + 1)
            name = self._aliases.get(word, word)
            if name in self._ingredients:
                found.append((at, name))
            elif word in self._brands:
                found.extend((at, n) for n in self._brands[word])
        found.sort(key=lambda pair: pair[0])
        ordered: list[str] = []
        for _, name in found:
            if name not in ordered and name in self._ingredients:
                ordered.append(name)
        return ordered

    def _parse_text(self, text: str) -> tuple[Ingredient, ...]:
        lower = text.lower()
        names = self._names_in(lower)
        if not names:
            return ()
        strengths = assign_strengths(names, lower, self._names_in)
        out = []
        for name in names:
            rxcui, classes = self._ingredients[name]
            strength = strengths.get(name)
            out.append(Ingredient(name, rxcui, classes, *(strength or (None, None))))
        return tuple(out)

    def _finish(
        self, ingredients: tuple[Ingredient, ...], lower: str, how: str, label: str
    ) -> Classification:
        names = tuple(i.name for i in ingredients)
        words = WORD.findall(lower)
        joined = " " + " ".join(words) + " "
        form, route = None, None
        for pattern, form_name, form_route in self._forms:
            if pattern.search(lower):
                form, route = form_name, form_route
                break
        extended = any(f" {m} " in joined for m in self._er_markers) or bool(
            self._long_acting.intersection(names)
        )
        classes: set[str] = set()
        for ingredient in ingredients:
            classes |= ingredient.classes
        if "buprenorphine" in names:
            # Buprenorphine patches and Belbuca treat pain; sublingual tablets and films,
            # implants and long-acting injections treat opioid use disorder (FDA labels).
            # buccal buprenorphine alone is Belbuca (pain); with naloxone it is Bunavail (OUD)
            if (
                any(f" {m} " in joined for m in self._bup_pain)
                or route == "transdermal"
                or (route == "buccal" and names == ("buprenorphine",))
            ):
                classes.discard(MOUD)
                classes.add(OPIOID)
            else:
                classes.discard(NALOXONE)  # naloxone in Suboxone deters injection misuse
        if NALOXONE in classes and len(names) > 1:
            classes.discard(NALOXONE)  # pentazocine/naloxone is an analgesic, not a rescue kit
        if OPIOID in classes and (self._antitussive.intersection(words) or " cough " in joined):
            # Codeine or hydrocodone with an antihistamine or expectorant is a cough product.
            classes.discard(OPIOID)
            classes.add(ANTITUSSIVE)
        if OPIOID not in classes and MOUD not in classes:
            extended = extended and bool(classes)
        role = analgesic_role(ingredients, classes, joined, self._first_line)
        return Classification(
            ingredients,
            frozenset(classes),
            how,
            label or " / ".join(names),
            form,
            route,
            extended,
            "",
            names,
            role,
        )


__all__ = [
    "ANALGESIC_ROLES",
    "ANTITUSSIVE",
    "BENZODIAZEPINE",
    "FIRST_LINE",
    "FIRST_LINE_CLASSES",
    "MOUD",
    "NALOXONE",
    "OPIOID",
    "UNKNOWN",
    "Classification",
    "Classifier",
    "Ingredient",
]
