"""Drug allergy classes: which non-opioid alternative an AllergyIntolerance bars.

Read from any CodeableConcept (AllergyIntolerance.code, reaction.substance), code first:
SNOMED CT allergy findings and substances and MED-RT class codes from data/allergies.json,
RxNorm ingredient and product codes through the medication classifier (aspirin, ibuprofen,
naproxen... are NSAIDs there). The text (and coding displays) decides only when no coding is
known: the class names of data/allergies.json ("NSAIDs", "salicylates", "paracetamol"), then
any ingredient or brand the classifier finds in it ("Ibuprofen", "Advil", "Tylenol")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cds_service.fhir.read import RXNORM, SNOMED, codings
from cds_service.knowledge.bounded import clip_concept
from cds_service.knowledge.classifier import Classifier


def _pattern(phrases: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE)


class AllergyClasses:
    """The allergy classes ("nsaid", "acetaminophen", "opioid") a concept names."""

    def __init__(self, data: Mapping[str, Any], classifier: Classifier) -> None:
        self.labels: dict[str, str] = dict(data["classes"])
        self._from_medication: dict[str, str] = dict(data["from_medication_classes"])
        self._snomed: dict[str, str] = dict(data["snomed"])
        self._medrt: dict[str, str] = dict(data["medrt"])
        self._text = {cls: _pattern(p) for cls, p in data["text_patterns"].items()}
        self._classifier = classifier
        self.max_name_chars = 512  # CDS_MAX_NAME_CHARS, set in create_app

    def _medication_classes(self, classes: frozenset[str]) -> set[str]:
        return {self._from_medication[c] for c in classes if c in self._from_medication}

    def classes(self, concept: Any) -> frozenset[str]:
        """The classes the concept's codes name; its text only when no coding is known."""
        if not isinstance(concept, dict):
            return frozenset()
        concept = clip_concept(concept, self.max_name_chars)
        found: set[str] = set()
        known = False
        texts: list[str] = []
        for system, code, display in codings(concept):
            if display:
                texts.append(display)
            if not code:
                continue
            if system == SNOMED and code in self._snomed:
                found.add(self._snomed[code])
                known = True
            elif ("medrt" in system.lower() or "ndfrt" in system.lower()) and (
                code.upper() in self._medrt
            ):
                found.add(self._medrt[code.upper()])
                known = True
            elif system == RXNORM:
                classification = self._classifier.classify_code(RXNORM, code)
                if classification.ingredients or classification.classes:
                    found |= self._medication_classes(classification.classes)
                    known = True
        if known:
            return frozenset(found)
        text = concept.get("text")
        if isinstance(text, str):
            texts.append(text)
        joined = " ".join(t for t in texts if t.strip())
        if not joined:
            return frozenset()
        for cls, pattern in self._text.items():
            if pattern.search(joined):
                found.add(cls)
        found |= self._medication_classes(self._classifier.classify_text(joined).classes)
        return frozenset(found)
