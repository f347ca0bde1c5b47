"""first-line-therapy-not-tried: an opioid ordered for low back pain before first-line therapy.

When: a draft opioid analgesic (tramadol included; order-select: the selected orders) for a
      patient with low back pain of any duration (an active condition, or the order's own
      reasonCode / reasonReference), and within the look-back (default 2 years) either
      first-line step has no record: the drug step (an NSAID or acetaminophen taken for pain;
      not a cold remedy or an opioid combination's acetaminophen; aspirin only with a pain
      reason or a dosage above 325 mg a day, never antiplatelet aspirin) or the
      non-drug step (exercise/physical therapy, psychological or mind-body therapy, spinal
      manipulation, acupuncture, massage, multidisciplinary rehabilitation, done or referred;
      a revoked, cancelled, not-done or entered-in-error record does not count).
Unless: a shared exclusion applies; a step whose records were not available is not called
      missing (the card says so instead). When the opioid-start-chronic-lbp card fires for the
      same orders it says this too, and the engine shows that one card only.
Then: warning when both steps are missing, info when one is; what to do first (the missing
      steps, with the alternative the record allows: an NSAID or aspirin allergy bars
      naproxen, an acetaminophen allergy acetaminophen; an opioid allergy changes nothing),
      then the order with its MME/day and total, the missing steps, the allergy that decided
      the alternative (or that allergies were not checked), and the steps found; offers the
      missing steps as orders.
      A second-line note names only duloxetine: muscle relaxants and tricyclics sedate, and
      the patient is being ordered an opioid.
Source: ACP 2017 guideline for acute, subacute and chronic low back pain; CDC 2022
        Recommendation 2 (maximise non-opioid therapies first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts
from cds_service.findings import Finding, Line, SuggestionSpec, Text
from cds_service.knowledge.classifier import OPIOID
from cds_service.rules.alternatives import first_line_status
from cds_service.rules.criteria import low_back_pain, low_back_pain_line
from cds_service.rules.dose import being_ordered, current_medication, decision_of
from cds_service.rules.exclusions import pain_opioid_drafts_in_scope
from cds_service.rules.lines import short_name
from cds_service.rules.suggestions import (
    allergy_lines,
    alternative,
    alternative_line,
    draft_replacements,
    non_drug_referrals,
)
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
        "variant:both-missing": frozenset({"drug", "action"}),
        "variant:drug-missing": frozenset({"drug", "action"}),
        "variant:non-drug-missing": frozenset({"drug", "action"}),
        "line:act-both-missing": frozenset({"alternative"}),
        "line:act-both-missing-ongoing": frozenset({"alternative"}),
        "line:act-drug-missing": frozenset({"alternative"}),
        "line:act-drug-missing-ongoing": frozenset({"alternative"}),
        "line:act-non-drug-missing": frozenset(),
        "line:act-non-drug-missing-ongoing": frozenset(),
        "line:alternative-nsaid": frozenset(),
        "line:alternative-acetaminophen": frozenset(),
        "line:alternative-none": frozenset(),
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
        ongoing = [u for u in facts.history_with(OPIOID) if u.active]
        # most decisive first: the order (with its dose), the missing steps, the current
        # opioid, the steps found, then the condition (the summary already names it)
        steps = [ln for ln in status.lines() if ln.key != "second-line-not-tried"]
        missing = [ln for ln in steps if "missing" in ln.key or "unknown" in ln.key]
        evidence = (
            *(being_ordered(d, facts) for d in drafts),
            *missing,
            # why the alternative offered is acetaminophen or none (or that allergies were
            # not checked), next to the missing drug step it answers
            *(allergy_lines(facts) if status.drug_missing else ()),
            *(current_medication(u, facts) for u in ongoing),
            *(ln for ln in steps if ln not in missing),
            low_back_pain_line(pain[0]),
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
        # neither an NSAID nor acetaminophen may be added: the action names PT/CBT only
        shown = variant
        if variant == "both-missing" and alternative(facts) is None:
            shown = "non-drug-missing"
        action_key = f"act-{shown}" + ("-ongoing" if ongoing else "")
        action = Line(
            action_key,
            {} if shown == "non-drug-missing" else {"alternative": alternative_line(facts)},
        )
        values: dict[str, Text] = {
            "drug": ", ".join(dict.fromkeys(short_name(d) for d in drafts)),
            "action": action,
        }
        decision = decision_of(drafts, facts)
        return [Finding(RULE_ID, variant, values, evidence, tuple(suggestions), (), decision)]
