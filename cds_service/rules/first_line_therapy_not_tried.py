"""first-line-therapy-not-tried: an opioid ordered for low back pain before first-line therapy.

When: a draft opioid analgesic (tramadol included; order-select: the selected orders) for a
      patient with low back pain of any duration (an active condition, or the order's own
      reasonCode / reasonReference), and within the look-back (default 2 years) either
      first-line step has no record: the drug step (an NSAID or acetaminophen taken for pain;
      not low-dose aspirin, a cold remedy or an opioid combination's acetaminophen) or the
      non-drug step (exercise/physical therapy, psychological or mind-body therapy, spinal
      manipulation, acupuncture, massage, multidisciplinary rehabilitation, done or referred;
      a revoked, cancelled, not-done or entered-in-error record does not count).
Unless: a shared exclusion applies; a step whose records were not available is not called
      missing (the card says so instead). When the opioid-start-chronic-lbp card fires for the
      same orders it says this too, and the engine shows that one card only.
Then: warning when both steps are missing, info when one is; the card lists exactly which
      steps were found (with dates) and which are missing, notes untried second-line options
      (muscle relaxant, duloxetine, tricyclic), and offers the missing steps as orders.
Source: ACP 2017 guideline for acute, subacute and chronic low back pain; CDC 2022
        Recommendation 2 (maximise non-opioid therapies first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts
from cds_service.findings import Finding, Line, SuggestionSpec, Text
from cds_service.knowledge.classifier import OPIOID
from cds_service.rules.criteria import (
    being_ordered,
    current_medication,
    first_line_status,
    low_back_pain,
    low_back_pain_line,
    short_name,
)
from cds_service.rules.exclusions import pain_opioid_drafts_in_scope
from cds_service.rules.suggestions import draft_replacements, non_drug_referrals
from cds_service.settings import RuleSettings, Settings

RULE_ID = "first-line-therapy-not-tried"


@dataclass(frozen=True)
class FirstLineSettings(RuleSettings):
    lookback_days: int


class FirstLineTherapyNotTried:
    id = RULE_ID
    hooks = frozenset({"order-select", "order-sign"})
    settings_type: type[RuleSettings] = FirstLineSettings
    text: Mapping[str, frozenset[str]] = {
        "variant:both-missing": frozenset({"drug", "opioid_context"}),
        "variant:drug-missing": frozenset({"drug", "opioid_context"}),
        "variant:non-drug-missing": frozenset({"drug", "opioid_context"}),
        "line:opioid-new": frozenset(),
        "line:opioid-ongoing": frozenset(),
    }

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        own = settings.rule(RULE_ID, FirstLineSettings)
        drafts = pain_opioid_drafts_in_scope(facts, own.exclusions)
        if not drafts:
            return []
        pain = low_back_pain(facts)
        if not pain:
            return []
        status = first_line_status(facts, own.lookback_days)
        if not status.any_missing:
            return []
        # already taking an opioid (a renewal, or another prescriber's): first-line therapy is
        # added alongside it, and the opioid is never switched off abruptly (CDC 2022 Rec 5)
        ongoing = [u for u in facts.history if u.active and u.has(OPIOID)]
        evidence = (
            low_back_pain_line(pain[0]),
            *(being_ordered(d) for d in drafts),
            *(current_medication(u, facts) for u in ongoing),
            *status.lines(),
        )
        variant = (
            "both-missing"
            if status.drug_missing and status.non_drug_missing
            else "drug-missing"
            if status.drug_missing
            else "non-drug-missing"
        )
        suggestions: list[SuggestionSpec] = []
        if status.drug_missing and not ongoing:
            suggestions += draft_replacements(drafts, facts)
        if status.non_drug_missing:
            suggestions += non_drug_referrals(facts)
        values: dict[str, Text] = {
            "drug": ", ".join(dict.fromkeys(short_name(d) for d in drafts)),
            "opioid_context": Line("opioid-ongoing" if ongoing else "opioid-new"),
        }
        return [Finding(RULE_ID, variant, values, evidence, tuple(suggestions))]
