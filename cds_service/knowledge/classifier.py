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
from dataclasses import dataclass, field, replace
from typing import Any

from cds_service.fhir.read import JSON, NDC, RXNORM, as_list, codings
from cds_service.knowledge.bounded import ConceptCache

OPIOID = "opioid-analgesic"
BENZODIAZEPINE = "benzodiazepine"
MOUD = "moud"
NALOXONE = "naloxone-rescue"
ANTITUSSIVE = "opioid-antitussive"
FIRST_LINE = "first-line"
FIRST_LINE_CLASSES = frozenset({"nsaid", "acetaminophen"})
# Whether an NSAID or acetaminophen product is a first-line drug trial for pain, and why not
# (`cds-service classify` prints it; the rules add the order's own reason: facts/indications.py)
ANALGESIC_ROLES = {
    FIRST_LINE: "yes, an NSAID or acetaminophen taken for pain (unless the order's reason names "
    "another indication)",
    "low-dose-aspirin": "no: low-dose aspirin (at most 162 mg a unit, or an antiplatelet "
    "product) is cardiovascular prevention, not an analgesic trial",
    "cold-remedy": "no: a multi-symptom cold and flu remedy",
    "sleep-aid": "only when the order's reason is pain: an acetaminophen or NSAID sleep-aid "
    "combination (diphenhydramine, doxylamine) is usually taken for sleep",
    "combination": "no: the acetaminophen or NSAID of an opioid or barbiturate combination",
    "not-for-pain": "no: an eye or ear product",
}

log = logging.getLogger("cds_service.knowledge.classifier")

_WORD = re.compile(r"[a-z0-9]+")
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
_STRENGTH = re.compile(
    rf"(?<![\w.])(?P<nums>{_NUM}(?:\s*[-/]\s*{_NUM})*)\s*"
    r"(?P<unit>mg/ml|mcg/ml|ug/ml|mg/hr|mcg/hr|ug/hr|mg/h|mcg/h|ug/h|mcg/hour|mg/actuat|"
    r"mcg/actuat|mg|mcg|ug|g)(?![a-z])"
    rf"(?:\s*/\s*(?P<per>{_NUM})?\s*ml\b)?"
)
_BARE_COMBO = re.compile(rf"(?<![\w.])(?P<nums>{_NUM}(?:\s*[-/]\s*{_NUM})+)(?![\w.])")
_COMPONENT_SPLIT = re.compile(r"\s+/\s+(?=[a-z])")
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


@dataclass(frozen=True)
class Ingredient:
    name: str
    rxcui: str | None
    classes: frozenset[str]
    strength_value: float | None = None
    strength_unit: str | None = None  # mg, mcg, mg/mL, mcg/mL, mg/h, mcg/h, mg/actuat

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rxcui": self.rxcui,
            "classes": sorted(self.classes),
            "strength_value": self.strength_value,
            "strength_unit": self.strength_unit,
        }


@dataclass(frozen=True)
class Classification:
    ingredients: tuple[Ingredient, ...]
    classes: frozenset[str]
    how: str  # medication-resource | rxnorm-ingredient-code | rxnorm-name | rxnorm-product-code
    #          | ndc-text | text | brand | ""
    label: str  # the medication's name as the EHR wrote it (for card text)
    dose_form: str | None = None
    route: str | None = None
    extended_release: bool = False
    unclassified_reason: str = ""
    names: tuple[str, ...] = field(default=())
    # first-line | low-dose-aspirin | cold-remedy | sleep-aid | combination | not-for-pain | ""
    # (no NSAID or acetaminophen): see first_line_analgesic and ANALGESIC_ROLES
    analgesic_role: str = ""

    def has(self, drug_class: str) -> bool:
        return drug_class in self.classes

    @property
    def first_line_analgesic(self) -> bool:
        """An NSAID or acetaminophen taken for pain: the first-line drug trial of low back pain.
        Not low-dose (antiplatelet) aspirin, a cold and flu remedy, an eye drop, or the
        acetaminophen or NSAID of an opioid or barbiturate combination."""
        return self.analgesic_role == FIRST_LINE

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ingredients": [i.as_json() for i in self.ingredients],
            "classes": sorted(self.classes),
            "dose_form": self.dose_form,
            "route": self.route,
            "extended_release": self.extended_release,
            "how": self.how or None,
            "unclassified_reason": self.unclassified_reason or None,
            "analgesic_role": self.analgesic_role or None,
        }


def _unclassified(label: str, reason: str) -> Classification:
    return Classification((), frozenset(), "", label, unclassified_reason=reason)


UNKNOWN = _unclassified("", "the order names no medication")


def _number(text: str) -> float:
    return float(text)


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
                self._phrases[" ".join(_WORD.findall(brand))] = ings
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
        self._aspirin_max = float(first_line.get("antiplatelet_aspirin_max_mg", 0))
        self._antiplatelet = tuple(first_line.get("antiplatelet_markers", ()))
        self._cold = tuple(first_line.get("cold_remedy_markers", ()))
        self._not_for_pain = tuple(first_line.get("not_for_pain_markers", ()))
        self._sleep_aid = tuple(first_line.get("sleep_aid_markers", ()))
        self._not_first_line = frozenset(first_line.get("excluding_classes", ()))
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
        form_text = _concept_words(medication.get("form"))
        listed: list[Ingredient] = []
        for entry in as_list(medication.get("ingredient")):
            if not isinstance(entry, dict):
                continue
            item = entry.get("itemCodeableConcept")
            if not isinstance(item, dict):
                continue
            sub = self.classify_concept(item)
            value, unit = _ratio_strength(entry.get("strength"))
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
        disagreement (the log carries the count, never the names)."""
        texts = [
            t
            for t in (concept.get("text"), *(d for _, _, d in codings(concept)))
            if isinstance(t, str) and t.strip() and t.strip() != known.label
        ]
        for text in texts:
            parsed = self._parse_text(text.lower())
            if parsed and _disagree(known.ingredients, parsed):
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
            return replace(known, label=texts[0].strip())
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
                return _unclassified(
                    "",
                    "an NDC code without a medication name (no NDC table "
                    "is used; send the RxNorm code or the name)",
                )
            return _unclassified("", "no medication name and no known RxNorm code")
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
            return _unclassified(
                label, "no ingredient of a monitored class found in the code or name"
            )
        how = code_how or parsed_source
        if how == "text" and has_ndc:
            how = "ndc-text"
        return self._finish(tuple(found), " ".join(t for t, _ in texts).lower(), how, label)

    def _brand_only(self, text: str) -> bool:
        words = set(_WORD.findall(text.lower()))
        return bool(words & set(self._brands)) and not any(
            self._aliases.get(w, w) in self._ingredients for w in words
        )

    def _names_in(self, lower: str) -> list[str]:
        """Ingredient names in order of first appearance (brands expand to their ingredients)."""
        words = _WORD.findall(lower)
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
        strengths: dict[str, tuple[float, str]] = {}
        components = _COMPONENT_SPLIT.split(lower)
        if len(components) > 1:
            for component in components:
                # a bracketed brand ("[Cheracol with Codeine]") names no component's strength
                comp_names = self._names_in(re.sub(r"\[[^\]]*\]", " ", component))
                groups = _strength_groups(component)
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
            groups = _strength_groups(lower)
            if len(groups) == 1 and len(groups[0][0]) == len(names):
                values, unit = groups[0]
                strengths = {n: (v, unit) for n, v in zip(names, values, strict=True)}
            elif len(groups) == len(names) and all(len(g[0]) == 1 for g in groups):
                strengths = {n: (g[0][0], g[1]) for n, g in zip(names, groups, strict=True)}
            elif not groups and len(names) > 1:
                bare = _BARE_COMBO.search(lower)
                if bare:
                    values = [float(v) for v in re.split(r"\s*[-/]\s*", bare.group("nums"))]
                    if len(values) == len(names):
                        strengths = {n: (v, "mg") for n, v in zip(names, values, strict=True)}
            strengths.update(by_component)  # a component's own strength wins
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
        words = _WORD.findall(lower)
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
        role = self._analgesic_role(ingredients, classes, joined, route)
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

    def _analgesic_role(
        self, ingredients: tuple[Ingredient, ...], classes: set[str], joined: str, route: str | None
    ) -> str:
        if not FIRST_LINE_CLASSES & classes:
            return ""
        if self._not_first_line & classes:
            return "combination"
        if any(f" {m} " in joined for m in self._cold):
            return "cold-remedy"
        if any(f" {m} " in joined for m in self._not_for_pain):
            return "not-for-pain"
        if any(f" {m} " in joined for m in self._sleep_aid):
            return "sleep-aid"
        aspirin = [i for i in ingredients if i.name == "aspirin"]
        if aspirin and not (
            FIRST_LINE_CLASSES & {c for i in ingredients if i.name != "aspirin" for c in i.classes}
        ):
            strength = aspirin[0].strength_value
            if (
                strength is None
                or (aspirin[0].strength_unit == "mg" and strength <= self._aspirin_max)
                or any(f" {m} " in joined for m in self._antiplatelet)
            ):
                return "low-dose-aspirin"
        return FIRST_LINE


def _disagree(by_code: tuple[Ingredient, ...], by_text: tuple[Ingredient, ...]) -> bool:
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


def _strength_groups(lower: str) -> list[tuple[list[float], str]]:
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


def _concept_words(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    parts = [concept.get("text")] + [d for _, _, d in codings(concept)]
    return " ".join(p for p in parts if isinstance(p, str))


def _ratio_strength(ratio: Any) -> tuple[float | None, str | None]:
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
