"""opioid-naloxone-offer: offer naloxone with an opioid order that raises overdose risk.

When: an opioid analgesic is being ordered (order-select: the selected orders; order-sign:
      all drafts) and either the patient's total with the order set reaches the threshold
      (default 50 MME/day: current opioid orders and statements plus every opioid draft; the
      known part of the total, so an unknown dose never lowers it) or a benzodiazepine is
      current or in the order set; and no naloxone is on record (a current order, dispense
      or medication-list entry) or in the order set.
Unless: a shared exclusion applies (under 18, cancer, sickle cell disease, hospice or
      palliative care, inpatient or injectable order, opioid use disorder treatment); the
      order set is being signed with naloxone already in it.
Then: one info card: co-prescribe naloxone, the order with its MME/day and total, the
      benzodiazepine, no naloxone on record; suggests naloxone 4 mg nasal spray. When the
      co-prescription card (opioid-benzodiazepine) is shown it carries the naloxone
      suggestion instead and names this rule in its covers (say it once). Ships in silent
      mode (settings.json "mode": "silent"): its would-be cards are logged and appear in
      the governance report (`cds-service report`) before a site turns it on.
Source: CDC Clinical Practice Guideline for Prescribing Opioids for Pain, 2022,
        Recommendation 8 (offer naloxone at 50 MME/day or more, or with a benzodiazepine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts
from cds_service.findings import Finding, Line, SuggestionSpec, Text
from cds_service.knowledge.classifier import BENZODIAZEPINE, NALOXONE
from cds_service.rules.dose import being_ordered, current_medication, decision_of, opioid_total
from cds_service.rules.exclusions import pain_opioid_drafts_in_scope
from cds_service.rules.lines import short_name
from cds_service.settings import RuleSettings, Settings

RULE_ID = "opioid-naloxone-offer"


@dataclass(frozen=True)
class NaloxoneOfferSettings(RuleSettings):
    threshold_mme: int


_FIELDS = frozenset({"drug", "action"})


class OpioidNaloxoneOffer:
    id = RULE_ID
    hooks = frozenset({"order-select", "order-sign"})
    settings_type: type[RuleSettings] = NaloxoneOfferSettings
    text: Mapping[str, frozenset[str]] = {
        "variant:high-dose": _FIELDS | {"mme"},
        "variant:with-benzodiazepine": _FIELDS | {"benzodiazepine"},
        "line:act-offer": frozenset(),
        "line:no-naloxone": frozenset(),
    }

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        own = settings.rule(RULE_ID, NaloxoneOfferSettings)
        if not facts.ordering:
            return []
        drafts = pain_opioid_drafts_in_scope(facts, own.exclusions)
        if not drafts:
            return []
        on_hand = any(u.active for u in facts.history_with(NALOXONE)) or any(
            d.has(NALOXONE) for d in facts.drafts
        )
        if on_hand:
            return []
        known, _, _ = opioid_total(facts)
        benzodiazepines = [
            u for u in (*facts.current_medications(), *facts.drafts) if u.has(BENZODIAZEPINE)
        ]
        high = known >= own.threshold_mme
        if not high and not benzodiazepines:
            return []
        values: dict[str, Text] = {
            "drug": ", ".join(dict.fromkeys(short_name(d) for d in drafts)),
            "action": Line("act-offer"),
        }
        if high:
            variant = "high-dose"
            values["mme"] = f"{known:g}"
        else:
            variant = "with-benzodiazepine"
            values["benzodiazepine"] = ", ".join(
                dict.fromkeys(short_name(b) for b in benzodiazepines)
            )
        evidence = (
            *(being_ordered(d, facts) for d in drafts),
            *(current_medication(b, facts) for b in benzodiazepines),
            Line("no-naloxone"),
        )
        # the naloxone line is decisive: keep it within the three lines a card shows
        if len(evidence) > 3:
            evidence = (*evidence[:2], Line("no-naloxone"))
        suggestion = SuggestionSpec("naloxone", {"patient_id": facts.patient_id})
        return [
            Finding(
                RULE_ID, variant, values, evidence, (suggestion,), (), decision_of(drafts, facts)
            )
        ]
