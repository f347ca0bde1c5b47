"""The rules the service runs: one line per rule (README "Adding a rule")."""

from __future__ import annotations

from cds_service.rules.base import Rule
from cds_service.rules.first_line_therapy_not_tried import FirstLineTherapyNotTried
from cds_service.rules.opioid_benzodiazepine import OpioidBenzodiazepine
from cds_service.rules.opioid_naloxone_offer import OpioidNaloxoneOffer
from cds_service.rules.opioid_safety_summary import OpioidSafetySummary
from cds_service.rules.opioid_start_chronic_lbp import OpioidStartChronicLbp


def default_rules() -> tuple[Rule, ...]:
    return (
        OpioidBenzodiazepine(),
        OpioidStartChronicLbp(),
        FirstLineTherapyNotTried(),
        OpioidSafetySummary(),
        OpioidNaloxoneOffer(),
    )
