"""Shared clinical criteria, defined once and reused by name by every rule (clinical brief 1-2).

- chronic low back pain: an active LBP condition coded as chronic, or paired with an active
  chronic-pain diagnosis, or with onset (else recorded date) more than 12 weeks ago;
- opioid-naive (CDC): no opioid supply in the look-back (default 90 days) from orders,
  dispenses or statements that were taken (facts' medication table), measured from the end of
  the actual supply with no "still current" allowance; the drafts being ordered never count;
- first-line therapy on record: an NSAID or acetaminophen taken for pain (not low-dose aspirin,
  not a cold remedy, not an opioid combination's acetaminophen), and non-drug therapy
  (exercise/physical, psychological, manipulation, acupuncture, massage, multidisciplinary
  rehabilitation) done or referred with a status that records the step as taken;
- second-line drugs: a non-benzodiazepine muscle relaxant, duloxetine (or another SNRI), a
  tricyclic.

Every criterion returns the evidence lines (card text keys, cards/lines.json) that say, in the
patient's own data, why it holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts, ConditionFact, MedicationUse, format_day
from cds_service.facts.model import regimen_key
from cds_service.fhir.read import as_list
from cds_service.findings import Line, Text
from cds_service.knowledge.classifier import (
    ANTITUSSIVE,
    BENZODIAZEPINE,
    FIRST_LINE,
    MOUD,
    NALOXONE,
    OPIOID,
)
from cds_service.knowledge.dosage import daily_amount
from cds_service.knowledge.dosing import MmeResult, total_mme

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
# CDC 2022 Recommendation 4 / 8 thresholds (MME/day of the patient's total).
MME_REASSESS = 50
MME_AVOID = 90

# Placeholders of the shared lines (cards/lines.json), checked against it at start-up.
SHARED_LINES: Mapping[str, frozenset[str]] = {
    "no-date": frozenset(),
    "being-ordered": frozenset({"drug"}),
    "being-ordered-er": frozenset({"drug"}),
    "being-ordered-dose": frozenset({"drug", "mme", "total"}),
    "being-ordered-dose-flag": frozenset({"drug", "mme", "total", "threshold"}),
    "drug-er": frozenset({"drug"}),
    "drug-coded-as": frozenset({"drug", "coded"}),
    "dose-mme": frozenset({"mme"}),
    "dose-mme-unknown": frozenset({"reason"}),
    "order-total-known": frozenset({"mme"}),
    "order-total-partial": frozenset({"mme"}),
    "order-total-none": frozenset(),
    "mme-threshold-50": frozenset(),
    "mme-threshold-50-naloxone-on-record": frozenset(),
    "mme-threshold-90": frozenset(),
    "current-medication": frozenset({"drug", "basis"}),
    "basis-supply": frozenset({"start", "supply_days", "until"}),
    "basis-supply-refills": frozenset({"start", "supply_days", "until", "fills"}),
    "basis-validity": frozenset({"until"}),
    "basis-undated": frozenset({"start", "until"}),
    "basis-dispensed": frozenset({"start", "supply_days", "until"}),
    "basis-dispensed-assumed": frozenset({"start", "until"}),
    "basis-statement-period": frozenset({"until"}),
    "basis-statement-confirmed": frozenset({"confirmed"}),
    "basis-draft": frozenset(),
    "lbp-onset": frozenset({"condition", "date"}),
    "lbp-recorded": frozenset({"condition", "date"}),
    "lbp-order-reason": frozenset({"condition"}),
    "lbp-undated": frozenset({"condition"}),
    "first-line-drug-found": frozenset({"drug", "date"}),
    "first-line-drug-before-window": frozenset({"drug", "date", "since", "until"}),
    "first-line-drug-now": frozenset({"drug"}),
    "first-line-therapy-done": frozenset({"therapy", "date"}),
    "first-line-therapy-ordered": frozenset({"therapy", "date"}),
    "first-line-therapy-now": frozenset({"therapy"}),
    "first-line-drug-missing": frozenset({"since"}),
    "first-line-both-missing": frozenset({"since"}),
    "first-line-non-drug-missing": frozenset({"since"}),
    "first-line-non-drug-unknown": frozenset(),
    "second-line-not-tried": frozenset(),
    "record-orders-only": frozenset(),
    "allergy-on-record": frozenset({"allergy"}),
    "allergies-not-checked": frozenset(),
}


def when(day: dt.date | None) -> Text:
    return format_day(day) if day else Line("no-date")


def drug_label(use: MedicationUse) -> Text:
    """A drug as the EHR wrote it; when that text names other ingredients or strengths than
    the RxNorm code (which decides the class and the MME), the coded product as well."""
    label = use.classification.label or use.name
    coded = use.classification.coded_label
    return Line("drug-coded-as", {"drug": label, "coded": coded}) if coded else label


def being_ordered(
    draft: MedicationUse, facts: ClinicalFacts | None = None, naloxone_stated: bool = False
) -> Line:
    """The draft by name; an opioid analgesic draft (given the facts) with its MME/day, the
    patient's total with it (unknown named, never 0) and the CDC 2022 threshold it reaches
    (`naloxone_stated`: the card has its own naloxone line, so the threshold does not repeat
    it)."""
    if facts is not None:  # the same line for every rule that names this draft (per request)
        key = ("being-ordered", id(draft), naloxone_stated)
        cached: tuple[MedicationUse, Line] | None = facts.memo.get(key)
        if cached is None or cached[0] is not draft:  # holding the draft keeps its id unique
            cached = facts.memo[key] = (draft, _being_ordered(draft, facts, naloxone_stated))
        return cached[1]
    return _being_ordered(draft, None, naloxone_stated)


def _being_ordered(
    draft: MedicationUse, facts: ClinicalFacts | None, naloxone_stated: bool
) -> Line:
    label = drug_label(draft)
    if facts is None or not draft.has(OPIOID):
        key = "being-ordered-er" if draft.classification.extended_release else "being-ordered"
        return Line(key, {"drug": label})
    drug: Text = (
        Line("drug-er", {"drug": label}) if draft.classification.extended_release else label
    )
    dose = order_dose(draft, facts, naloxone_stated)
    values: dict[str, Text] = {"drug": drug, "mme": dose.order, "total": dose.total}
    if dose.threshold is None:
        return Line("being-ordered-dose", values)
    values["threshold"] = dose.threshold
    return Line("being-ordered-dose-flag", values)


@dataclass(frozen=True)
class OrderDose:
    order: Line  # the order's MME/day, or "unknown (why)"
    total: Line  # the patient's total with the order: current opioids + opioid drafts
    total_mme: float  # the known part of the total
    threshold: Line | None  # the CDC 2022 threshold the total reaches (50 or 90 MME/day)


def opioid_total(facts: ClinicalFacts) -> tuple[float, bool, list[MmeResult]]:
    """The patient's MME/day with the order set: current opioid orders and statements (a
    dispense carries no dose) plus every opioid draft; (known part, complete, results). A
    draft that continues a current regimen (same ingredients and dose form: a refill or a
    dose change) counts instead of that regimen, never in addition to it."""
    cached = facts.memo.get("opioid-total")
    if cached is None:
        drafts = [d for d in facts.drafts if d.has(OPIOID)]
        continued = {regimen_key(d) for d in drafts}
        uses = [
            u
            for u in facts.current_medications()
            if u.has(OPIOID) and u.source != "dispense" and regimen_key(u) not in continued
        ]
        uses += drafts
        results = [r for r in (facts.mme(u) for u in uses) if r is not None]
        total = total_mme(results)
        cached = facts.memo["opioid-total"] = (total.mme_per_day, total.complete, results)
    known: float = cached[0]
    complete: bool = cached[1]
    results_: list[MmeResult] = cached[2]
    return known, complete, results_


def naloxone_on_hand(facts: ClinicalFacts) -> bool:
    """Naloxone is current on the record or in the order set."""
    return any(m.has(NALOXONE) for m in facts.history if m.active) or any(
        m.has(NALOXONE) for m in facts.drafts
    )


def order_dose(
    draft: MedicationUse, facts: ClinicalFacts, naloxone_stated: bool = False
) -> OrderDose:
    """The order's MME/day, the total with it and the threshold it reaches. At 50 MME/day the
    line never says "offer naloxone": only a card that offers it one-click says so, in its own
    line (opioid-naloxone-offer, opioid-benzodiazepine, opioid-safety-summary); naloxone on
    record is named unless the card says it already."""
    result = facts.mme(draft)
    if result is not None and result.mme_per_day is not None:
        order = Line("dose-mme", {"mme": f"{result.mme_per_day:g}"})
    else:
        reason = (result.reason if result is not None else "") or "MME unknown: dose not computable"
        order = Line("dose-mme-unknown", {"reason": reason})
    known, complete, _ = opioid_total(facts)
    if complete:
        total = Line("order-total-known", {"mme": f"{known:g}"})
    elif known > 0:
        total = Line("order-total-partial", {"mme": f"{known:g}"})
    else:
        total = Line("order-total-none")
    threshold = (
        Line("mme-threshold-90")
        if known >= MME_AVOID
        else Line(
            "mme-threshold-50-naloxone-on-record"
            if not naloxone_stated and naloxone_on_hand(facts)
            else "mme-threshold-50"
        )
        if known >= MME_REASSESS
        else None
    )
    return OrderDose(order, total, known, threshold)


def draft_signature(draft: MedicationUse) -> str:
    """The decision a draft order asks for: its drug, dose and supply (not its id or dates),
    as a digest. A changed drug or dose is a new decision."""
    resource = draft.resource
    subject = {
        "medication": resource.get("medicationCodeableConcept")
        or resource.get("medicationReference"),
        "dosage": resource.get("dosageInstruction"),
        "dispense": resource.get("dispenseRequest"),
    }
    try:
        text = json.dumps(subject, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(id(resource))  # never equal to another call's: no suppression
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def decision_of(
    drafts: Iterable[MedicationUse], facts: ClinicalFacts | None = None
) -> tuple[str, ...]:
    """The drafts' signatures; with `facts`, each draft's is computed once per request."""
    if facts is None:
        return tuple(sorted({draft_signature(d) for d in drafts if d.is_draft}))
    signatures = set()
    for d in drafts:
        if d.is_draft:
            key = ("draft-signature", id(d))
            cached: tuple[MedicationUse, str] | None = facts.memo.get(key)
            if cached is None or cached[0] is not d:  # holding the draft keeps its id unique
                cached = facts.memo[key] = (d, draft_signature(d))
            signatures.add(cached[1])
    return tuple(sorted(signatures))


def continues_regimen(draft: MedicationUse, facts: ClinicalFacts) -> bool:
    """An opioid draft with the ingredients and dose form of a current opioid regimen: a
    refill or dose change of a long-term opioid, not a new start (CDC 2022 Recommendation 5:
    never a one-click discontinuation)."""
    if not draft.is_draft or not draft.has(OPIOID):
        return False
    key = regimen_key(draft)
    return any(u.has(OPIOID) and regimen_key(u) == key for u in facts.current_medications())


def on_cns_depressant(facts: ClinicalFacts) -> bool:
    """A current or ordered opioid, benzodiazepine or other CNS depressant: sedating drugs
    are never suggested or prompted (docs/cards.md)."""
    uses = (*facts.current_medications(), *facts.drafts)
    return any(u.has(c) for u in uses for c in CNS_DEPRESSANT_CLASSES)


SEROTONERGIC_CLASSES = ("serotonergic", "ssri", "snri", "tricyclic", "maoi")


def on_serotonergic(facts: ClinicalFacts) -> bool:
    """A current or ordered serotonergic drug (tramadol, SSRI, SNRI, TCA, MAOI): an SNRI
    (duloxetine) is never prompted on top of it (serotonin syndrome; docs/cards.md)."""
    uses = (*facts.current_medications(), *facts.drafts)
    return any(u.has(c) for u in uses for c in SEROTONERGIC_CLASSES)


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


def current_medication(use: MedicationUse, facts: ClinicalFacts) -> Line:
    """The drug and the basis on which the record shows it as current."""
    if use.is_draft:
        return being_ordered(use)
    return Line(
        "current-medication",
        {
            "drug": drug_label(use),
            "basis": facts.basis(use) or Line("basis-draft"),
        },
    )


def short_name(use: MedicationUse) -> str:
    """A drug's short name for card text: its ingredients without acetaminophen."""
    return (
        " / ".join(n for n in use.classification.names if n != "acetaminophen")
        or use.classification.label
    )


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

    exposed = any(_is_opioid_exposure(u) and in_window(u) for u in facts.history)
    return OpioidExposure(not exposed, window_start)


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
    found = [u for u in facts.history if is_first_line_analgesic(u) and _within(u, since)]
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
        for u in facts.history
        # any of the classes, as one set operation (no generator per entry of the history)
        if not u.classification.classes.isdisjoint(SECOND_LINE_CLASSES)
        and not u.has(OPIOID)
        and _within(u, since)
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
