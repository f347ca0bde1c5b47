"""opioid-start-chronic-lbp: an opioid analgesic started for a patient with chronic low back pain.

When: a draft opioid analgesic (tramadol and tapentadol included; order-select: the selected
      orders) for a patient who is opioid-naive (no opioid supply in the last 90 days from
      orders, dispenses or statements that were taken, measured from the end of the supply;
      the drafts do not count) and has chronic low back pain (coded chronic; low back pain
      with a chronic-pain diagnosis; or low back pain with onset, else recorded date, more
      than 12 weeks ago).
Unless: a shared exclusion applies (under 18, cancer, sickle cell disease, hospice/palliative
      care, inpatient or injectable order, opioid use disorder treatment), or the medication
      history was incomplete (opioid-naive status cannot be known).
Then: warn (critical for an extended-release / long-acting start): what to do first (the
      safer alternative the record allows, naming the missing first-line steps), then the
      order with its MME/day and the patient's total, the condition and date that made the
      pain chronic, and the data that showed the patient opioid-naive. This card also answers the
      first-line-therapy-not-tried concern (say it once), so that card is not shown beside it.
      Suggest naproxen instead, and physical therapy and CBT when non-drug therapy is missing.
Source: CDC 2022 Recommendations 1-3 (non-opioid therapies preferred for subacute and chronic
        pain; immediate-release opioids when starting); ACP 2017 low back pain guideline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, format_day
from cds_service.findings import Finding, Line, SuggestionSpec, Text
from cds_service.rules.alternatives import first_line_status
from cds_service.rules.criteria import chronic_low_back_pain, opioid_exposure
from cds_service.rules.dose import being_ordered, decision_of
from cds_service.rules.exclusions import pain_opioid_drafts_in_scope
from cds_service.rules.lines import short_name
from cds_service.rules.suggestions import (
    allergy_lines,
    alternative_line,
    draft_replacements,
    non_drug_referrals,
)
from cds_service.settings import RuleSettings, Settings

RULE_ID = "opioid-start-chronic-lbp"
FIRST_LINE_RULE_ID = "first-line-therapy-not-tried"


@dataclass(frozen=True)
class OpioidStartSettings(RuleSettings):
    naive_lookback_days: int
    chronic_after_days: int
    first_line_lookback_days: int


_VARIANT_FIELDS = frozenset({"drug", "action"})
_ACTION = frozenset({"alternative", "then"})


class OpioidStartChronicLbp:
    id = RULE_ID
    hooks = frozenset({"order-select", "order-sign"})
    settings_type: type[RuleSettings] = OpioidStartSettings
    text: Mapping[str, frozenset[str]] = {
        "variant:opioid-start": _VARIANT_FIELDS,
        "variant:extended-release-start": _VARIANT_FIELDS,
        "line:chronic-coded": frozenset({"condition"}),
        "line:chronic-coded-since": frozenset({"condition", "since"}),
        "line:chronic-with-chronic-pain": frozenset({"condition", "chronic_pain"}),
        "line:chronic-by-onset": frozenset({"condition", "date", "weeks"}),
        "line:chronic-by-recorded": frozenset({"condition", "date", "weeks"}),
        "line:opioid-naive": frozenset({"since"}),
        "line:opioid-naive-orders-only": frozenset({"since"}),
        "line:act-both-missing": _ACTION,
        "line:act-drug-missing": _ACTION,
        "line:act-non-drug-missing": frozenset({"then"}),
        "line:act-both-found": frozenset({"then"}),
        "line:then-ir": frozenset(),
        "line:then-er": frozenset(),
        "line:alternative-nsaid": frozenset(),
        "line:alternative-acetaminophen": frozenset(),
        "line:alternative-none": frozenset(),
        "line:alternative-nsaid-unchecked": frozenset(),
        "line:alternative-acetaminophen-unchecked": frozenset(),
    }

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        own = settings.rule(RULE_ID, OpioidStartSettings)
        drafts = pain_opioid_drafts_in_scope(facts, own.exclusions)
        if not drafts:
            return []
        chronic = chronic_low_back_pain(facts, own.chronic_after_days)
        if chronic is None:
            return []
        if facts.completeness.medication_history != "complete":
            return []  # an incomplete history cannot show the patient is opioid-naive
        exposure = opioid_exposure(facts, own.naive_lookback_days)
        if not exposure.naive:
            return []
        first_line = first_line_status(facts, own.first_line_lookback_days)

        extended = [d for d in drafts if d.classification.extended_release]
        naive_key = (
            "opioid-naive"
            if facts.completeness.dispenses_and_statements
            else "opioid-naive-orders-only"
        )
        # most decisive first: the order (with its dose), why the pain is chronic, why the
        # patient counts as opioid-naive; the first-line steps the record shows come after
        evidence = (
            *(being_ordered(d, facts) for d in drafts),
            chronic.evidence,
            Line(naive_key, {"since": format_day(exposure.window_start)}),
            # then an allergy that changed the alternative offered: it explains the
            # suggestion, but the three lines above decide the card (an allergy list that
            # could not be read is said in the advice, where it cannot be cut off)
            *allergy_lines(facts, not_checked=False),
            *first_line.lines(),
        )
        then = Line("then-er" if extended else "then-ir")
        advice: dict[str, Text] = {
            "alternative": alternative_line(facts, says_unchecked=True),
            "then": then,
        }
        if first_line.drug_missing and first_line.non_drug_missing:
            action = Line("act-both-missing", advice)
        elif first_line.drug_missing:
            action = Line("act-drug-missing", advice)
        elif first_line.non_drug_missing:
            action = Line("act-non-drug-missing", {"then": then})
        else:
            action = Line("act-both-found", {"then": then})
        values: dict[str, Text] = {
            "drug": ", ".join(dict.fromkeys(short_name(d) for d in (extended or drafts))),
            "action": action,
        }
        suggestions: list[SuggestionSpec] = draft_replacements(drafts, facts)
        if first_line.non_drug_missing or not first_line.non_drug_known:
            suggestions += non_drug_referrals(facts)
        variant = "extended-release-start" if extended else "opioid-start"
        covers = (FIRST_LINE_RULE_ID,) if first_line.any_missing else ()
        return [
            Finding(
                RULE_ID,
                variant,
                values,
                evidence,
                tuple(suggestions),
                covers,
                decision_of(drafts, facts),
            )
        ]
