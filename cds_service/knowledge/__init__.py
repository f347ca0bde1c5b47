"""Clinical knowledge as data: value sets (CDC expansions with overrides, or newer ones from a
local folder), drug and condition tables, MME factors, card, line and suggestion templates.
Everything is loaded once, by `Knowledge.load`, when the app is built (create_app) and passed
down; nothing is built at import time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from cds_service.cards import CardTemplates
from cds_service.knowledge.allergies import AllergyClasses
from cds_service.knowledge.classifier import Classifier
from cds_service.knowledge.conditions import ConditionSets, TherapySets, load_therapy_sets
from cds_service.knowledge.dosing import MmeTables
from cds_service.knowledge.products import load_classifier
from cds_service.knowledge.valuesets import ValueSets, load_valuesets


def _data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("cds_service.knowledge").joinpath(f"data/{name}").read_text("utf-8")
    )
    return data


@dataclass(frozen=True)
class Knowledge:
    valuesets: ValueSets
    classifier: Classifier
    conditions: ConditionSets
    therapies: TherapySets
    mme: MmeTables
    cards: CardTemplates
    allergies: AllergyClasses

    @property
    def version(self) -> str:
        return self.valuesets.version

    @classmethod
    def load(
        cls, valuesets_dir: str | None = None, cards: CardTemplates | None = None
    ) -> Knowledge:
        """The packaged knowledge, with any value set in `valuesets_dir` (CDS_VALUESETS_DIR)
        replacing the packaged set of the same url."""
        valuesets = load_valuesets(valuesets_dir)
        classifier = load_classifier(valuesets=valuesets)
        return cls(
            valuesets=valuesets,
            classifier=classifier,
            conditions=ConditionSets(_data("conditions.json"), valuesets),
            therapies=load_therapy_sets(),
            mme=MmeTables(_data("mme_factors.json")),
            cards=cards or CardTemplates(),
            allergies=AllergyClasses(_data("allergies.json"), classifier),
        )
