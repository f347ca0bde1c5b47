"""Medications: what each order, dispense and statement means on the evaluation date.

Medication semantics (one table, used by every rule; README "Record semantics"):

| resource | never existed | never started | past exposure | current (within its window) |
|---|---|---|---|---|
| MedicationRequest | entered-in-error | cancelled, draft | completed, stopped, unknown | active, on-hold |
| MedicationDispense | entered-in-error | preparation, cancelled, declined, on-hold | stopped, unknown | completed, in-progress |
| MedicationStatement | entered-in-error | not-taken, intended | completed, stopped, unknown | active, on-hold |

A MedicationRequest whose intent is proposal, plan, option (or directive) prescribes nothing:
it is read as never started, whatever its status.

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
from typing import Any

from cds_service.facts.dates import add_days
from cds_service.facts.model import ClinicalFacts, MedicationUse
from cds_service.fhir.read import JSON, parse_date, status_code
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import MOUD, OPIOID, Classification
from cds_service.settings import MedicationActivity
from cds_service.units import days_in

Classify = Callable[[JSON, JSON | None], Classification]

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
# MedicationRequest intents that authorise nothing and record no use (a suggestion, an option
# of a request group; "directive" is not an R4 MedicationRequest intent but other request
# types use it): never exposure, never current. `plan` counts: EHRs record documented home
# medications as plans (Oracle Health's reported medications), and a patient taking a
# benzodiazepine at home takes it whoever prescribed it. An order of any kind, a missing or an
# unknown intent counts too (the cautious reading).
NOT_PRESCRIBED_INTENTS = frozenset({"proposal", "option", "directive"})
# The R4 intents that prescribe, spelled exactly: read without status_code (the hot path).
PRESCRIBING_INTENTS = frozenset(
    {"order", "plan", "original-order", "reflex-order", "filler-order", "instance-order"}
)


# A window: (start, exposure_end, current_until, basis). exposure_end: the end of the actual
# supply; current_until: the last day it counts as current use; basis: the ("basis-*" line key,
# its raw values), turned into a Line only for entries that are current (the hot path reads
# thousands of entries and describes a few). A plain tuple: built once per monitored entry.
Window = tuple[dt.date | None, dt.date | None, dt.date | None, tuple[str, tuple[Any, ...]] | None]


_NONE: Mapping[str, Any] = {}  # an absent element, read (never written)


def request_window(order: JSON, activity: MedicationActivity) -> Window:
    """A MedicationRequest's supply: authoredOn + supply x fills (exposure) + the allowance
    (current); a validity period end bounds current use when no supply is given."""
    dispense = order.get("dispenseRequest")
    dispense = dispense if isinstance(dispense, dict) else _NONE
    validity = dispense.get("validityPeriod")
    if isinstance(validity, dict):
        start = parse_date(order.get("authoredOn")) or parse_date(validity.get("start"))
        validity_end = parse_date(validity.get("end"))
    else:  # the common case: no validity period to read
        start = parse_date(order.get("authoredOn"))
        validity_end = None
    if start is None:
        return (
            None,
            None,
            validity_end,
            ("basis-validity", (validity_end,)) if validity_end else None,
        )
    supply = days_in(dispense.get("expectedSupplyDuration"))
    if supply is not None:
        repeats = dispense.get("numberOfRepeatsAllowed")
        fills = 1 + (repeats if isinstance(repeats, int) and 0 <= repeats < 100 else 0)
        end = add_days(start, supply * fills)
        until = add_days(end, activity.grace_days) if end else None
        if fills == 1:
            return (start, end, until, ("basis-supply", (start, supply, until)))
        return (start, end, until, ("basis-supply-refills", (start, supply, until, fills)))
    exposure = add_days(start, activity.assumed_supply_days)
    if validity_end is not None:
        return (start, exposure, validity_end, ("basis-validity", (validity_end,)))
    until = add_days(start, activity.undated_lookback_days)
    return (start, exposure, until, ("basis-undated", (start, until)))


def dispense_window(dispense: JSON, activity: MedicationActivity) -> Window:
    start = parse_date(dispense.get("whenHandedOver")) or parse_date(dispense.get("whenPrepared"))
    if start is None:
        return (None, None, None, None)
    supply = days_in(dispense.get("daysSupply"))
    if supply is None:
        end = add_days(start, activity.assumed_supply_days)
        return (start, end, end, ("basis-dispensed-assumed", (start, end)))
    until = add_days(start, supply + activity.grace_days)
    return (start, add_days(start, supply), until, ("basis-dispensed", (start, supply, until)))


def statement_window(
    statement: JSON, activity: MedicationActivity, today: dt.date, ongoing: bool = True
) -> Window:
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
        return (start, end, end, ("basis-statement-period", (end,)))
    confirmed = max((d for d in (asserted, start) if d is not None), default=None)
    if confirmed is None:
        return (None, None, None, None)
    until = add_days(confirmed, activity.statement_confirmed_within_days)
    # An open-ended statement: exposure runs while it was still confirmed; one that says it
    # was stopped or completed, with no end date, ended by its last confirmation.
    exposure = (min(today, until) if until else today) if ongoing else confirmed
    return (start, exposure, until, ("basis-statement-confirmed", (confirmed,)))


def is_current(window: Window, today: dt.date) -> bool:
    start, _, until, _ = window
    if start is not None and start > today:
        return False
    return until is None or until >= today


def medication_history(
    record: PatientRecord,
    today: dt.date,
    classify: Classify,
    activity: MedicationActivity,
) -> list[MedicationUse]:
    """Signed orders, dispenses and statements in a monitored class, with their windows."""
    history: list[MedicationUse] = []
    # A chart names the same few drugs again and again: each medication concept of the common
    # shape (a text and one coding) is classified once per request, remembered by its strings
    # (`_concept_strings`); the classifier's own cache is keyed by the same strings, so the
    # result is the same, without building its key for every entry.
    classified: dict[tuple[Any, ...], Classification] = {}
    for rtype, source, resources in (
        ("MedicationRequest", "order", record.of_type("MedicationRequest")),
        ("MedicationDispense", "dispense", record.of_type("MedicationDispense")),
        ("MedicationStatement", "statement", record.of_type("MedicationStatement")),
    ):
        meanings = MEDICATION_STATUS[rtype]
        for resource in resources:
            # a status exactly as R4 spells it is looked up at once; anything else (case,
            # spaces, a CodeableConcept, none) is read by status_code as before
            status = resource.get("status")
            meaning = meanings.get(status) if isinstance(status, str) else None
            if meaning is None:
                meaning = meanings.get(status_code(resource, "status"), _UNKNOWN_STATUS)
            if meaning is NEVER_EXISTED or meaning is NEVER_STARTED:
                continue
            if source == "order":
                intent = resource.get("intent")  # likewise: an R4 intent spelled exactly
                if not (isinstance(intent, str) and intent in PRESCRIBING_INTENTS) and (
                    status_code(resource, "intent") in NOT_PRESCRIBED_INTENTS
                ):
                    continue
            if resource.get("medicationReference") is not None:
                classification = classify(resource, record.medication_for(resource))
            else:
                key = _concept_strings(resource.get("medicationCodeableConcept"))
                try:
                    known = classified.get(key) if key is not None else None
                except TypeError:  # a list or object where a string belongs: not a key
                    key = known = None
                if known is None:
                    known = classify(resource, None)
                    if key is not None:
                        classified[key] = known
                classification = known
            if not classification.classes:
                continue  # not in a monitored class: nothing more is read (cheap history)
            if source == "order":
                window = request_window(resource, activity)
            elif source == "dispense":
                window = dispense_window(resource, activity)
            else:
                window = statement_window(resource, activity, today, meaning is CURRENT)
            start, exposure_end, until, basis = window
            active = (
                meaning is CURRENT
                and (start is None or start <= today)
                and (until is None or until >= today)
                and not (source == "dispense" and start is None)
            )  # is_current; undated dispense: no supply known
            history.append(
                MedicationUse(
                    resource,
                    classification,
                    source,
                    False,
                    start,
                    exposure_end,
                    until,
                    active,
                    basis if active else None,
                )
            )
    return history


def _concept_strings(concept: Any) -> tuple[Any, ...] | None:
    """A per-request key for a medication concept of the common shape: (text,) or (text,
    system, code, display) of its one coding, as written; None for any other shape, which is
    classified as before (so is a key holding a list or object: it cannot be hashed). The
    classification depends only on these strings (the classifier's cache key,
    fhir/read.py concept_key, holds the same strings with anything else collapsed)."""
    if not isinstance(concept, dict):
        return None
    coding = concept.get("coding")
    if coding is None:
        key: tuple[Any, ...] = (concept.get("text"),)
    elif isinstance(coding, list) and len(coding) == 1 and isinstance(coding[0], dict):
        one = coding[0]
        key = (concept.get("text"), one.get("system"), one.get("code"), one.get("display"))
    else:
        return None
    return key


def draft_uses(
    record: PatientRecord, today: dt.date, classify: Classify, activity: MedicationActivity
) -> list[MedicationUse]:
    """The draft orders in a monitored class (all of them; `in_focus` marks the selected)."""
    drafts: list[MedicationUse] = []
    focus_ids = {id(o) for o in record.focus_orders}
    for order in record.draft_orders:
        if order.get("resourceType") != "MedicationRequest":
            continue
        classification = classify(order, record.medication_for(order))
        if not classification.classes:
            continue
        start, exposure_end, until, _ = request_window(order, activity)
        drafts.append(
            MedicationUse(
                order,
                classification,
                "draft",
                id(order) in focus_ids,
                start or today,
                exposure_end,
                until,
                True,
            )
        )
    return drafts


def oud_treatment_names(facts: ClinicalFacts) -> list[str]:
    """Ingredient names of current or ordered opioid use disorder treatment."""
    names = []
    for use in (*facts.active_history(), *facts.drafts):
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
