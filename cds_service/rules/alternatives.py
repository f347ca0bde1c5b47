"""Alternatives to an opioid (clinical brief 2): first-line therapy on record and second-line
drugs, and the barriers to suggesting one.

- first-line therapy on record: an NSAID or acetaminophen taken for pain (not low-dose aspirin,
  not a cold remedy, not an opioid combination's acetaminophen), and non-drug therapy
  (exercise/physical, psychological, manipulation, acupuncture, massage, multidisciplinary
  rehabilitation) done or referred with a status that records the step as taken;
- second-line drugs: a non-benzodiazepine muscle relaxant, duloxetine (or another SNRI), a
  tricyclic;
- barriers: an NSAID contraindication, acetaminophen already current, a CNS depressant (no
  sedating drug suggested), a serotonergic drug (no SNRI prompted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, MedicationUse, format_day
from cds_service.fhir.read import as_list
from cds_service.findings import Line
from cds_service.knowledge.classifier import BENZODIAZEPINE, FIRST_LINE, MOUD, OPIOID
from cds_service.knowledge.dosage import daily_amount
from cds_service.rules.lines import drug_label, when

SECOND_LINE_CLASSES = ("muscle-relaxant", "snri", "tricyclic")
# Sedating classes the service never suggests or prompts for a patient who takes (or is
# being ordered) an opioid, a benzodiazepine or another CNS depressant (docs/cards.md).
SEDATING_CLASSES = (
    "muscle-relaxant",
    "sedating-muscle-relaxant",
    "gabapentinoid",
    "z-drug",
    "barbiturate",
    "sedating-antihistamine",
    "tricyclic",
)
CNS_DEPRESSANT_CLASSES = (OPIOID, MOUD, BENZODIAZEPINE, *SEDATING_CLASSES)


def on_cns_depressant(facts: ClinicalFacts) -> bool:
    """A current or ordered opioid, benzodiazepine or other CNS depressant: sedating drugs
    are never suggested or prompted (docs/cards.md)."""
    uses = (*facts.current_medications(), *facts.drafts)
    return any(not u.classification.classes.isdisjoint(CNS_DEPRESSANT_CLASSES) for u in uses)


SEROTONERGIC_CLASSES = ("serotonergic", "ssri", "snri", "tricyclic", "maoi")


def on_serotonergic(facts: ClinicalFacts) -> bool:
    """A current or ordered serotonergic drug (tramadol, SSRI, SNRI, TCA, MAOI): an SNRI
    (duloxetine) is never prompted on top of it (serotonin syndrome; docs/cards.md)."""
    uses = (*facts.current_medications(), *facts.drafts)
    return any(not u.classification.classes.isdisjoint(SEROTONERGIC_CLASSES) for u in uses)


def nsaid_barrier(facts: ClinicalFacts) -> bool:
    """An NSAID is never suggested when one is current or in the order set, or when the record
    shows a contraindication the service reads: CKD stage 4-5 / end-stage renal disease,
    gastrointestinal bleeding or peptic ulcer with bleeding, heart failure, ischaemic heart
    disease, long-term anticoagulant/antiplatelet use, pregnancy, NSAID/aspirin allergy or
    aspirin-exacerbated respiratory disease (condition category "nsaid-contraindication"), a
    current anticoagulant or P2Y12 antiplatelet, or an NSAID or aspirin allergy or intolerance
    recorded as an AllergyIntolerance (facts/allergies.py)."""
    uses = (*facts.current_medications(), *facts.drafts)
    return (
        any(u.has("nsaid") for u in uses)
        or any(u.has("anticoagulant") or u.has("antiplatelet") for u in uses)
        or bool(facts.conditions_in("nsaid-contraindication"))
        or bool(facts.allergies_to("nsaid"))
    )


def acetaminophen_current(facts: ClinicalFacts) -> bool:
    """Acetaminophen may not be added: it is current (alone or in an opioid combination such
    as Percocet: more would approach the daily maximum) or ordered alone, or the record shows
    liver disease (condition category "hepatic-disease": ICD-10-CM K70-K77) or an
    acetaminophen allergy or intolerance (AllergyIntolerance)."""
    if any(u.has("acetaminophen") for u in facts.current_medications()):
        return True
    if any(u.has("acetaminophen") and not u.has(OPIOID) for u in facts.drafts):
        return True
    return bool(facts.conditions_in("hepatic-disease")) or bool(facts.allergies_to("acetaminophen"))


def is_first_line_analgesic(use: MedicationUse) -> bool:
    """An NSAID or acetaminophen taken for pain: not an opioid combination's acetaminophen,
    not antiplatelet aspirin (aspirin counts only with a pain reason or a dosage above
    325 mg a day), not a multi-symptom cold remedy, not a sleep-aid combination unless its
    reason is pain, not an order whose reason names another indication
    (facts/indications.py)."""
    if use.indication == "other":
        return False
    role = use.classification.analgesic_role
    if role == FIRST_LINE and use.classification.names == ("aspirin",):
        # aspirin is taken daily for the heart at up to 325 mg: a trial for pain only when
        # its reason is pain or its dosage comes to more than that
        if use.indication == "pain":
            return True
        daily = aspirin_mg_per_day(use)
        return daily is not None and daily > ANTIPLATELET_ASPIRIN_MG_PER_DAY
    return role == FIRST_LINE or (role == "sleep-aid" and use.indication == "pain")


COUNTED_UNITS = frozenset({"", "tablet", "tablets", "tab", "tabs", "{tbl}", "capsule"})
# Antiplatelet aspirin: up to 325 mg a day (81 mg, half or one 325 mg tablet daily).
ANTIPLATELET_ASPIRIN_MG_PER_DAY = 325.0


def aspirin_mg_per_day(use: MedicationUse) -> float | None:
    """Aspirin mg a day from the order's dosage (tablets x strength, or a dose in mg); None
    when the dosage does not say."""
    strength = use.classification.ingredients[0].strength_value
    unit = use.classification.ingredients[0].strength_unit
    total = 0.0
    dosages = as_list(use.resource.get("dosageInstruction") or use.resource.get("dosage"))
    for dosage in dosages:
        amount = daily_amount(dosage, False) if isinstance(dosage, dict) else "no dosage"
        if isinstance(amount, str):
            return None
        if amount.unit in {"mg", "milligram", "milligrams"}:
            total += amount.amount
        elif strength is not None and unit == "mg" and amount.unit in COUNTED_UNITS:
            total += amount.amount * strength
        else:
            return None
    return total if dosages else None


def first_line_drug_trials(
    facts: ClinicalFacts, since: dt.date, include_drafts: bool = True
) -> list[MedicationUse]:
    """NSAID or acetaminophen taken for pain on record since `since` (any status but
    entered-in-error): Classification.first_line_analgesic (no low-dose aspirin, cold remedy or
    opioid combination)."""
    # only a product with an analgesic role can be one (is_first_line_analgesic)
    candidates = facts.analgesic_history()
    found = [u for u in candidates if is_first_line_analgesic(u) and _within(u, since)]
    if include_drafts:
        found += [u for u in facts.drafts if is_first_line_analgesic(u)]
    return found


def _within(use: MedicationUse, since: dt.date) -> bool:
    """Taken at some point since `since`: current, undated, or exposure reaching into it (a
    long-running NSAID started before the look-back still counts)."""
    if use.active or use.start is None:
        return True
    return (use.exposure_end or use.start) >= since


def second_line_trials(facts: ClinicalFacts, since: dt.date) -> list[MedicationUse]:
    return [
        u
        for u in facts.history_with(*SECOND_LINE_CLASSES)
        if not u.has(OPIOID) and _within(u, since)
    ]


@dataclass(frozen=True)
class FirstLineStatus:
    """Which first-line steps the record shows since `since`, and which are missing."""

    since: dt.date
    drug_trials: tuple[MedicationUse, ...]
    therapies: tuple[str, ...]  # therapy labels found
    therapy_lines: tuple[Line, ...]
    drug_missing: bool
    non_drug_missing: bool
    non_drug_known: bool
    second_line_tried: bool
    # a serotonergic drug (tramadol, SSRI, SNRI, TCA, MAOI) is current or ordered: duloxetine
    # is never prompted (serotonin syndrome)
    serotonergic: bool = False

    @property
    def any_missing(self) -> bool:
        return self.drug_missing or self.non_drug_missing

    def lines(self) -> list[Line]:
        out = [_trial_line(t, self.since) for t in self.drug_trials]
        out += self.therapy_lines
        since = format_day(self.since)
        if self.drug_missing and self.non_drug_missing:
            out.append(Line("first-line-both-missing", {"since": since}))
        elif self.drug_missing:
            out.append(Line("first-line-drug-missing", {"since": since}))
        elif self.non_drug_missing:
            out.append(Line("first-line-non-drug-missing", {"since": since}))
        if not self.non_drug_known:
            out.append(Line("first-line-non-drug-unknown"))
        if self.any_missing and not self.second_line_tried and not self.serotonergic:
            out.append(Line("second-line-not-tried"))
        return out


def _trial_line(trial: MedicationUse, since: dt.date) -> Line:
    """The evidence line of a first-line drug trial, dated inside the look-back it states: an
    order started before the window says that its supply ran into it, and until when."""
    drug = drug_label(trial)
    if trial.is_draft:
        return Line("first-line-drug-now", {"drug": drug})
    if trial.start is not None and trial.start < since:
        end = trial.exposure_end
        until = format_day(min(end, trial.current_until or end)) if end else "today"
        if trial.active:
            until = "today"
        values = {"drug": drug, "date": format_day(trial.start), "since": format_day(since)}
        return Line("first-line-drug-before-window", {**values, "until": until})
    return Line("first-line-drug-found", {"drug": drug, "date": when(trial.start)})


def first_line_status(
    facts: ClinicalFacts, lookback_days: int, include_drafts: bool = True
) -> FirstLineStatus:
    """Computed once per request and look-back (two rules ask for it)."""
    key = ("first-line", lookback_days, include_drafts)
    cached = facts.memo.get(key)
    if cached is None:
        cached = facts.memo[key] = _first_line_status(facts, lookback_days, include_drafts)
    status: FirstLineStatus = cached
    return status


def _first_line_status(
    facts: ClinicalFacts, lookback_days: int, include_drafts: bool
) -> FirstLineStatus:
    since = facts.today - dt.timedelta(days=lookback_days)
    drugs = first_line_drug_trials(facts, since, include_drafts)
    therapies = [
        t
        for t in facts.therapies
        if (t.kind == "now" and include_drafts)
        or (t.kind != "now" and (t.date is None or t.date >= since))
    ]
    lines = []
    for therapy in therapies:
        if therapy.kind == "now":
            lines.append(Line("first-line-therapy-now", {"therapy": therapy.label}))
        else:
            key = (
                "first-line-therapy-done"
                if therapy.kind == "done"
                else "first-line-therapy-ordered"
            )
            lines.append(Line(key, {"therapy": therapy.label, "date": when(therapy.date)}))
    non_drug_known = bool(therapies) or facts.completeness.therapies
    return FirstLineStatus(
        since=since,
        drug_trials=tuple(drugs),
        therapies=tuple(dict.fromkeys(t.label for t in therapies)),
        therapy_lines=tuple(lines),
        drug_missing=not drugs and facts.completeness.medication_history == "complete",
        non_drug_missing=non_drug_known and not therapies,
        non_drug_known=non_drug_known,
        second_line_tried=bool(second_line_trials(facts, since)),
        serotonergic=on_serotonergic(facts),
    )
