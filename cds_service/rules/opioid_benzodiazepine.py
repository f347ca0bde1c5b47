"""opioid-benzodiazepine: an opioid together with a benzodiazepine or another CNS depressant.

When: an opioid is ordered while a benzodiazepine is current, a benzodiazepine is ordered while
      an opioid is current, or both are in the same set of draft orders (order-select: advice
      about the selected orders; order-sign: all drafts); at chart review, when both are
      current. "Current" follows the medication table in facts/medications.py: an outside
      prescriber's drug the patient reports taking counts. Other CNS depressants
      (gabapentinoids by default; Z-drugs, barbiturates, carisoprodol by setting) give their
      own, softer card.
Unless: the other medication is not current (past its supply end, not merely "active"
      status); a shared patient exclusion applies (under 18, cancer, sickle cell disease,
      hospice or palliative care); the orders are inpatient or injectable (procedural
      sedation).
Then: the most dangerous finding, shown first: name both medications and the basis on which
      each counts as current, advise avoiding the combination (gradual taper, not abrupt
      stop) whatever each drug is for, offer removing the draft and co-prescribing naloxone.
      Buprenorphine or methadone for opioid use disorder gets different advice: do not
      withhold it.
Source: CDC Clinical Practice Guideline for Prescribing Opioids for Pain, 2022, Recommendation
        11; FDA boxed warning (2016) on opioid + benzodiazepine co-use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, MedicationUse, treats_opioid_use_disorder
from cds_service.findings import Finding, Line, SuggestionSpec, Text
from cds_service.knowledge.classifier import BENZODIAZEPINE, MOUD, NALOXONE, OPIOID
from cds_service.rules.criteria import current_medication, short_name
from cds_service.rules.exclusions import order_exclusion, patient_exclusion
from cds_service.rules.suggestions import draft_address
from cds_service.settings import Exclusions, RuleSettings, Settings

RULE_ID = "opioid-benzodiazepine"
_OPIOID_CLASSES = (OPIOID, MOUD)


@dataclass(frozen=True)
class CoPrescriptionSettings(RuleSettings):
    cns_depressant_classes: tuple[str, ...]


_FIELDS = frozenset({"opioids", "depressants", "naloxone_status"})
_CNS_FIELDS = _FIELDS | {"depressant_classes"}


class OpioidBenzodiazepine:
    id = RULE_ID
    hooks = frozenset({"order-select", "order-sign", "patient-view"})
    settings_type: type[RuleSettings] = CoPrescriptionSettings
    text: Mapping[str, frozenset[str]] = {
        "variant:opioid-benzodiazepine": _FIELDS,
        "variant:moud-benzodiazepine": _FIELDS,
        "variant:opioid-cns-depressant": _CNS_FIELDS,
        "variant:chart-opioid-benzodiazepine": _FIELDS,
        "variant:chart-moud-benzodiazepine": _FIELDS,
        "variant:chart-opioid-cns-depressant": _CNS_FIELDS,
        "line:naloxone-on-record": frozenset(),
        "line:naloxone-not-on-record": frozenset(),
    }

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        own = settings.rule(RULE_ID, CoPrescriptionSettings)
        depressants = (
            BENZODIAZEPINE,
            *[c for c in own.cns_depressant_classes if c != BENZODIAZEPINE],
        )
        pairs = _pairs(facts, depressants, own.exclusions)
        if not pairs or patient_exclusion(facts, own.exclusions):
            return []
        opioids = _unique([o for o, _ in pairs])
        others = _unique([d for _, d in pairs])
        with_benzo = any(d.has(BENZODIAZEPINE) for d in others)
        moud_only = all(treats_opioid_use_disorder(o, facts) for o in opioids)
        if with_benzo:
            variant = "moud-benzodiazepine" if moud_only else "opioid-benzodiazepine"
        else:
            variant = "opioid-cns-depressant"
        if not facts.ordering:
            variant = f"chart-{variant}"

        suggestions: list[SuggestionSpec] = []
        for use in (*opioids, *others):
            address = draft_address(use) if use.is_draft and use.in_focus else None
            if address and not treats_opioid_use_disorder(use, facts):
                suggestions.append(
                    SuggestionSpec(
                        "remove-draft", {"drug": short_name(use), "resource_id": address}
                    )
                )
        naloxone_on_hand = any(m.has(NALOXONE) for m in facts.history if m.active) or any(
            m.has(NALOXONE) for m in facts.drafts
        )
        if not naloxone_on_hand:
            suggestions.append(SuggestionSpec("naloxone", {"patient_id": facts.patient_id}))

        other_classes = sorted({c for d in others for c in depressants if d.has(c)})
        values: dict[str, Text] = {
            "opioids": ", ".join(o.name for o in opioids),
            "depressants": ", ".join(d.name for d in others),
            "depressant_classes": ", ".join(other_classes),
            "naloxone_status": Line(
                "naloxone-on-record" if naloxone_on_hand else "naloxone-not-on-record"
            ),
        }
        if variant.endswith("benzodiazepine"):
            del values["depressant_classes"]
        evidence = tuple(current_medication(u, facts) for u in (*opioids, *others))
        return [Finding(RULE_ID, variant, values, evidence, tuple(suggestions))]


def _is_opioid(use: MedicationUse) -> bool:
    return any(use.has(c) for c in _OPIOID_CLASSES)


def _is_depressant(use: MedicationUse, classes: tuple[str, ...]) -> bool:
    return any(use.has(c) for c in classes)


def _pairs(
    facts: ClinicalFacts, depressants: tuple[str, ...], exclusions: Exclusions
) -> list[tuple[MedicationUse, MedicationUse]]:
    current = [
        m for m in facts.current_medications() if order_exclusion(m, facts, exclusions) is None
    ]
    active_opioids = [m for m in current if _is_opioid(m)]
    active_depressants = [m for m in current if _is_depressant(m, depressants)]
    if not facts.ordering:
        return [(o, d) for o in active_opioids for d in active_depressants if o is not d]
    drafts = [m for m in facts.drafts if order_exclusion(m, facts, exclusions) is None]
    draft_opioids = [m for m in drafts if _is_opioid(m)]
    draft_depressants = [m for m in drafts if _is_depressant(m, depressants)]
    pairs: list[tuple[MedicationUse, MedicationUse]] = []
    for draft in drafts:
        if not draft.in_focus:
            continue
        if _is_opioid(draft):
            pairs.extend(
                (draft, d) for d in active_depressants + draft_depressants if d is not draft
            )
        if _is_depressant(draft, depressants):
            pairs.extend((o, draft) for o in active_opioids + draft_opioids if o is not draft)
    unique: list[tuple[MedicationUse, MedicationUse]] = []
    for pair in pairs:
        if not any(pair[0] is u[0] and pair[1] is u[1] for u in unique):
            unique.append(pair)
    return unique


def _unique(uses: list[MedicationUse]) -> list[MedicationUse]:
    out: list[MedicationUse] = []
    for use in uses:
        if not any(use is seen for seen in out):
            out.append(use)
    return out
