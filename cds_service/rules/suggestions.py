"""Suggestions shared by several rules: which template (cards/suggestions.json) with which
values. Only drafts the EHR can address (with an id) get a replace or remove action.

The safer alternative comes first and never harms (docs/cards.md): naproxen, unless an NSAID
is current or in the order set or the record shows a contraindication (nsaid_barrier: an
NSAID or aspirin allergy among them); then acetaminophen, unless it is already taken or the
patient is allergic to it; only then removing the draft. An opioid allergy changes nothing
here: the opioid cards are about the draft opioid whatever the allergy list says."""

from __future__ import annotations

from cds_service.facts import ClinicalFacts, MedicationUse
from cds_service.findings import Line, SuggestionSpec
from cds_service.rules.alternatives import acetaminophen_current, nsaid_barrier
from cds_service.rules.dose import continues_regimen
from cds_service.rules.lines import short_name


def draft_address(draft: MedicationUse) -> str | None:
    draft_id = draft.resource.get("id")
    if isinstance(draft_id, str) and draft_id and len(draft_id) <= 64:
        return f"MedicationRequest/{draft_id}"
    return None


def alternative(facts: ClinicalFacts) -> str | None:
    """The non-opioid analgesic the service may suggest for this patient, if any (decided
    once per request: several rules and lines ask)."""
    memo = facts.memo
    if "alternative" not in memo:
        memo["alternative"] = (
            "naproxen"
            if not nsaid_barrier(facts)
            else "acetaminophen"
            if not acetaminophen_current(facts)
            else None
        )
    drug: str | None = memo["alternative"]
    return drug


def alternative_line(facts: ClinicalFacts, says_unchecked: bool = False) -> Line:
    """The alternative named in a card's advice: the same choice the suggestions make.
    `says_unchecked`: the advice itself says when the allergy list could not be read (the
    card's `-unchecked` lines), instead of an evidence line that would take one of its three
    places."""
    drug = alternative(facts)
    key = "alternative-nsaid" if drug == "naproxen" else f"alternative-{drug or 'none'}"
    if says_unchecked and drug is not None and not facts.completeness.allergies:
        key += "-unchecked"
    return Line(key)


def allergy_lines(facts: ClinicalFacts, not_checked: bool = True) -> list[Line]:
    """The allergies that decided the alternative (each NSAID or acetaminophen allergy on
    record), or, when a drug is offered and the allergy list could not be read, that it was
    not checked: an unread list never reads as "no allergies" (`not_checked=False` where the
    card's advice says it instead: alternative_line(says_unchecked=True))."""
    lines = [
        Line("allergy-on-record", {"allergy": a.label})
        for a in facts.allergies
        if a.has("nsaid") or a.has("acetaminophen")
    ]
    if not_checked and alternative(facts) is not None and not facts.completeness.allergies:
        lines.append(Line("allergies-not-checked"))
    return lines


def draft_replacements(drafts: list[MedicationUse], facts: ClinicalFacts) -> list[SuggestionSpec]:
    """Replace each draft opioid with the safe alternative (naproxen, else acetaminophen);
    where neither may be added, offer removing the opioid instead. A draft that continues a
    current opioid regimen gets neither: stopping a long-term opioid is a taper, not a click.
    Built once per request for one list of drafts (two rules offer the same replacements for
    the shared drafts in scope); each caller gets its own list."""
    key = ("draft-replacements", id(drafts))
    cached: tuple[list[MedicationUse], tuple[SuggestionSpec, ...]] | None = facts.memo.get(key)
    if cached is None or cached[0] is not drafts:  # holding the list keeps its id unique
        cached = facts.memo[key] = (drafts, tuple(_draft_replacements(drafts, facts)))
    return list(cached[1])


def _draft_replacements(drafts: list[MedicationUse], facts: ClinicalFacts) -> list[SuggestionSpec]:
    drug = alternative(facts)
    specs = []
    for draft in drafts:
        address = draft_address(draft)
        if address is None or continues_regimen(draft, facts):
            continue
        values = {"drug": short_name(draft), "resource_id": address}
        if drug is None:
            specs.append(SuggestionSpec("remove-draft", values))
            continue
        values["patient_id"] = facts.patient_id  # the new order's subject
        specs.append(SuggestionSpec(f"replace-with-{drug}", values))
    return specs


def removals(drafts: list[MedicationUse]) -> list[SuggestionSpec]:
    """Remove each addressable draft: offered after the constructive suggestions."""
    out = []
    for draft in drafts:
        address = draft_address(draft)
        if address is not None:
            out.append(
                SuggestionSpec("remove-draft", {"drug": short_name(draft), "resource_id": address})
            )
    return out


def non_drug_referrals(facts: ClinicalFacts) -> list[SuggestionSpec]:
    return [
        SuggestionSpec("refer-physical-therapy", {"patient_id": facts.patient_id}),
        SuggestionSpec("refer-cbt", {"patient_id": facts.patient_id}),
    ]
