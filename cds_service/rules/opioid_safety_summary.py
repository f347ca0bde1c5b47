"""opioid-safety-summary: at chart opening, one card summarising opioid safety for a patient
with low back pain who has current opioids.

When: chart review (patient-view), the patient has low back pain and at least one current
      opioid analgesic (an order or a statement; the medication table in
      facts/medications.py).
Unless: a shared patient exclusion applies (under 18, cancer, sickle cell disease, hospice).
Then: one info card: current opioids with MME/day each and in total (unknown doses named,
      never counted as 0), benzodiazepine / CNS depressant co-use, naloxone on hand,
      first-line therapies tried and not tried; offer naloxone when none is on record,
      unless a shown card (the co-prescription card) already offers it: then the summary
      leaves out its naloxone clause, flag and suggestion (say it once).
Source: CDC 2022 Recommendations 1, 2, 4, 5, 8 and 11 (reassess benefits and risks, MME,
        naloxone, avoid co-prescribing); ACP 2017 low back pain guideline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, format_day
from cds_service.findings import Finding, Line, SuggestionSpec
from cds_service.knowledge.classifier import BENZODIAZEPINE, NALOXONE, OPIOID
from cds_service.knowledge.dosing import total_mme
from cds_service.rules.alternatives import first_line_status
from cds_service.rules.criteria import low_back_pain
from cds_service.rules.dose import MME_AVOID, MME_REASSESS
from cds_service.rules.exclusions import patient_exclusion
from cds_service.rules.lines import drug_label
from cds_service.settings import RuleSettings, Settings

RULE_ID = "opioid-safety-summary"


@dataclass(frozen=True)
class SafetySummarySettings(RuleSettings):
    lookback_days: int
    cns_depressant_classes: tuple[str, ...]


# the rule whose concern (naloxone) another card may already answer (say it once)
NALOXONE_RULE_ID = "opioid-naloxone-offer"
_SUMMARY = frozenset({"count", "total", "action", "naloxone"})


class OpioidSafetySummary:
    id = RULE_ID
    hooks = frozenset({"patient-view"})
    settings_type: type[RuleSettings] = SafetySummarySettings
    text: Mapping[str, frozenset[str]] = {
        "variant:summary": _SUMMARY,
        "variant:summary-flagged": _SUMMARY | {"flags"},
        "line:opioids-total": frozenset({"opioids", "total"}),
        "line:opioid-mme": frozenset({"drug", "mme"}),
        "line:opioid-mme-unknown": frozenset({"drug", "reason"}),
        "line:total-mme": frozenset({"mme"}),
        "line:total-mme-partial": frozenset({"mme"}),
        "line:total-mme-unknown": frozenset(),
        "line:total-short": frozenset({"mme"}),
        "line:total-short-partial": frozenset({"mme"}),
        "line:total-short-unknown": frozenset(),
        "line:taken-with": frozenset({"drug"}),
        "line:act-review": frozenset(),
        "line:act-review-50": frozenset(),
        "line:act-review-90": frozenset(),
        "line:regimen": frozenset({"drug", "orders", "since", "latest"}),
        "line:naloxone-yes": frozenset(),
        "line:naloxone-none": frozenset(),
        "line:flag-benzodiazepine": frozenset(),
        "line:flag-cns-depressant": frozenset(),
        "line:flag-no-naloxone": frozenset(),
        "line:count-one": frozenset(),
        "line:count-many": frozenset({"count"}),
    }

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        own = settings.rule(RULE_ID, SafetySummarySettings)
        current = facts.current_medications()
        # dispenses carry no dose to convert: the order or statement behind them does
        opioids = [u for u in current if u.has(OPIOID) and u.source != "dispense"]
        if not opioids or not low_back_pain(facts):
            return []
        if patient_exclusion(facts, own.exclusions):
            return []
        per_drug: list[Line] = []
        regimens: list[Line] = []
        results = []
        for use in opioids:
            label = drug_label(use)
            mme = facts.mme(use)
            if mme is None:
                continue
            results.append(mme)
            if mme.mme_per_day is not None:
                per_drug.append(Line("opioid-mme", {"drug": label, "mme": f"{mme.mme_per_day:g}"}))
            else:
                per_drug.append(
                    Line(
                        "opioid-mme-unknown",
                        {"drug": label, "reason": mme.reason or "MME unknown: dose not computable"},
                    )
                )
            regimen = facts.regimen(use)
            if len(regimen) > 1 and regimen[0].start and use.start:
                # successive re-orders of one drug are one regimen, counted once
                regimens.append(
                    Line(
                        "regimen",
                        {
                            "drug": label,
                            "orders": str(len(regimen)),
                            "since": format_day(regimen[0].start),
                            "latest": format_day(use.start),
                        },
                    )
                )
        total = total_mme(results)
        total_text = f"{total.mme_per_day:g}"
        if total.complete:
            total_line = Line("total-mme", {"mme": total_text})
            short = Line("total-short", {"mme": total_text})
        elif total.mme_per_day > 0:
            total_line = Line("total-mme-partial", {"mme": total_text})
            short = Line("total-short-partial", {"mme": total_text})
        else:
            total_line = Line("total-mme-unknown")
            short = Line("total-short-unknown")
        # one line for the opioids and their total, then what they are taken with, then the
        # first-line steps (missing first)
        lines = [Line("opioids-total", {"opioids": tuple(per_drug), "total": total_line})]
        lines += regimens
        depressants = (BENZODIAZEPINE, *own.cns_depressant_classes)
        co_use = [u for u in current if not u.has(OPIOID) and any(u.has(c) for c in depressants)]
        lines += [Line("taken-with", {"drug": drug_label(u)}) for u in co_use]
        naloxone = any(u.active for u in facts.history_with(NALOXONE))
        first_line = first_line_status(facts, own.lookback_days, include_drafts=False)
        steps = first_line.lines()
        lines += [ln for ln in steps if "missing" in ln.key] + [
            ln for ln in steps if "missing" not in ln.key
        ]

        flags: list[Line] = []
        if co_use:
            flags.append(
                Line(
                    "flag-benzodiazepine"
                    if any(u.has(BENZODIAZEPINE) for u in co_use)
                    else "flag-cns-depressant"
                )
            )
        if not naloxone:
            flags.append(Line("flag-no-naloxone"))
        action = (
            "act-review-90"
            if total.mme_per_day >= MME_AVOID
            else "act-review-50"
            if total.mme_per_day >= MME_REASSESS
            else "act-review"
        )
        count = (
            Line("count-one")
            if len(opioids) == 1
            else Line("count-many", {"count": str(len(opioids))})
        )
        values: dict[str, str | Line | tuple[Line, ...]] = {
            "count": count,
            "total": short,
            "action": Line(action),
            "naloxone": Line("naloxone-yes" if naloxone else "naloxone-none"),
        }
        if flags:
            values["flags"] = tuple(flags)
        suggestions = (
            () if naloxone else (SuggestionSpec("naloxone", {"patient_id": facts.patient_id}),)
        )
        variant = "summary-flagged" if flags else "summary"
        if naloxone:
            return [Finding(RULE_ID, variant, values, tuple(lines), suggestions)]
        # say it once: when a shown card (the co-prescription card) carries the naloxone offer,
        # this summary leaves out its own naloxone clause, flag and suggestion
        others = tuple(f for f in flags if f.key != "flag-no-naloxone")
        quiet = {**values, "naloxone": ()}
        if others:
            quiet["flags"] = others
        else:
            quiet.pop("flags", None)
        without = Finding(RULE_ID, "summary-flagged" if others else "summary", quiet, tuple(lines))
        return [
            Finding(
                RULE_ID,
                variant,
                values,
                tuple(lines),
                suggestions,
                mentions=(NALOXONE_RULE_ID,),
                if_covered=without,
            )
        ]
