"""RxNorm product codes classified from the code alone.

Each code of the medication value sets (SCD, SBD, packs) and of the CDC OMTK opioid product
table has an entry in data/rxnorm_products.json, parsed from its RxNorm normalised name when
the tables were built (scripts/build_valuesets.py): ingredients with strengths, dose form,
route, classes. At start-up `load_classifier` joins those entries with the value sets in use:
a code in the extended-release set (after overrides) is extended-release; a code whose name
names no known ingredient takes the class of its set; a code in no set (an OMTK product) keeps
its parsed classes; codes of a locally installed newer expansion that the packaged table lacks
are parsed once, here, the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from cds_service.fhir.read import RXNORM
from cds_service.knowledge.valuesets import ValueSets, load_valuesets

if TYPE_CHECKING:  # classifier.py builds its singleton through this module
    from cds_service.knowledge.classifier import Classifier

# the class names of knowledge/classifier.py
OPIOID, MOUD, NALOXONE, BENZODIAZEPINE = (
    "opioid-analgesic",
    "moud",
    "naloxone-rescue",
    "benzodiazepine",
)

ER_ROLE = "extended-release-opioid"
# The class a code takes from its set when its name names no ingredient the classifier knows.
ROLE_CLASS = {
    "opioid-analgesic": OPIOID,
    ER_ROLE: OPIOID,
    "benzodiazepine": BENZODIAZEPINE,
    "barbiturate": "barbiturate",
    "naloxone-rescue": NALOXONE,
    "buprenorphine": MOUD,
}

_PACK = re.compile(r"^\{\d+ (?:\([0-9.]+ ML\) )?\((?P<inner>.*)\) \} Pack(?: \[.*\])?$")


def rxnorm_name(display: str) -> str:
    """The clinical drug inside a one-component pack name ("{2 (X) } Pack [Brand]" -> X)."""
    match = _PACK.match(display.strip())
    return match.group("inner") if match else display.strip()


def product_entry(parser: Classifier, display: str) -> dict[str, Any]:
    """A table entry parsed from an RxNorm normalised name (build time, or start-up for codes a
    newer local expansion adds)."""
    parsed = parser.classify_text(rxnorm_name(display))
    return {
        "display": display,
        "ingredients": [[i.name, i.strength_value, i.strength_unit] for i in parsed.ingredients],
        "dose_form": parsed.dose_form,
        "route": parsed.route,
        "extended_release": parsed.extended_release,
        "classes": sorted(parsed.classes),
        "analgesic_role": parsed.analgesic_role,
    }


def ingredient_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath("data/ingredients.json").read_text("utf-8")
    )
    return data


def packaged_entries() -> dict[str, dict[str, Any]]:
    raw = json.loads(
        resources.files(__package__).joinpath("data/rxnorm_products.json").read_text("utf-8")
    )
    entries: dict[str, dict[str, Any]] = raw["products"]
    return entries


def code_table(
    valuesets: ValueSets, parser: Classifier, packaged: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Every RxNorm code of the medication sets in use, with its final classes and ER flag."""
    roles: dict[str, set[str]] = {}
    displays: dict[str, str] = {}
    for table in valuesets.of_kind("medication"):
        # a code an override removes from a set keeps its entry, without the set's role
        for (system, code), display in (*table.published.items(), *table.codes.items()):
            if system != RXNORM:
                continue
            code_roles = roles.setdefault(code, set())
            if (system, code) in table.codes:
                code_roles.add(table.role)
            if display:
                displays.setdefault(code, display)
    long_acting = parser.long_acting
    out: dict[str, dict[str, Any]] = {}
    for code, code_roles in roles.items():
        display = displays.get(code, "")
        known = packaged.get(code)
        entry = (
            dict(known)
            if known is not None and known["display"] == display
            else (
                product_entry(parser, display)
                if display
                else {
                    "display": f"RxNorm {code}",
                    "ingredients": [],
                    "dose_form": None,
                    "route": None,
                    "extended_release": False,
                    "classes": [],
                    "analgesic_role": "",
                }
            )
        )
        classes = set(entry["classes"]) or {ROLE_CLASS[r] for r in code_roles if r in ROLE_CLASS}
        entry["classes"] = sorted(classes)
        if classes & {OPIOID, MOUD}:
            names = {i[0] for i in entry["ingredients"]}
            entry["extended_release"] = ER_ROLE in code_roles or bool(names & long_acting)
        out[code] = entry
    # products outside every set (the OMTK opioid products the CDC expansion lacks: Duragesic,
    # Vicodin, Kadian...): their parsed classes; an ER/LA product by its name or ingredient
    for code, known in packaged.items():
        if code not in out and known["classes"]:
            entry = dict(known)
            if set(entry["classes"]) & {OPIOID, MOUD}:
                names = {i[0] for i in entry["ingredients"]}
                entry["extended_release"] = bool(entry["extended_release"]) or bool(
                    names & long_acting
                )
            out[code] = entry
    return out


def load_classifier(
    valuesets_dir: str | None = None, valuesets: ValueSets | None = None
) -> Classifier:
    """The classifier with its code table for the value sets in use (packaged, or replaced by
    newer expansions in valuesets_dir)."""
    from cds_service.knowledge.classifier import Classifier

    valuesets = valuesets or load_valuesets(valuesets_dir)
    data = ingredient_data()
    parser = Classifier(data)
    return Classifier(data, code_table(valuesets, parser, packaged_entries()))


def expected_classes(code: str, valuesets: ValueSets) -> set[frozenset[str]]:
    """What the sets holding a code say its class may be (review and tests): one of the returned
    alternatives must be among the classification's classes."""
    roles = {t.role for t in valuesets.of_kind("medication") if (RXNORM, code) in t.codes}
    if "buprenorphine" in roles:
        return {frozenset({OPIOID})} if "opioid-analgesic" in roles else {frozenset({MOUD})}
    if roles & {"opioid-analgesic", ER_ROLE}:
        return {frozenset({OPIOID})}
    wanted = {frozenset({ROLE_CLASS[r]}) for r in roles if r in ROLE_CLASS}
    if "naloxone-rescue" in roles:
        # a combination takes the class of its other drug (buprenorphine/naloxone is MOUD)
        wanted |= {frozenset({MOUD}), frozenset({OPIOID})}
    if not roles:  # an override took it out of every set: its reason explains the class
        return {frozenset()}
    return wanted or {frozenset({OPIOID}), frozenset({MOUD})}


def review(valuesets: ValueSets, classifier: Classifier) -> list[str]:
    """Codes whose classification contradicts their sets (after overrides): each must be fixed
    in ingredients.json or explained by an override before the tables are shipped."""
    problems = []
    er_codes = {
        c for t in valuesets.of_kind("medication") if t.role == ER_ROLE for (_, c) in t.codes
    }
    in_sets = {c for t in valuesets.of_kind("medication") for (_, c) in t.published}
    for code, result in sorted(classifier.product_codes.items()):
        if code not in in_sets:  # an OMTK product the sets lack: its name decides
            if (
                OPIOID in result.classes
                and "extended release" in result.label.lower()
                and not result.extended_release
            ):
                problems.append(f"{code} {result.label}: extended-release name, not ER")
            if any(i.strength_value is None for i in result.ingredients if i.classes):
                problems.append(f"{code} {result.label}: a monitored ingredient without strength")
            continue
        if not any(option <= result.classes for option in expected_classes(code, valuesets)):
            problems.append(f"{code} {result.label}: classes {sorted(result.classes)}")
        if (
            OPIOID in result.classes
            and "extended release" in result.label.lower()
            and code not in er_codes
        ):
            problems.append(f"{code} {result.label}: extended-release name, not in the ER set")
        if any(i.strength_value is None for i in result.ingredients if i.classes):
            problems.append(f"{code} {result.label}: a monitored ingredient without strength")
    return problems


__all__ = [
    "code_table",
    "expected_classes",
    "load_classifier",
    "product_entry",
    "review",
    "rxnorm_name",
]
