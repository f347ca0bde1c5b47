"""Suggestions shared by several rules: which template (cards/suggestions.json) with which
values. Only drafts the EHR can address (with an id) get a replace or remove action."""

from __future__ import annotations

from cds_service.facts import ClinicalFacts, MedicationUse
from cds_service.findings import SuggestionSpec
from cds_service.rules.criteria import is_first_line_analgesic, short_name


def draft_address(draft: MedicationUse) -> str | None:
    draft_id = draft.resource.get("id")
    if isinstance(draft_id, str) and draft_id and len(draft_id) <= 64:
        return f"MedicationRequest/{draft_id}"
    return None


def draft_replacements(drafts: list[MedicationUse], facts: ClinicalFacts) -> list[SuggestionSpec]:
    """Replace each draft opioid with naproxen; when a first-line analgesic is already current
    or in the order set (a second NSAID would add harm), offer removing the opioid instead."""
    nsaid_now = any(is_first_line_analgesic(d) for d in facts.drafts) or any(
        u.active and is_first_line_analgesic(u) for u in facts.history
    )
    specs = []
    for draft in drafts:
        address = draft_address(draft)
        if address is None:
            continue
        key = "remove-draft" if nsaid_now else "replace-with-naproxen"
        values = {"drug": short_name(draft), "resource_id": address}
        if key == "replace-with-naproxen":
            values["patient_id"] = facts.patient_id  # the new order's subject
        specs.append(SuggestionSpec(key, values))
    return specs


def non_drug_referrals(facts: ClinicalFacts) -> list[SuggestionSpec]:
    return [
        SuggestionSpec("refer-physical-therapy", {"patient_id": facts.patient_id}),
        SuggestionSpec("refer-cbt", {"patient_id": facts.patient_id}),
    ]
