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
Then: the most dangerous finding, shown first. One line of what to do, tailored to which drug
      is new and which is current (and whether naloxone is on record); then the new order
      (an opioid with its MME/day and the patient's total) and the current drug with the
      basis on which it counts as current. Suggestions, the constructive one first: replace
      a new opioid with a non-opioid (naproxen, else acetaminophen: never an NSAID where one
      is current or contraindicated), co-prescribe naloxone (this card then also answers
      opioid-naloxone-offer: say it once), and only then remove the draft. Never a sedating
      drug: the patient takes a CNS depressant by definition.
      Buprenorphine or methadone for opioid use disorder gets different advice: do not
      withhold it. An opioid cough product (codeine or hydrocodone with an expectorant or
      antihistamine) with a benzodiazepine, and no pain opioid, gets an info card: remove
      the cough product or use a non-opioid one (a one-click removal of its draft); no MME
      and no naloxone offer (it is not a pain opioid; the FDA 2016 warning covers opioid
      pain or cough medicines).
Source: CDC Clinical Practice Guideline for Prescribing Opioids for Pain, 2022, Recommendation
        11; FDA boxed warning (2016) on opioid + benzodiazepine co-use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, MedicationUse, treats_opioid_use_disorder
from cds_service.findings import Finding, Line, SuggestionSpec, Text
from cds_service.knowledge.classifier import ANTITUSSIVE, BENZODIAZEPINE, MOUD, NALOXONE, OPIOID
from cds_service.rules.dose import being_ordered, continues_regimen, current_medication, decision_of
from cds_service.rules.exclusions import order_exclusion, patient_exclusion
from cds_service.rules.lines import short_name
from cds_service.rules.suggestions import allergy_lines, draft_replacements, removals
from cds_service.settings import Exclusions, RuleSettings, Settings

RULE_ID = "opioid-benzodiazepine"
_OPIOID_CLASSES = (OPIOID, MOUD)


@dataclass(frozen=True)
class CoPrescriptionSettings(RuleSettings):
    cns_depressant_classes: tuple[str, ...]


_FIELDS = frozenset({"opioids", "depressants", "action", "naloxone_status"})
_COUGH_FIELDS = frozenset({"opioids", "depressants", "action"})
_ACTION = frozenset({"opioids", "depressants"})
NALOXONE_RULE_ID = "opioid-naloxone-offer"


class OpioidBenzodiazepine:
    id = RULE_ID
    hooks = frozenset({"order-select", "order-sign", "patient-view"})
    settings_type: type[RuleSettings] = CoPrescriptionSettings
    text: Mapping[str, frozenset[str]] = {
        "variant:opioid-benzodiazepine": _FIELDS,
        "variant:moud-benzodiazepine": _FIELDS,
        "variant:opioid-cns-depressant": _FIELDS,
        "variant:chart-opioid-benzodiazepine": _FIELDS,
        "variant:chart-moud-benzodiazepine": _FIELDS,
        "variant:chart-opioid-cns-depressant": _FIELDS,
        "variant:cough-benzodiazepine": _COUGH_FIELDS,
        "variant:chart-cough-benzodiazepine": _COUGH_FIELDS,
        "line:act-cough": _ACTION,
        "line:act-opioid-new": frozenset({"depressants"}),
        "line:act-opioid-continue": _ACTION,
        "line:act-depressant-new": _ACTION,
        "line:act-both-new": frozenset(),
        "line:act-moud": frozenset({"depressants"}),
        "line:act-cns": _ACTION,
        "line:act-chart": frozenset(),
        "line:act-chart-cns": frozenset(),
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
        if not pairs:
            cough = _pairs(facts, (BENZODIAZEPINE,), own.exclusions, (ANTITUSSIVE,))
            if cough and not patient_exclusion(facts, own.exclusions):
                return [_cough_finding(facts, cough)]
            return []
        if patient_exclusion(facts, own.exclusions):
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

        def new(use: MedicationUse) -> bool:
            return use.is_draft and use.in_focus

        new_opioids = [o for o in opioids if new(o) and not treats_opioid_use_disorder(o, facts)]
        new_others = [d for d in others if new(d)]
        # the decision first, tailored to which drug is new and which is current
        if variant.startswith("chart-"):
            action = "act-chart-cns" if variant.endswith("cns-depressant") else "act-chart"
            if "moud" in variant:
                action = "act-moud"
        elif moud_only:
            action = "act-moud"
        elif not with_benzo:
            action = "act-cns"
        elif new_opioids and new_others:
            action = "act-both-new"
        elif new_opioids and all(continues_regimen(o, facts) for o in new_opioids):
            action = "act-opioid-continue"
        elif new_opioids:
            action = "act-opioid-new"
        else:
            action = "act-depressant-new"
        naloxone_on_hand = any(m.active for m in facts.history_with(NALOXONE)) or any(
            m.has(NALOXONE) for m in facts.drafts
        )

        # the constructive suggestion first: a non-opioid instead of the new opioid, then
        # naloxone, and removing a draft last
        suggestions: list[SuggestionSpec] = []
        if not moud_only:
            suggestions += draft_replacements(new_opioids, facts)
        if not naloxone_on_hand:
            suggestions.append(SuggestionSpec("naloxone", {"patient_id": facts.patient_id}))
        # a refill of a current opioid is never removed in one click (a taper, CDC 2022 Rec 5)
        starts = [o for o in new_opioids if not continues_regimen(o, facts)]
        suggestions += removals([*starts, *new_others])

        names: dict[str, Text] = {
            "opioids": _names(opioids),
            "depressants": _names(others),
        }
        values: dict[str, Text] = {
            **names,
            "action": Line(action, names),
            "naloxone_status": Line(
                "naloxone-on-record" if naloxone_on_hand else "naloxone-not-on-record"
            ),
        }
        # the new order(s) first (an opioid with its dose), then what is current
        ordered = sorted((*opioids, *others), key=lambda u: not new(u))
        evidence = tuple(
            being_ordered(u, facts, naloxone_stated=True)
            if u.is_draft
            else current_medication(u, facts)
            for u in ordered
        )
        if any(s.key.startswith("replace-with-") for s in suggestions):
            evidence += tuple(allergy_lines(facts))  # why this alternative, or not checked
        # say it once: this card carries the naloxone offer (opioid-naloxone-offer)
        covers = (NALOXONE_RULE_ID,) if not naloxone_on_hand else ()
        decision = decision_of((u for u in (*opioids, *others) if new(u)), facts)
        return [Finding(RULE_ID, variant, values, evidence, tuple(suggestions), covers, decision)]


def _cough_finding(
    facts: ClinicalFacts, pairs: list[tuple[MedicationUse, MedicationUse]]
) -> Finding:
    """An opioid cough product with a benzodiazepine (no pain opioid): info, no MME and no
    naloxone; the one click removes a draft cough product."""
    cough = _unique([o for o, _ in pairs])
    benzodiazepines = _unique([d for _, d in pairs])
    names: dict[str, Text] = {"opioids": _names(cough), "depressants": _names(benzodiazepines)}
    values: dict[str, Text] = {**names, "action": Line("act-cough", names)}
    new = [u for u in (*cough, *benzodiazepines) if u.is_draft and u.in_focus]
    ordered = sorted((*cough, *benzodiazepines), key=lambda u: not (u.is_draft and u.in_focus))
    evidence = tuple(
        being_ordered(u) if u.is_draft else current_medication(u, facts) for u in ordered
    )
    variant = "cough-benzodiazepine" if facts.ordering else "chart-cough-benzodiazepine"
    suggestions = tuple(removals([u for u in cough if u.is_draft and u.in_focus]))
    return Finding(RULE_ID, variant, values, evidence, suggestions, (), decision_of(new))


def _names(uses: list[MedicationUse]) -> str:
    return ", ".join(dict.fromkeys(short_name(u) for u in uses))


def _is_opioid(use: MedicationUse, classes: tuple[str, ...] = _OPIOID_CLASSES) -> bool:
    return not use.classification.classes.isdisjoint(classes)


def _is_depressant(use: MedicationUse, classes: tuple[str, ...]) -> bool:
    return not use.classification.classes.isdisjoint(classes)


def _in_scope(
    facts: ClinicalFacts, exclusions: Exclusions
) -> tuple[list[MedicationUse], list[MedicationUse]]:
    """The current medications and the drafts no order exclusion leaves out, once per request
    and set of exclusions (the co-prescription and the cough checks both read them)."""
    key = ("co-prescription-scope", exclusions)
    cached: tuple[list[MedicationUse], list[MedicationUse]] | None = facts.memo.get(key)
    if cached is None:
        current = [
            m for m in facts.current_medications() if order_exclusion(m, facts, exclusions) is None
        ]
        drafts = [m for m in facts.drafts if order_exclusion(m, facts, exclusions) is None]
        cached = facts.memo[key] = (current, drafts)
    return cached


def _pairs(
    facts: ClinicalFacts,
    depressants: tuple[str, ...],
    exclusions: Exclusions,
    opioid_classes: tuple[str, ...] = _OPIOID_CLASSES,
) -> list[tuple[MedicationUse, MedicationUse]]:
    current, drafts = _in_scope(facts, exclusions)
    active_opioids = [m for m in current if _is_opioid(m, opioid_classes)]
    active_depressants = [m for m in current if _is_depressant(m, depressants)]
    if not facts.ordering:
        return [(o, d) for o in active_opioids for d in active_depressants if o is not d]
    draft_opioids = [m for m in drafts if _is_opioid(m, opioid_classes)]
    draft_depressants = [m for m in drafts if _is_depressant(m, depressants)]
    pairs: list[tuple[MedicationUse, MedicationUse]] = []
    for draft in drafts:
        if not draft.in_focus:
            continue
        if _is_opioid(draft, opioid_classes):
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
