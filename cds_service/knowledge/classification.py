"""What a medication order is: its ingredients with strengths, classes, dose form and route,
and whether it is a first-line analgesic (the result of knowledge/classifier.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # the coded product's RxNorm name when the EHR's text names other ingredients or
    # strengths (the code decides the classification and the MME; cards show both)
    coded_label: str = ""

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
            "coded_label": self.coded_label or None,
        }


def unclassified(label: str, reason: str) -> Classification:
    return Classification((), frozenset(), "", label, unclassified_reason=reason)


UNKNOWN = unclassified("", "the order names no medication")


@dataclass(frozen=True)
class FirstLineMarkers:
    """data/ingredients.json "first_line": the words that make an NSAID or acetaminophen
    product something other than a first-line pain trial."""

    aspirin_max_mg: float
    antiplatelet: tuple[str, ...]
    cold: tuple[str, ...]
    not_for_pain: tuple[str, ...]
    sleep_aid: tuple[str, ...]
    excluding_classes: frozenset[str]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> FirstLineMarkers:
        return cls(
            float(data.get("antiplatelet_aspirin_max_mg", 0)),
            tuple(data.get("antiplatelet_markers", ())),
            tuple(data.get("cold_remedy_markers", ())),
            tuple(data.get("not_for_pain_markers", ())),
            tuple(data.get("sleep_aid_markers", ())),
            frozenset(data.get("excluding_classes", ())),
        )


def analgesic_role(
    ingredients: tuple[Ingredient, ...], classes: set[str], joined: str, m: FirstLineMarkers
) -> str:
    """The product's ANALGESIC_ROLES key ("" when it holds no NSAID or acetaminophen);
    `joined` is its name's words, space-separated, with a space at each end."""
    if not FIRST_LINE_CLASSES & classes:
        return ""
    if m.excluding_classes & classes:
        return "combination"
    if any(f" {w} " in joined for w in m.cold):
        return "cold-remedy"
    if any(f" {w} " in joined for w in m.not_for_pain):
        return "not-for-pain"
    if any(f" {w} " in joined for w in m.sleep_aid):
        return "sleep-aid"
    aspirin = [i for i in ingredients if i.name == "aspirin"]
    if aspirin and not (
        FIRST_LINE_CLASSES & {c for i in ingredients if i.name != "aspirin" for c in i.classes}
    ):
        strength = aspirin[0].strength_value
        if (
            strength is None
            or (aspirin[0].strength_unit == "mg" and strength <= m.aspirin_max_mg)
            or any(f" {w} " in joined for w in m.antiplatelet)
        ):
            return "low-dose-aspirin"
    return FIRST_LINE
