"""Clinical facts derived once per request from the patient record; the only thing rules see.

A rule never reads prefetch keys, the hook or HTTP: what it needs is here, computed once —
medications (classified, with exposure and current-use windows and the basis for them),
conditions in the categories the rules use (including the draft order's own reason), non-drug
therapies on record, end-of-life evidence, patient exclusions, and how complete each domain of
the record is.

Medication semantics (one table, used by every rule; README "Record semantics"):

| resource | never existed | never started | past exposure | current (within its window) |
|---|---|---|---|---|
| MedicationRequest | entered-in-error | cancelled, draft | completed, stopped, unknown | active, on-hold |
| MedicationDispense | entered-in-error | preparation, cancelled, declined, on-hold | stopped, unknown | completed, in-progress |
| MedicationStatement | entered-in-error | not-taken, intended | completed, stopped, unknown | active, on-hold |

Exposure (what the opioid-naive look-back measures) ends when the supply actually ends, with no
allowance: authoredOn + expectedSupplyDuration x (1 + repeats); whenHandedOver + daysSupply;
a statement's effectivePeriod end; else start + `assumed_supply_days`. Current use adds the
`grace_days` allowance to that supply end (an active order past its validity period end is not
current; an active order with no supply information counts for `undated_lookback_days`). An
open-ended active statement is current while it was confirmed (dateAsserted, else its start)
within `statement_confirmed_within_days`. MedicationAdministration is not read: it records
doses given in care settings the rules do not judge.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cds_service.fhir.read import JSON, as_list, codings, concept_text, parse_date, status_code
from cds_service.fhir.record import PatientRecord
from cds_service.findings import Line
from cds_service.knowledge import Knowledge
from cds_service.knowledge.classifier import MOUD, OPIOID, Classification
from cds_service.knowledge.dosing import MmeResult, mme_for
from cds_service.settings import MedicationActivity, Settings
from cds_service.units import days_in

# status -> meaning, per resource type (the table above)
NEVER_EXISTED = "never-existed"
NEVER_STARTED = "never-started"
PAST = "past"
CURRENT = "current"
MEDICATION_STATUS: Mapping[str, Mapping[str, str]] = {
    "MedicationRequest": {
        "entered-in-error": NEVER_EXISTED,
        "cancelled": NEVER_STARTED,
        "draft": NEVER_STARTED,
        "completed": PAST,
        "stopped": PAST,
        "unknown": PAST,
        "active": CURRENT,
        "on-hold": CURRENT,
    },
    "MedicationDispense": {
        "entered-in-error": NEVER_EXISTED,
        "preparation": NEVER_STARTED,
        "cancelled": NEVER_STARTED,
        "declined": NEVER_STARTED,
        "on-hold": NEVER_STARTED,
        "stopped": PAST,
        "unknown": PAST,
        "completed": CURRENT,
        "in-progress": CURRENT,
    },
    "MedicationStatement": {
        "entered-in-error": NEVER_EXISTED,
        "not-taken": NEVER_STARTED,
        "intended": NEVER_STARTED,
        "completed": PAST,
        "stopped": PAST,
        "unknown": PAST,
        "active": CURRENT,
        "on-hold": CURRENT,
    },
}
# A status missing or outside the value set: read as the record's most cautious meaning for
# exposure (it happened) without claiming current use.
_UNKNOWN_STATUS = PAST

# Referral and procedure statuses that record a first-line step as taken (README).
THERAPY_COUNTS: Mapping[str, frozenset[str]] = {
    "Procedure": frozenset({"completed", "in-progress", "on-hold", "stopped"}),
    "ServiceRequest": frozenset({"active", "completed", "on-hold"}),
}
# Statuses that say a hospice / end-of-life procedure or referral did not happen; any other
# status (including none, or an unreadable one) counts when the record is undated or recent.
_EOL_PROCEDURE_NOT = frozenset({"entered-in-error", "not-done", "preparation"})
_EOL_REFERRAL_NOT = frozenset({"entered-in-error", "revoked", "draft"})
_EOL_ENCOUNTER_OPEN = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave"})
_EOL_CARE_PLAN = frozenset({"active", "on-hold"})
_CARE_PLAN_ACTIVITY_NOT = frozenset({"cancelled", "entered-in-error", "not-started", "stopped"})
_INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC", "inpatient"})
_END_OF_LIFE = "hospice-palliative"


def format_day(day: dt.date) -> str:
    """A date as clinicians read it in a card: 15 Nov 2026."""
    return f"{day.day} {day.strftime('%b')} {day.year}"


def _count(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class MedicationUse:
    """One medication order, dispense, statement or draft in a monitored class."""

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
    onset_source: str  # "onset" | "recorded" | "order-reason" | ""
    label: str

    def has(self, category: str) -> bool:
        return category in self.categories


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
    unusable_reason: str = ""  # non-empty: most of the record is another patient's


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

    def current_medications(self) -> tuple[MedicationUse, ...]:
        """What the patient takes now, one entry per drug: current orders, then dispenses and
        medication-list statements of drugs no current order already names (the same opioid
        ordered and on the list is one opioid, not two). Computed once per request."""
        cached = self.memo.get("current")
        if cached is None:
            seen: set[frozenset[str]] = set()
            out: list[MedicationUse] = []
            for source in ("order", "dispense", "statement"):
                batch = [u for u in self.history if u.active and u.source == source]
                out += [u for u in batch if frozenset(u.classification.names) not in seen]
                seen |= {frozenset(u.classification.names) for u in batch}
            cached = self.memo["current"] = tuple(out)
        current: tuple[MedicationUse, ...] = cached
        return current

    def basis(self, use: MedicationUse) -> Line | None:
        """Why the record shows `use` as current, as a card line ("basis-*")."""
        if use.basis_raw is None or self.activity is None:
            return None
        return _basis_line(use.basis_raw, self.activity)

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


# -- medication windows ---------------------------------------------------------------------


def _add_days(start: dt.date, days: float) -> dt.date | None:
    try:
        return start + dt.timedelta(days=min(days, 36_500))
    except (OverflowError, ValueError):
        return None


class _Window(NamedTuple):
    start: dt.date | None
    exposure_end: dt.date | None
    current_until: dt.date | None
    # ("basis-*" line key, its raw values): turned into a Line only for entries that are
    # current (the hot path reads thousands of entries and describes a few)
    basis: tuple[str, tuple[Any, ...]] | None


def _until(day: dt.date | None) -> str:
    return format_day(day) if day else ""


def _basis_line(basis: tuple[str, tuple[Any, ...]], activity: MedicationActivity) -> Line:
    key, raw = basis
    grace = str(activity.grace_days)
    if key in ("basis-validity", "basis-statement-period"):
        return Line(key, {"until": _until(raw[0])})
    if key == "basis-supply":
        start, supply, until = raw
        return Line(
            key,
            {
                "supply_days": _count(round(supply, 1)),
                "start": format_day(start),
                "grace_days": grace,
                "until": _until(until),
            },
        )
    if key == "basis-supply-refills":
        start, supply, until, fills = raw
        return Line(
            key,
            {
                "supply_days": _count(round(supply, 1)),
                "start": format_day(start),
                "grace_days": grace,
                "until": _until(until),
                "fills": str(fills),
            },
        )
    if key == "basis-undated":
        start, until = raw
        return Line(
            key,
            {
                "start": format_day(start),
                "until": _until(until),
                "days": str(activity.undated_lookback_days),
            },
        )
    if key == "basis-dispensed-assumed":
        start, until = raw
        return Line(
            key,
            {
                "start": format_day(start),
                "until": _until(until),
                "days": str(activity.assumed_supply_days),
            },
        )
    if key == "basis-dispensed":
        start, supply, until = raw
        return Line(
            key,
            {
                "supply_days": _count(round(supply, 1)),
                "start": format_day(start),
                "grace_days": grace,
                "until": _until(until),
            },
        )
    # basis-statement-confirmed
    return Line(
        key,
        {"confirmed": format_day(raw[0]), "days": str(activity.statement_confirmed_within_days)},
    )


def request_window(order: JSON, activity: MedicationActivity) -> _Window:
    """A MedicationRequest's supply: authoredOn + supply x fills (exposure) + the allowance
    (current); a validity period end bounds current use when no supply is given."""
    dispense = order.get("dispenseRequest")
    dispense = dispense if isinstance(dispense, dict) else {}
    validity = dispense.get("validityPeriod")
    validity = validity if isinstance(validity, dict) else {}
    start = parse_date(order.get("authoredOn")) or parse_date(validity.get("start"))
    validity_end = parse_date(validity.get("end"))
    if start is None:
        return _Window(
            None, None, validity_end, ("basis-validity", (validity_end,)) if validity_end else None
        )
    supply = days_in(dispense.get("expectedSupplyDuration"))
    if supply is not None:
        repeats = dispense.get("numberOfRepeatsAllowed")
        fills = 1 + (repeats if isinstance(repeats, int) and 0 <= repeats < 100 else 0)
        end = _add_days(start, supply * fills)
        until = _add_days(end, activity.grace_days) if end else None
        if fills == 1:
            return _Window(start, end, until, ("basis-supply", (start, supply, until)))
        return _Window(start, end, until, ("basis-supply-refills", (start, supply, until, fills)))
    exposure = _add_days(start, activity.assumed_supply_days)
    if validity_end is not None:
        return _Window(start, exposure, validity_end, ("basis-validity", (validity_end,)))
    until = _add_days(start, activity.undated_lookback_days)
    return _Window(start, exposure, until, ("basis-undated", (start, until)))


def _dispense_window(dispense: JSON, activity: MedicationActivity) -> _Window:
    start = parse_date(dispense.get("whenHandedOver")) or parse_date(dispense.get("whenPrepared"))
    if start is None:
        return _Window(None, None, None, None)
    supply = days_in(dispense.get("daysSupply"))
    if supply is None:
        end = _add_days(start, activity.assumed_supply_days)
        return _Window(start, end, end, ("basis-dispensed-assumed", (start, end)))
    until = _add_days(start, supply + activity.grace_days)
    return _Window(
        start, _add_days(start, supply), until, ("basis-dispensed", (start, supply, until))
    )


def _statement_window(
    statement: JSON, activity: MedicationActivity, today: dt.date, ongoing: bool = True
) -> _Window:
    period = statement.get("effectivePeriod")
    end = None
    if isinstance(period, dict):
        start = parse_date(period.get("start"))
        end = parse_date(period.get("end"))
    else:
        start = parse_date(statement.get("effectiveDateTime"))
    asserted = parse_date(statement.get("dateAsserted"))
    start = start or asserted
    if end is not None:
        return _Window(start, end, end, ("basis-statement-period", (end,)))
    confirmed = max((d for d in (asserted, start) if d is not None), default=None)
    if confirmed is None:
        return _Window(None, None, None, None)
    until = _add_days(confirmed, activity.statement_confirmed_within_days)
    # An open-ended statement: exposure runs while it was still confirmed; one that says it
    # was stopped or completed, with no end date, ended by its last confirmation.
    exposure = (min(today, until) if until else today) if ongoing else confirmed
    return _Window(start, exposure, until, ("basis-statement-confirmed", (confirmed,)))


def _current(window: _Window, today: dt.date) -> bool:
    if window.start is not None and window.start > today:
        return False
    return window.current_until is None or window.current_until >= today


# -- conditions -----------------------------------------------------------------------------

_ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
_REFUTED = frozenset({"refuted", "entered-in-error"})


def _add_years(day: dt.date, years: float) -> dt.date | None:
    try:
        return day.replace(year=day.year + int(years))
    except ValueError:
        try:
            return day.replace(year=day.year + int(years), day=28)
        except ValueError:
            return None


def _condition_onset(condition: JSON, birth: dt.date | None) -> tuple[dt.date | None, str]:
    onset = parse_date(condition.get("onsetDateTime"))
    period = condition.get("onsetPeriod")
    if onset is None and isinstance(period, dict):
        onset = parse_date(period.get("start"))
    age = condition.get("onsetAge")
    if onset is None and isinstance(age, dict) and birth is not None:
        value = age.get("value")
        unit = str(age.get("code") or age.get("unit") or "a").lower()
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value < 130
            and unit in {"a", "yr", "year", "years"}
        ):
            onset = _add_years(birth, value)
    if onset is not None:
        return onset, "onset"
    recorded = parse_date(condition.get("recordedDate"))
    return (recorded, "recorded") if recorded else (None, "")


def active_condition(condition: JSON, today: dt.date) -> bool:
    """Clinical status active, recurrence or relapse (or none given, with no abatement in the
    past); verification status neither refuted nor entered-in-error."""
    if status_code(condition, "verificationStatus") in _REFUTED:
        return False
    clinical = status_code(condition, "clinicalStatus")
    if clinical:
        return clinical in _ACTIVE_CONDITION
    abated = parse_date(condition.get("abatementDateTime"))
    period = condition.get("abatementPeriod")
    if abated is None and isinstance(period, dict):
        abated = parse_date(period.get("end"))
    return abated is None or abated > today


def category_codes(resource: JSON) -> set[str]:
    codes: set[str] = set()
    for category in as_list(resource.get("category")):
        for _system, code, _display in codings(category):
            codes.add(code)
    return codes


def _period_dates(resource: JSON, *elements: str) -> tuple[dt.date | None, dt.date | None]:
    for element in elements:
        value = resource.get(element)
        if isinstance(value, dict):
            return parse_date(value.get("start")), parse_date(value.get("end"))
        day = parse_date(value)
        if day is not None:
            return day, day
    return None, None


def _resource_date(resource: JSON) -> dt.date | None:
    for element in ("performedDateTime", "occurrenceDateTime", "authoredOn"):
        day = parse_date(resource.get(element))
        if day is not None:
            return day
    start, end = _period_dates(resource, "performedPeriod", "occurrencePeriod")
    return start or end


# -- derivation -----------------------------------------------------------------------------


class FactBuilder:
    """Derives ClinicalFacts from a PatientRecord with the app's knowledge and settings."""

    def __init__(self, knowledge: Knowledge, settings: Settings) -> None:
        self.knowledge = knowledge
        self.settings = settings
        self.activity = settings.medication_activity

    def derive(self, record: PatientRecord, today: dt.date) -> ClinicalFacts:
        birth = parse_date(record.patient.get("birthDate")) if record.patient else None
        history = self._history(record, today)
        drafts = self._drafts(record, today)
        conditions = self._conditions(record, today, birth)
        return ClinicalFacts(
            today=today,
            patient_id=record.patient_id,
            ordering=record.hook != "patient-view",
            history=tuple(history),
            drafts=tuple(drafts),
            conditions=tuple(conditions),
            therapies=tuple(self._therapies(record)),
            end_of_life=tuple(self._end_of_life(record, conditions, today)),
            birth_date=birth,
            deceased=self._deceased(record, today),
            inpatient_context=self._inpatient_context(record),
            completeness=Completeness(
                medication_history="partial" if "meds" in record.partial else "complete",
                dispenses_and_statements=not (record.unavailable & {"dispenses", "statements"}),
                therapies=not {"procedures", "serviceRequests"} <= record.unavailable,
                unusable_reason=record.unusable_reason,
            ),
            mme_calculator=self._mme,
            activity=self.activity,
        )

    def _history(self, record: PatientRecord, today: dt.date) -> list[MedicationUse]:
        classify = self.knowledge.classifier.classify_order
        activity = self.activity
        history: list[MedicationUse] = []
        for rtype, source, resources in (
            ("MedicationRequest", "order", record.medication_requests),
            ("MedicationDispense", "dispense", record.medication_dispenses),
            ("MedicationStatement", "statement", record.medication_statements),
        ):
            meanings = MEDICATION_STATUS[rtype]
            for resource in resources:
                meaning = meanings.get(status_code(resource, "status"), _UNKNOWN_STATUS)
                if meaning is NEVER_EXISTED or meaning is NEVER_STARTED:
                    continue
                classification = classify(resource, record.medication_for(resource))
                if not classification.classes:
                    continue  # not in a monitored class: nothing more is read (cheap history)
                if source == "order":
                    window = request_window(resource, activity)
                elif source == "dispense":
                    window = _dispense_window(resource, activity)
                else:
                    window = _statement_window(resource, activity, today, meaning is CURRENT)
                active = (
                    meaning is CURRENT
                    and _current(window, today)
                    and not (source == "dispense" and window.start is None)
                )  # undated: no supply known
                history.append(
                    MedicationUse(
                        resource,
                        classification,
                        source,
                        False,
                        window.start,
                        window.exposure_end,
                        window.current_until,
                        active,
                        window.basis if active else None,
                    )
                )
        return history

    def _mme(self, use: MedicationUse) -> MmeResult:
        return mme_for(
            use.resource, use.classification, self.knowledge.mme, self.settings.mme_table
        )

    def _drafts(self, record: PatientRecord, today: dt.date) -> list[MedicationUse]:
        classify = self.knowledge.classifier.classify_order
        drafts: list[MedicationUse] = []
        focus_ids = {id(o) for o in record.focus_orders}
        for order in record.draft_orders:
            if order.get("resourceType") != "MedicationRequest":
                continue
            classification = classify(order, record.medication_for(order))
            if not classification.classes:
                continue
            window = request_window(order, self.activity)
            drafts.append(
                MedicationUse(
                    order,
                    classification,
                    "draft",
                    id(order) in focus_ids,
                    window.start or today,
                    window.exposure_end,
                    window.current_until,
                    True,
                )
            )
        return drafts

    def _conditions(
        self, record: PatientRecord, today: dt.date, birth: dt.date | None
    ) -> list[ConditionFact]:
        categories_of = self.knowledge.conditions.categories
        found: list[ConditionFact] = []
        for condition in record.conditions:
            categories = categories_of(condition.get("code"))
            if not categories or not active_condition(condition, today):
                continue
            onset, source = _condition_onset(condition, birth)
            found.append(
                ConditionFact(
                    condition,
                    categories,
                    onset,
                    source,
                    concept_text(condition.get("code")) or "condition",
                )
            )
        # The draft order's own reason (reasonCode, or a reasonReference to a Condition that was
        # not among the active ones) is evidence of what it treats.
        known = {id(c.resource) for c in found}
        for order in record.focus_orders:
            for concept in as_list(order.get("reasonCode")):
                categories = categories_of(concept)
                if categories:
                    found.append(
                        ConditionFact(
                            order,
                            categories,
                            None,
                            "order-reason",
                            concept_text(concept) or "order reason",
                        )
                    )
            for ref in as_list(order.get("reasonReference")):
                linked = record.resolve(ref, order, "Condition")
                if linked is not None and linked.get("resourceType") != "Condition":
                    continue
                if linked is None or id(linked) in known:
                    continue
                if status_code(linked, "verificationStatus") in _REFUTED:
                    continue
                categories = categories_of(linked.get("code"))
                if categories:
                    # named as this order's reason: low back pain now; if the condition is no
                    # longer active its old onset cannot make the pain chronic
                    onset, source = (
                        _condition_onset(linked, birth)
                        if active_condition(linked, today)
                        else (None, "order-reason")
                    )
                    found.append(
                        ConditionFact(
                            linked,
                            categories,
                            onset,
                            source,
                            concept_text(linked.get("code")) or "condition",
                        )
                    )
                    known.add(id(linked))
        return found

    def _therapies(self, record: PatientRecord) -> list[TherapyOnRecord]:
        step_of = self.knowledge.therapies.step
        labels = self.knowledge.therapies.step_labels
        found: list[TherapyOnRecord] = []
        drafts = [o for o in record.draft_orders if o.get("resourceType") == "ServiceRequest"]
        for kind, resources, counted in (
            ("done", record.procedures, THERAPY_COUNTS["Procedure"]),
            ("ordered", record.service_requests, THERAPY_COUNTS["ServiceRequest"]),
            ("now", drafts, None),
        ):
            for resource in resources:
                if counted is not None and status_code(resource, "status") not in counted:
                    continue
                step = step_of(resource.get("code"))
                if step is None:
                    continue
                day = None if kind == "now" else _resource_date(resource)
                found.append(
                    TherapyOnRecord(
                        step, concept_text(resource.get("code")) or labels[step], day, kind
                    )
                )
        return found

    def _end_of_life(
        self, record: PatientRecord, conditions: list[ConditionFact], today: dt.date
    ) -> list[EndOfLifeEvidence]:
        """Current hospice, palliative or end-of-life care wherever the chart records it."""
        categories_of = self.knowledge.conditions.categories
        recent = today - dt.timedelta(days=self.settings.end_of_life_recent_days)
        found = [
            EndOfLifeEvidence("condition", c.label, c.onset)
            for c in conditions
            if c.has(_END_OF_LIFE) and c.onset_source != "order-reason"
        ]

        def is_eol(*concepts: Any) -> bool:
            return any(_END_OF_LIFE in categories_of(c) for c in concepts if isinstance(c, dict))

        for procedure in record.procedures:
            if status_code(procedure, "status") in _EOL_PROCEDURE_NOT or not is_eol(
                procedure.get("code")
            ):
                continue
            start, end = _period_dates(procedure, "performedPeriod", "performedDateTime")
            open_ended = isinstance(procedure.get("performedPeriod"), dict) and end is None
            if open_ended or (end or start or today) >= recent:
                found.append(
                    EndOfLifeEvidence("procedure", concept_text(procedure.get("code")) or "", start)
                )
        for referral in record.service_requests:
            if status_code(referral, "status") in _EOL_REFERRAL_NOT or not is_eol(
                referral.get("code")
            ):
                continue
            day = _resource_date(referral)
            if day is None or day >= recent:
                found.append(
                    EndOfLifeEvidence("referral", concept_text(referral.get("code")) or "", day)
                )
        for encounter in record.encounters:
            concepts = [
                *as_list(encounter.get("type")),
                encounter.get("serviceType"),
                *as_list(encounter.get("reasonCode")),
            ]
            discharged = _discharged_to_hospice(encounter, categories_of)
            if not is_eol(*concepts) and not discharged:
                continue
            start, end = _period_dates(encounter, "period")
            status = status_code(encounter, "status")
            # an open hospice / palliative encounter, or one that ended recently (home hospice
            # visits are recorded as finished encounters; so is a discharge to hospice)
            current = (status in _EOL_ENCOUNTER_OPEN and (end is None or end >= today)) or (
                status == "finished"
                and (end or start) is not None
                and (end or start or today) >= recent
            )
            if current:
                label = next((concept_text(c) for c in concepts if concept_text(c)), "")
                found.append(EndOfLifeEvidence("encounter", label, start))
        for plan in record.care_plans:
            if status_code(plan, "status") not in _EOL_CARE_PLAN:
                continue
            concepts = [*as_list(plan.get("category"))]
            for activity in as_list(plan.get("activity")):
                detail = activity.get("detail") if isinstance(activity, dict) else None
                if (
                    isinstance(detail, dict)
                    and status_code(detail, "status") not in _CARE_PLAN_ACTIVITY_NOT
                ):
                    concepts.append(detail.get("code"))
            # the title names the plan; a description is free text that may only discuss it
            if isinstance(plan.get("title"), str):
                concepts.append({"text": plan["title"]})
            start, end = _period_dates(plan, "period")
            if is_eol(*concepts) and (end is None or end >= today):
                label = next((concept_text(c) for c in concepts if concept_text(c)), "")
                found.append(EndOfLifeEvidence("care-plan", label, start))
        return found

    @staticmethod
    def _deceased(record: PatientRecord, today: dt.date) -> bool:
        patient = record.patient or {}
        if patient.get("deceasedBoolean") is True:
            return True
        died = parse_date(patient.get("deceasedDateTime"))
        return died is not None and died <= today

    @staticmethod
    def _inpatient_context(record: PatientRecord) -> bool:
        if not record.encounter_id:
            return False
        for encounter in record.encounters:
            if encounter.get("id") == record.encounter_id:
                klass = encounter.get("class")
                code = klass.get("code") if isinstance(klass, dict) else None
                return code in _INPATIENT_CLASSES
        return False


_DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"


def _discharged_to_hospice(encounter: JSON, categories_of: Callable[[Any], frozenset[str]]) -> bool:
    hospitalization = encounter.get("hospitalization")
    if not isinstance(hospitalization, dict):
        return False
    disposition = hospitalization.get("dischargeDisposition")
    if any(
        system == _DISCHARGE_DISPOSITION and code == "hosp"
        for system, code, _ in codings(disposition)
    ):
        return True  # the FHIR discharge-disposition code for hospice, often sent bare
    return _END_OF_LIFE in categories_of(disposition)


def oud_treatment_names(facts: ClinicalFacts) -> list[str]:
    """Ingredient names of current or ordered opioid use disorder treatment."""
    names = []
    for use in (*facts.history, *facts.drafts):
        if (use.active or use.is_draft) and treats_opioid_use_disorder(use, facts):
            names.append(
                "methadone" if "methadone" in use.classification.names else "buprenorphine"
            )
    return names


def treats_opioid_use_disorder(use: MedicationUse, facts: ClinicalFacts) -> bool:
    """Buprenorphine for OUD (by product), or methadone for a patient with an active opioid use
    disorder diagnosis: treatment that must not be withheld (CDC 2022 Recommendation 11)."""
    if use.has(MOUD) and not use.has(OPIOID):
        return True
    return "methadone" in use.classification.names and bool(
        facts.conditions_in("opioid-use-disorder")
    )
