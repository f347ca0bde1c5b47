"""Clinical knowledge as data: drug and condition tables, value sets, MME factors, card and
suggestion templates. Everything is loaded once, by `Knowledge.load`, when the app is built
(create_app) and passed down; nothing is built at import time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from cds_service.cards import CardTemplates
from cds_service.knowledge.classifier import Classifier
from cds_service.knowledge.conditions import ConditionSets, TherapySets
from cds_service.knowledge.dosing import MmeTables


def _data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("cds_service.knowledge").joinpath(f"data/{name}").read_text("utf-8"))
    return data


@dataclass(frozen=True)
class Knowledge:
    classifier: Classifier
    conditions: ConditionSets
    therapies: TherapySets
    mme: MmeTables
    cards: CardTemplates

    @classmethod
    def load(cls, cards: CardTemplates | None = None) -> Knowledge:
        return cls(
            classifier=Classifier(_data("ingredients.json")),
            conditions=ConditionSets(_data("conditions.json")),
            therapies=TherapySets(_data("therapies.json")),
            mme=MmeTables(_data("mme_factors.json")),
            cards=cards or CardTemplates(),
        )
