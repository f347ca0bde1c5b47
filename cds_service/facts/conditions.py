"""Conditions: which are active, in which categories, and since when (onset, chronicity)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cds_service.facts.dates import add_years
from cds_service.facts.model import ConditionFact
from cds_service.fhir.read import JSON, as_list, codings, concept_text, parse_date, status_code
from cds_service.fhir.record import PatientRecord

_ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
_REFUTED = frozenset({"refuted", "entered-in-error"})
_NOT_DONE = frozenset({"entered-in-error", "not-done", "revoked", "draft"})
_FROM_TREATMENT = frozenset({"opioid-use-disorder"})


def condition_onset(condition: JSON, birth: dt.date | None) -> tuple[dt.date | None, str]:
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
            onset = add_years(birth, value)
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


def conditions_on_record(
    record: PatientRecord,
    today: dt.date,
    birth: dt.date | None,
    categories_of: Callable[[Any], frozenset[str]],
) -> list[ConditionFact]:
    """Active conditions in a category the rules use, and the focus order's own reason."""
    found: list[ConditionFact] = []
    for condition in record.of_type("Condition"):
        categories = categories_of(condition.get("code"))
        if not categories or not active_condition(condition, today):
            continue
        onset, source = condition_onset(condition, birth)
        found.append(
            ConditionFact(
                condition,
                categories,
                onset,
                source,
                concept_text(condition.get("code")) or "condition",
            )
        )
    # Opioid use disorder treatment recorded as a procedure or referral (methadone or
    # buprenorphine addiction therapy, VSAC 1111.177) documents the disorder itself.
    for resource in (*record.of_type("Procedure"), *record.of_type("ServiceRequest")):
        if status_code(resource, "status") in _NOT_DONE:
            continue
        categories = categories_of(resource.get("code")) & _FROM_TREATMENT
        if categories:
            found.append(
                ConditionFact(
                    resource,
                    categories,
                    None,
                    "treatment",
                    concept_text(resource.get("code")) or "opioid use disorder treatment",
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
                    condition_onset(linked, birth)
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
