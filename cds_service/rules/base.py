"""The shape every rule shares, checked by mypy: an id, the hooks it runs on, its typed
settings, the text placeholders each of its card variants and lines is given, and
`evaluate(facts, settings) -> findings`.

A rule sees only ClinicalFacts (which carry the date, `facts.today`: never the clock) and the
typed Settings; never HTTP, prefetch keys, the hook name or the FHIR server. Which rules run
for which hook is the engine's decision (hooks/pipeline.py), from `hooks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from cds_service.facts import ClinicalFacts
from cds_service.findings import Finding
from cds_service.settings import RuleSettings, Settings


class Rule(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def hooks(self) -> frozenset[str]: ...

    @property
    def settings_type(self) -> type[RuleSettings]: ...

    @property
    def text(self) -> Mapping[str, frozenset[str]]:
        """Placeholder names given to each card variant ("variant:<name>") and to each
        evidence line of the rule's own card file ("line:<key>"); checked against the
        templates at start-up."""
        ...

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]: ...
