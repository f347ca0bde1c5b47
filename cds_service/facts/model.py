"""ClinicalFacts: what the rules see, derived once per request (facts/builder.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cds_service.facts.basis import basis_line
from cds_service.fhir.read import JSON
from cds_service.findings import Line
from cds_service.knowledge.classifier import Classification
from cds_service.knowledge.dosing import MmeResult
from cds_service.settings import MedicationActivity


class MedicationUse(NamedTuple):
    """One medication order, dispense, statement or draft in a monitored class. Immutable; a
    named tuple rather than a frozen dataclass because a chart builds one per monitored entry
    (thousands) and a frozen dataclass costs four times as much to build."""

    resource: JSON
    classification: Classification
    source: str  # "order" | "dispense" | "statement" | "draft"
    in_focus: bool  # a draft the advice is about (order-select: the selected ones)
    start: dt.date | None
    exposure_end: dt.date | None  # end of actual supply (no allowance); None = unknown
    current_until: dt.date | None  # last day it counts as current use; None = unbounded
    active: bool  # current on the evaluation date
    # why it counts as current: a "basis-*" line key and its raw values, turned into card text
    # only for the few entries a card names (ClinicalFacts.basis)
    basis_raw: tuple[str, tuple[Any, ...]] | None = None
    # what the order says it treats, for NSAIDs and acetaminophen: "pain", "other" (another
    # indication) or "" (none stated); facts/indications.py
    indication: str = ""

    @property
    def is_draft(self) -> bool:
        return self.source == "draft"

    @property
    def name(self) -> str:
        """Ingredients (the card's short name), else the label the EHR wrote."""
        return " / ".join(self.classification.names) or self.classification.label or "medication"

    def has(self, drug_class: str) -> bool:
        return self.classification.has(drug_class)


@dataclass(frozen=True)
class ConditionFact:
    """An active Condition (or an order's stated reason) in a category the rules use."""

    resource: JSON
    categories: frozenset[str]
    onset: dt.date | None  # onset (dateTime, period start or age), else recorded date
    onset_source: str  # "onset" | "recorded" | "order-reason" | "treatment" (OUD therapy) | ""
    label: str

    def has(self, category: str) -> bool:
        return category in self.categories


@dataclass(frozen=True)
class AllergyFact:
    """A current drug allergy or intolerance in a class the rules use (facts/allergies.py)."""

    resource: JSON
    classes: frozenset[str]  # "nsaid" (NSAIDs and aspirin) | "acetaminophen" | "opioid"
    label: str

    def has(self, allergy_class: str) -> bool:
        return allergy_class in self.classes


@dataclass(frozen=True)
class TherapyOnRecord:
    step: str  # a first-line non-drug step (therapies.json "steps")
    label: str
    date: dt.date | None
    kind: str  # "done" (Procedure) | "ordered" (ServiceRequest) | "now" (in this order set)


@dataclass(frozen=True)
class EndOfLifeEvidence:
    source: str  # condition | procedure | referral | encounter | care-plan
    label: str
    date: dt.date | None


@dataclass(frozen=True)
class Completeness:
    """How much of each domain of the record the service could read."""

    medication_history: str = "complete"  # "complete" | "partial"
    dispenses_and_statements: bool = True  # False: only orders could be read
    therapies: bool = True  # False: neither procedures nor referrals could be read
    allergies: bool = True  # False: the allergy list could not be read (or only in part)
    unusable_reason: str = ""  # non-empty: most of the record is another patient's


class HistoryIndex(NamedTuple):
    """The medication history grouped once per request (ClinicalFacts._history_index)."""

    active: tuple[MedicationUse, ...]  # current on the evaluation date
    analgesics: tuple[MedicationUse, ...]  # NSAID / acetaminophen products (analgesic role)
    by_class: dict[str, tuple[MedicationUse, ...]]  # each drug class's entries


@dataclass(frozen=True)
class ClinicalFacts:
    today: dt.date
    patient_id: str
    ordering: bool  # orders are being written (drafts are the subject), not a chart review
    history: tuple[MedicationUse, ...] = ()  # signed orders, dispenses, statements
    drafts: tuple[MedicationUse, ...] = ()  # every draft order in a monitored class
    conditions: tuple[ConditionFact, ...] = ()  # active, in a known category
    therapies: tuple[TherapyOnRecord, ...] = ()  # first-line non-drug steps, any date
    end_of_life: tuple[EndOfLifeEvidence, ...] = ()  # current hospice / palliative care
    allergies: tuple[AllergyFact, ...] = ()  # current, in a class the rules use
    birth_date: dt.date | None = None
    deceased: bool = False
    inpatient_context: bool = False  # the hook's encounter is an inpatient stay
    completeness: Completeness = field(default_factory=Completeness)
    # MME is computed on demand (only the chart summary needs it) and remembered, like any
    # derived value a rule asks for twice (`memo`).
    mme_calculator: Callable[[MedicationUse], MmeResult] | None = field(
        default=None, compare=False, repr=False
    )
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    activity: MedicationActivity | None = field(default=None, compare=False, repr=False)

    def history_with(self, *drug_classes: str) -> tuple[MedicationUse, ...]:
        """The history entries in any of `drug_classes`, in record order (several classes
        with entries: merged by one more pass, remembered)."""
        by_class = self._history_index().by_class
        found_in = [entries for entries in map(by_class.get, drug_classes) if entries]
        if len(found_in) <= 1:
            return found_in[0] if found_in else ()
        key = ("history-with", drug_classes)
        cached = self.memo.get(key)
        if cached is None:
            cached = self.memo[key] = tuple(
                u for u in self.history if not u.classification.classes.isdisjoint(drug_classes)
            )
        found: tuple[MedicationUse, ...] = cached
        return found

    def active_history(self) -> tuple[MedicationUse, ...]:
        """The history entries current on the evaluation date, in record order."""
        return self._history_index().active

    def analgesic_history(self) -> tuple[MedicationUse, ...]:
        """The history's NSAID and acetaminophen products (those with an analgesic role: the
        candidates for a first-line drug trial), in record order."""
        return self._history_index().analgesics

    def _history_index(self) -> HistoryIndex:
        """The history read once per request for every question the rules ask of it (a
        1,000-order chart is walked once, not once per rule)."""
        cached = self.memo.get("history-index")
        if cached is None:
            active: list[MedicationUse] = []
            analgesics: list[MedicationUse] = []
            by_class: dict[str, list[MedicationUse]] = {}
            for use in self.history:
                if use.active:
                    active.append(use)
                classification = use.classification
                if classification.analgesic_role:
                    analgesics.append(use)
                for drug_class in classification.classes:
                    entries = by_class.get(drug_class)
                    if entries is None:
                        by_class[drug_class] = [use]
                    else:
                        entries.append(use)
            cached = self.memo["history-index"] = HistoryIndex(
                tuple(active),
                tuple(analgesics),
                {c: tuple(entries) for c, entries in by_class.items()},
            )
        index: HistoryIndex = cached
        return index

    def current_medications(self) -> tuple[MedicationUse, ...]:
        """What the patient takes now, one entry per drug: current orders, then dispenses and
        medication-list statements of drugs no current order already names (the same opioid
        ordered and on the list is one opioid, not two). Successive orders of one regimen (same
        ingredients and dose form, supplies overlapping or following each other) are one entry:
        the latest order (`regimen` lists them all). Computed once per request."""
        cached = self.memo.get("current")
        if cached is None:
            active = self.active_history()
            seen: set[frozenset[str]] = set()
            out: list[MedicationUse] = []
            for source in ("order", "dispense", "statement"):
                batch = [u for u in active if u.source == source]
                if not batch:
                    continue
                # each entry's regimen key built once (its first part: the ingredient set)
                keys = [regimen_key(u) for u in batch]
                latest: dict[tuple[frozenset[str], str | None, bool], MedicationUse] = {}
                for i in sorted(range(len(batch)), key=lambda i: _start_key(batch[i])):
                    latest[keys[i]] = batch[i]  # the latest start of each regimen wins
                out += [
                    u
                    for u, key in zip(batch, keys, strict=True)
                    if latest[key] is u and key[0] not in seen
                ]
                seen.update(key[0] for key in keys)
            cached = self.memo["current"] = tuple(out)
        current: tuple[MedicationUse, ...] = cached
        return current

    def regimen(self, use: MedicationUse) -> tuple[MedicationUse, ...]:
        """The orders of `use`'s regimen, oldest first, ending with `use`: earlier entries of
        the same source, ingredients and dose form whose supplies overlap or directly precede
        the next one (a gap of at most `REGIMEN_GAP_DAYS`)."""
        same = sorted(
            (
                u
                for u in self.history
                if u.source == use.source
                and regimen_key(u) == regimen_key(use)
                and u.start is not None
                and use.start is not None
                and u.start <= use.start
            ),
            key=_start_key,
        )
        chain = [use]
        for earlier in reversed([u for u in same if u is not use]):
            end = earlier.exposure_end or earlier.start
            if (
                end is not None
                and chain[0].start is not None
                and ((chain[0].start - end).days <= REGIMEN_GAP_DAYS)
            ):
                chain.insert(0, earlier)
        return tuple(chain)

    def basis(self, use: MedicationUse) -> Line | None:
        """Why the record shows `use` as current, as a card line ("basis-*")."""
        if use.basis_raw is None or self.activity is None:
            return None
        return basis_line(use.basis_raw, self.activity)

    def mme(self, use: MedicationUse) -> MmeResult | None:
        """MME/day of a current opioid order or statement (None without a calculator)."""
        if self.mme_calculator is None:
            return None
        key = ("mme", id(use))
        if key not in self.memo:
            self.memo[key] = self.mme_calculator(use)
        result: MmeResult = self.memo[key]
        return result

    @property
    def age_years(self) -> int | None:
        if self.birth_date is None:
            return None
        years = self.today.year - self.birth_date.year
        if (self.today.month, self.today.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years

    def conditions_in(self, category: str) -> list[ConditionFact]:
        return [c for c in self.conditions if c.has(category)]

    def allergies_to(self, allergy_class: str) -> list[AllergyFact]:
        return [a for a in self.allergies if a.has(allergy_class)]


# Successive orders whose supplies are at most this many days apart are one regimen.
REGIMEN_GAP_DAYS = 1


def regimen_key(use: MedicationUse) -> tuple[frozenset[str], str | None, bool]:
    """Same ingredients and dose form (extended release or not): one regimen's orders."""
    c = use.classification
    return frozenset(c.names), c.dose_form, c.extended_release


def _start_key(use: MedicationUse) -> dt.date:
    return use.start or dt.date.min
