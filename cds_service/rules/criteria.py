"""Shared clinical criteria, defined once and reused by name by every rule (clinical brief 1-2).

- chronic low back pain: an active LBP condition coded as chronic, or paired with an active
  chronic-pain diagnosis, or with onset (else recorded date) more than 12 weeks ago;
- opioid-naive (CDC): no opioid supply in the look-back (default 90 days) from orders,
  dispenses or statements that were taken (facts' medication table), measured from the end of
  the actual supply with no "still current" allowance; the drafts being ordered never count.

The other shared criteria live beside this module: first-line / second-line therapy and the
NSAID, acetaminophen and sedating-drug barriers in alternatives.py; the order's MME/day, the
patient's total and the decision signature of a draft in dose.py; drug labels and the shared
card lines in lines.py.

Every criterion returns the evidence lines (card text keys, cards/lines.json) that say, in the
patient's own data, why it holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, ConditionFact, MedicationUse, format_day
from cds_service.findings import Line
from cds_service.knowledge.classifier import ANTITUSSIVE, MOUD, OPIOID


def low_back_pain(facts: ClinicalFacts) -> list[ConditionFact]:
    return facts.conditions_in("low-back-pain")


def low_back_pain_line(condition: ConditionFact) -> Line:
    if condition.onset_source == "order-reason":
        return Line("lbp-order-reason", {"condition": condition.label})
    if condition.onset is None:
        return Line("lbp-undated", {"condition": condition.label})
    key = "lbp-onset" if condition.onset_source == "onset" else "lbp-recorded"
    return Line(key, {"condition": condition.label, "date": format_day(condition.onset)})


@dataclass(frozen=True)
class ChronicLowBackPain:
    condition: ConditionFact
    evidence: Line  # why it counts as chronic, naming the date


def chronic_low_back_pain(
    facts: ClinicalFacts, chronic_after_days: int
) -> ChronicLowBackPain | None:
    """The condition (and evidence) that makes this patient's low back pain chronic, if any."""
    conditions = low_back_pain(facts)
    if not conditions:
        return None
    for condition in conditions:
        if condition.has("chronic-low-back-pain"):
            if condition.onset:
                return ChronicLowBackPain(
                    condition,
                    Line(
                        "chronic-coded-since",
                        {"condition": condition.label, "since": format_day(condition.onset)},
                    ),
                )
            return ChronicLowBackPain(
                condition, Line("chronic-coded", {"condition": condition.label})
            )
    chronic_pain = facts.conditions_in("chronic-pain")
    if chronic_pain:
        return ChronicLowBackPain(
            conditions[0],
            Line(
                "chronic-with-chronic-pain",
                {"condition": conditions[0].label, "chronic_pain": chronic_pain[0].label},
            ),
        )
    cutoff = facts.today - dt.timedelta(days=chronic_after_days)
    dated = sorted((c for c in conditions if c.onset is not None), key=lambda c: c.onset or cutoff)
    for condition in dated:
        if condition.onset is not None and condition.onset < cutoff:
            key = "chronic-by-onset" if condition.onset_source == "onset" else "chronic-by-recorded"
            return ChronicLowBackPain(
                condition,
                Line(
                    key,
                    {
                        "condition": condition.label,
                        "date": format_day(condition.onset),
                        "weeks": str((facts.today - condition.onset).days // 7),
                        "threshold_weeks": str(chronic_after_days // 7),
                    },
                ),
            )
    return None


def _is_opioid_exposure(use: MedicationUse) -> bool:
    return (use.has(OPIOID) or use.has(MOUD)) and not (use.has(ANTITUSSIVE) and not use.has(OPIOID))


@dataclass(frozen=True)
class OpioidExposure:
    naive: bool
    window_start: dt.date


def opioid_exposure(facts: ClinicalFacts, lookback_days: int) -> OpioidExposure:
    """Whether the patient is opioid-naive: no opioid supply in the look-back (CDC 2022),
    measured from the end of the actual supply (no allowance)."""
    window_start = facts.today - dt.timedelta(days=lookback_days)

    def in_window(use: MedicationUse) -> bool:
        if use.active:
            return True
        if use.start is None:
            return False  # undated and not current: cannot be placed in the window
        return use.start <= facts.today and (use.exposure_end or use.start) >= window_start

    # only opioid and MOUD entries can be exposure (_is_opioid_exposure)
    candidates = facts.history_with(OPIOID, MOUD)
    exposed = any(_is_opioid_exposure(u) and in_window(u) for u in candidates)
    return OpioidExposure(not exposed, window_start)
