"""The rule registry and the shape every rule shares.

A rule is a module with RULE_ID, HOOKS and `evaluate(record, facts, settings)` returning
findings; it never sees HTTP, prefetch keys or the FHIR server, and takes its date from
`facts.today` (never the clock). Card text lives in cards/<rule-id>.json, not in the rule.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import ModuleType
from typing import Any, Protocol

from cds_service.facts import ClinicalFacts, MedicationUse
from cds_service.fhir.record import PatientRecord

log = logging.getLogger("cds_service.rules")


@dataclass(frozen=True)
class SuggestionSpec:
    """A suggestion template key from the rule's card file plus the values it needs."""

    key: str
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """What a rule concluded: the card variant, the text values and the triggering data."""

    rule_id: str
    variant: str
    values: Mapping[str, str]
    evidence: tuple[str, ...]  # one line per datum of the patient's record that triggered it
    suggestions: tuple[SuggestionSpec, ...] = ()


def short_name(use: MedicationUse) -> str:
    """A drug's short name for card text: its ingredients without acetaminophen."""
    return " / ".join(n for n in use.classification.names if n != "acetaminophen") or \
        use.classification.label


def draft_suggestions(drafts: list[MedicationUse], patient_id: str) -> list[SuggestionSpec]:
    """Replace each draft opioid (that has an id to remove) with naproxen."""
    specs = []
    for draft in drafts:
        draft_id = draft.resource.get("id")
        if isinstance(draft_id, str) and draft_id:
            specs.append(SuggestionSpec("replace-with-naproxen", {
                "drug": short_name(draft), "resource_id": f"MedicationRequest/{draft_id}",
                "patient_id": patient_id}))
    return specs


class Rule(Protocol):
    RULE_ID: str
    HOOKS: frozenset[str]

    def evaluate(self, record: PatientRecord, facts: ClinicalFacts,
                 settings: Mapping[str, Any]) -> list[Finding]: ...


def _rule_modules() -> list[ModuleType]:
    from cds_service.rules import (
        first_line_therapy_not_tried,
        opioid_benzodiazepine,
        opioid_safety_summary,
        opioid_start_chronic_lbp,
    )

    return [opioid_start_chronic_lbp, opioid_benzodiazepine, first_line_therapy_not_tried,
            opioid_safety_summary]


RULES: tuple[ModuleType, ...] = tuple(_rule_modules())


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(path: str | None = None) -> dict[str, Any]:
    """Default settings, overlaid with a JSON file (CDS_RULE_SETTINGS_FILE) when one is named."""
    defaults: dict[str, Any] = json.loads(resources.files(__package__).joinpath(
        "settings.json").read_text("utf-8"))
    path = path if path is not None else os.environ.get("CDS_RULE_SETTINGS_FILE", "")
    if path:
        with open(path, encoding="utf-8") as handle:
            defaults = _merge(defaults, json.load(handle))
    return defaults


def rules_for_hook(hook: str, settings: Mapping[str, Any]) -> list[ModuleType]:
    enabled = settings.get("rules", {})
    return [r for r in RULES
            if hook in r.HOOKS and enabled.get(r.RULE_ID, {}).get("enabled", True)]


def run_rules(hook: str, record: PatientRecord, facts: ClinicalFacts,
              settings: Mapping[str, Any]) -> tuple[list[Finding], list[str]]:
    """Every rule for the hook; one rule's exception is logged and the others still answer."""
    findings: list[Finding] = []
    failed: list[str] = []
    shared_exclusions = settings.get("exclusions", {})
    for rule in rules_for_hook(hook, settings):
        own = settings.get("rules", {}).get(rule.RULE_ID, {})
        rule_settings = {**own, "mme_table": settings.get("mme_table", "cdc-2022"),
                         "exclusions": {**shared_exclusions, **own.get("exclusions", {})}}
        try:
            findings.extend(rule.evaluate(record, facts, rule_settings))
        except Exception as exc:  # noqa: BLE001 - isolation: log, keep the other rules' cards
            # A bug: logged as unexpected with an error id, type and code location only
            # (exception messages can quote patient data); the other rules still answer.
            from cds_service.errors import unexpected_error

            unexpected_error(log, "rule-failed", exc, rule=rule.RULE_ID)
            failed.append(rule.RULE_ID)
    return findings, failed
