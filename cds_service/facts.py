"""Clinical facts derived once per request from the patient record, shared by every rule.

The expensive part of a large history is reading it, so each order is classified from its raw
JSON (a cached look-up) and only orders in a monitored class become `MedicationUse` objects.
"Active" follows the clinical brief: status alone is not enough, an order must not be past its
end (validity period end, else authored date + supply x fills + grace, else a bounded
look-back), because years-old "active" orders are a classic source of false alarms.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cds_service.fhir.read import (
    JSON,
    as_list,
    concept_text,
    days_per_unit,
    parse_date,
    status_code,
)
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import CLASSIFIER, Classification
from cds_service.knowledge.conditions import CONDITIONS

_ACTIVE_REQUEST_STATUSES = frozenset({"active", "on-hold"})
_ACTIVE_STATEMENT_STATUSES = frozenset({"active", "intended", "on-hold"})
_DISPENSED_STATUSES = frozenset({"completed", "in-progress"})


@dataclass(frozen=True)
class MedicationUse:
    """One medication order, dispense or statement in a monitored class."""

    resource: JSON
    classification: Classification
    is_draft: bool
    in_focus: bool  # a draft the advice is about (order-select: the selected ones)
    start: dt.date | None
    end: dt.date | None  # the date after which it is no longer taken, when it can be known
    active: bool  # current on the evaluation date

    @property
    def reference(self) -> str:
        return f"{self.resource.get('resourceType')}/{self.resource.get('id', '')}"

    def has(self, drug_class: str) -> bool:
        return self.classification.has(drug_class)


@dataclass(frozen=True)
class ActivitySettings:
    grace_days: int = 30
    undated_lookback_days: int = 180

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ActivitySettings:
        return cls(int(data.get("grace_days", 30)), int(data.get("undated_lookback_days", 180)))


def _days(quantity: Any) -> float | None:
    if not isinstance(quantity, dict):
        return None
    value = quantity.get("value")
    # `not 0 <= value < 1e6` also refuses NaN, infinities and ints too large for a float
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        return None
    unit = quantity.get("code") or quantity.get("unit") or "d"
    factor = days_per_unit(unit)
    return None if factor is None else float(value) * factor


def _add_days(start: dt.date, days: float) -> dt.date | None:
    try:
        return start + dt.timedelta(days=min(days, 36_500))
    except OverflowError:
        return None


def request_window(order: JSON, settings: ActivitySettings) -> tuple[dt.date | None, dt.date | None]:
    """(start, end) of a MedicationRequest's supply; end is None when nothing bounds it."""
    dispense = order.get("dispenseRequest")
    dispense = dispense if isinstance(dispense, dict) else {}
    validity = dispense.get("validityPeriod")
    validity = validity if isinstance(validity, dict) else {}
    start = parse_date(order.get("authoredOn")) or parse_date(validity.get("start"))
    explicit_end = parse_date(validity.get("end"))
    if explicit_end is not None:
        return start, explicit_end
    if start is None:
        return None, None
    supply = _days(dispense.get("expectedSupplyDuration"))
    if supply is not None:
        repeats = dispense.get("numberOfRepeatsAllowed")
        fills = 1 + (repeats if isinstance(repeats, int) and 0 <= repeats < 100 else 0)
        return start, _add_days(start, supply * fills + settings.grace_days)
    return start, _add_days(start, settings.undated_lookback_days)


def _statement_window(statement: JSON, settings: ActivitySettings) -> tuple[dt.date | None,
                                                                           dt.date | None]:
    period = statement.get("effectivePeriod")
    if isinstance(period, dict):
        start = parse_date(period.get("start"))
        end = parse_date(period.get("end"))
        if end is not None:
            return start, end
    else:
        start = parse_date(statement.get("effectiveDateTime"))
    start = start or parse_date(statement.get("dateAsserted"))
    if start is None:
        return None, None
    return start, _add_days(start, settings.undated_lookback_days)


def _dispense_window(dispense: JSON, settings: ActivitySettings) -> tuple[dt.date | None,
                                                                         dt.date | None]:
    start = parse_date(dispense.get("whenHandedOver")) or parse_date(dispense.get("whenPrepared"))
    if start is None:
        return None, None
    supply = _days(dispense.get("daysSupply"))
    if supply is None:
        return start, _add_days(start, settings.undated_lookback_days)
    return start, _add_days(start, supply + settings.grace_days)


def _current(start: dt.date | None, end: dt.date | None, today: dt.date) -> bool:
    if start is not None and start > today:
        return False
    return end is None or end >= today


_ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
_REFUTED = frozenset({"refuted", "entered-in-error"})


@dataclass(frozen=True)
class ConditionFact:
    """An active Condition in a category the rules use (low back pain, cancer, ...)."""

    resource: JSON
    categories: frozenset[str]
    onset: dt.date | None  # onset (dateTime, period start or age), else recorded date
    onset_source: str  # "onset" | "recorded date" | ""
    label: str

    def has(self, category: str) -> bool:
        return category in self.categories


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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 130 \
                and unit in {"a", "yr", "year", "years"}:
            onset = _add_years(birth, value)
    if onset is not None:
        return onset, "onset"
    recorded = parse_date(condition.get("recordedDate"))
    return (recorded, "recorded date") if recorded else (None, "")


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


@dataclass(frozen=True)
class ClinicalFacts:
    today: dt.date
    history: tuple[MedicationUse, ...]  # signed orders, dispenses, statements (monitored classes)
    drafts: tuple[MedicationUse, ...]  # every draft order in a monitored class
    unclassified_drafts: int
    conditions: tuple[ConditionFact, ...] = ()  # active conditions in a known category
    birth_date: dt.date | None = None

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


def derive_facts(record: PatientRecord, today: dt.date, settings: ActivitySettings) -> ClinicalFacts:
    history: list[MedicationUse] = []
    classify = CLASSIFIER.classify_order
    # (records, statuses that never count, window, statuses that make it current;
    #  None = any counted status: a dispense is current while its supply lasts)
    sources: tuple[tuple[list[JSON], frozenset[str], Any, frozenset[str] | None], ...] = (
        (record.medication_requests, frozenset({"entered-in-error", "draft"}),
         request_window, _ACTIVE_REQUEST_STATUSES),
        (record.medication_statements, frozenset({"entered-in-error", "not-taken"}),
         _statement_window, _ACTIVE_STATEMENT_STATUSES),
        (record.medication_dispenses, frozenset(), _dispense_window, None),
    )
    for resources, skipped, window, current_statuses in sources:
        for resource in resources:
            status = status_code(resource, "status")
            if status in skipped or (current_statuses is None and status
                                     not in _DISPENSED_STATUSES):
                continue
            classification = classify(resource, record.medication_for(resource))
            if not classification.classes:
                continue  # not in a monitored class: nothing more is read (cheap history)
            start, end = window(resource, settings)
            active = (current_statuses is None or status in current_statuses) and \
                _current(start, end, today)
            history.append(MedicationUse(resource, classification, False, False, start, end,
                                         active))

    drafts: list[MedicationUse] = []
    unclassified = 0
    focus_ids = {id(o) for o in record.focus_orders}
    for order in record.draft_orders:
        if order.get("resourceType") != "MedicationRequest":
            continue
        classification = classify(order, record.medication_for(order))
        if not classification.classes:
            unclassified += 1
            continue
        start, end = request_window(order, settings)
        drafts.append(MedicationUse(order, classification, True, id(order) in focus_ids,
                                    start or today, end, True))
    birth = parse_date(record.patient.get("birthDate")) if record.patient else None
    conditions: list[ConditionFact] = []
    for condition in record.conditions:
        categories = CONDITIONS.categories(condition.get("code"))
        if not categories or not active_condition(condition, today):
            continue
        onset, source = _condition_onset(condition, birth)
        conditions.append(ConditionFact(condition, categories, onset, source,
                                        concept_text(condition.get("code")) or "condition"))
    return ClinicalFacts(today, tuple(history), tuple(drafts), unclassified, tuple(conditions),
                         birth)


def category_codes(resource: JSON) -> set[str]:
    codes: set[str] = set()
    for category in as_list(resource.get("category")):
        if isinstance(category, dict):
            for coding in as_list(category.get("coding")):
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    codes.add(coding["code"])
    return codes
