"""What an order says it treats (reasonCode, reasonReference): pain, another indication, or
nothing stated. An NSAID or acetaminophen counts as a first-line pain trial only when taken for
pain (rules/alternatives.py is_first_line_analgesic): an order whose reason names another
indication (fever, a cardiovascular reason for aspirin, restless legs or insomnia for a sleep
aid) is not one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds_service.facts.model import MedicationUse
from cds_service.fhir.read import JSON, as_list
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.classifier import FIRST_LINE_CLASSES

PAIN, OTHER, NOT_STATED = "pain", "other", ""


def order_indication(resource: JSON, record: PatientRecord, is_pain: Callable[[Any], bool]) -> str:
    """ "pain" when a stated reason is pain, "other" when reasons are stated and none is pain,
    "" when the order states no reason."""
    reasons: list[Any] = [c for c in as_list(resource.get("reasonCode")) if isinstance(c, dict)]
    for ref in as_list(resource.get("reasonReference")):
        if not isinstance(ref, dict):
            continue
        linked = record.resolve(ref, resource, "Condition")
        if isinstance(linked, dict) and isinstance(linked.get("code"), dict):
            reasons.append(linked["code"])
        elif isinstance(ref.get("display"), str) and ref["display"].strip():
            reasons.append({"text": ref["display"]})
    if not reasons:
        return NOT_STATED
    return PAIN if any(is_pain(c) for c in reasons) else OTHER


def with_indications(
    uses: tuple[MedicationUse, ...], record: PatientRecord, is_pain: Callable[[Any], bool]
) -> tuple[MedicationUse, ...]:
    """The uses, each NSAID or acetaminophen with the indication its order states (a copy
    only when that is not the default: most orders state no reason)."""
    out = []
    for u in uses:
        if not u.classification.classes.isdisjoint(FIRST_LINE_CLASSES):
            indication = order_indication(u.resource, record, is_pain)
            if indication != u.indication:
                u = u._replace(indication=indication)
        out.append(u)
    return tuple(out)
