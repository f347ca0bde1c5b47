"""The patient record as read for one request: FHIR resources by type, references resolved
among them, the completeness of each clinical domain, and whose record each resource is.

This layer knows FHIR, not CDS Hooks: how a record is loaded (prefetch, FHIR fallback) is
cds_service/hooks/loading.py's business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cds_service.fhir.read import (
    JSON,
    as_list,
    bundle_entries,
    full_url_key,
    identifier_pairs,
    identifiers_agree,
    parse_reference,
)


class Domain(StrEnum):
    """A clinical domain of the record whose completeness the facts report. Each prefetch
    key declares the domain it feeds (hooks/services.py)."""

    PATIENT = "patient"
    MEDICATION_ORDERS = "medication-orders"
    # dispensing and the medication list: what the patient takes beyond this EHR's orders
    MEDICATIONS_OUTSIDE = "medications-outside"
    CONDITIONS = "conditions"
    THERAPIES = "therapies"  # procedures done, referrals made
    ENCOUNTERS = "encounters"
    CARE_PLANS = "care-plans"
    ALLERGIES = "allergies"  # allergies and intolerances (which alternatives may be offered)


# A record is flagged unusable when more than this share of its clinical resources name
# another patient, and at least UNUSABLE_MIN_IGNORED of them do (one stray resource in a
# short record is a data error, not a record that is mostly someone else's).
UNUSABLE_SHARE = 0.5
UNUSABLE_MIN_IGNORED = 3
UNUSABLE_OTHER_PATIENT = "other-patient"


@dataclass
class PatientRecord:
    """The patient's data as the rules see it: raw (repaired) FHIR JSON, grouped by type."""

    patient_id: str
    patient: JSON | None = None
    # Clinical resources of this patient by resourceType ("MedicationRequest" -> [...]): the
    # history the facts read. Drafts, the Patient and Medications are kept apart (below).
    resources: dict[str, list[JSON]] = field(default_factory=dict)
    encounter_id: str = ""  # the hook's context.encounterId
    # "Medication/id" (and the entry's fullUrl, when it has one) -> Medication resource
    medications: dict[str, JSON] = field(default_factory=dict)
    draft_orders: list[JSON] = field(default_factory=list)
    focus_orders: list[JSON] = field(default_factory=list)  # drafts the advice is about
    # Completeness, per clinical domain: domains whose data may be incomplete (a page not
    # read), and for each domain how many of its sources were asked for and how many could
    # not be had. `unavailable` names the prefetch keys, for the log line only.
    partial: set[Domain] = field(default_factory=set)
    sources: Counter[Domain] = field(default_factory=Counter)
    missing: Counter[Domain] = field(default_factory=Counter)
    unavailable: set[str] = field(default_factory=set)
    anomalies: Counter[str] = field(default_factory=Counter)
    fhir_calls: list[dict[str, Any]] = field(default_factory=list)
    # Ownership: clinical resources read (kept + ignored), those ignored because their
    # subject/patient is another patient, and why the record cannot be trusted ("" = usable;
    # UNUSABLE_OTHER_PATIENT when most of it names another patient).
    clinical_resource_count: int = 0
    other_patient_count: int = 0
    unusable_reason: str = ""
    # Resources read for this request, in the order read: a (fullUrl or "", resource) pair or
    # a whole Bundle (its readable entries, as bundle_entries gives them). Indexed by
    # "Type/id" and fullUrl the first time a reference has to be resolved (most requests,
    # whose references are all Patient/<id> and whose drugs are coded, never need it), so a
    # Bundle of thousands of entries costs nothing here until then.
    _unindexed: list[tuple[str, JSON] | JSON] = field(default_factory=list, init=False, repr=False)
    _index: dict[str, JSON] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def of(cls, patient_id: str, resources: Iterable[JSON] = (), **fields: Any) -> PatientRecord:
        """A record holding `resources` filed by their type (for tools and tests)."""
        record = cls(patient_id, **fields)
        for resource in resources:
            record.add(resource)
        return record

    def add(self, resource: JSON) -> None:
        """File a clinical resource of this patient under its type."""
        self.resources.setdefault(resource["resourceType"], []).append(resource)

    def of_type(self, resource_type: str) -> list[JSON]:
        """This patient's resources of one type (empty when none were read)."""
        return self.resources.get(resource_type, [])

    def missing_any(self, domain: Domain) -> bool:
        """Some source of the domain could not be read."""
        return self.missing[domain] > 0

    def missing_all(self, domain: Domain) -> bool:
        """Every source of the domain that the service asked for could not be read."""
        return self.sources[domain] > 0 and self.missing[domain] >= self.sources[domain]

    def remember(self, resource: JSON, full_url: str = "") -> None:
        """Make a resource resolvable by reference (Type/id, its Bundle entry's fullUrl as
        sent, normalised by full_url_key only when indexed); first one wins. Medications are
        filed in `medications` at once (by Medication/id and fullUrl)."""
        self._unindexed.append((full_url, resource))
        if resource.get("resourceType") == "Medication":
            self.file_medication(resource, full_url)

    def remember_bundle(self, bundle: JSON) -> None:
        """Make every readable entry of a Bundle resolvable by reference, as remember() would
        one by one (in entry order, after what was remembered before), without walking the
        entries now. The Medications among them are not filed: the caller, which walks the
        entries anyway, files each with file_medication()."""
        self._unindexed.append(bundle)

    def file_medication(self, resource: JSON, full_url: str = "") -> None:
        """File a Medication under Medication/id and its entry's fullUrl (first one wins)."""
        rid = resource.get("id")
        if isinstance(rid, str) and rid:
            self.medications.setdefault(f"Medication/{rid}", resource)
        key = full_url_key(full_url) if full_url else ""
        if key:
            self.medications.setdefault(key, resource)

    def lookup(self, key: str) -> JSON | None:
        """The resource remembered under a "Type/id" or fullUrl key, if any."""
        if self._unindexed:
            index = self._index
            for item in self._unindexed:
                for full_url, resource in (
                    (item,) if isinstance(item, tuple) else bundle_entries(item)
                ):
                    rtype, rid = resource.get("resourceType"), resource.get("id")
                    if isinstance(rid, str) and rid:
                        index.setdefault(f"{rtype}/{rid}", resource)
                    url_key = full_url_key(full_url) if full_url else ""
                    if url_key:
                        index.setdefault(url_key, resource)
            self._unindexed.clear()
        return self._index.get(key) or self.medications.get(key)

    def resolve(
        self, reference: Any, holder: JSON | None = None, resource_type: str | None = None
    ) -> JSON | None:
        """The resource a Reference names, among those read for this request: contained
        (#id, inside `holder`), a Bundle entry's fullUrl (urn:uuid:, absolute URL), Type/id,
        an absolute URL with any base (by Type/id), or a bare id (with `resource_type`)."""
        ref = parse_reference(reference)
        if ref.kind == "contained":
            for contained in as_list(holder.get("contained") if holder else None):
                if (
                    isinstance(contained, dict)
                    and contained.get("id") == ref.id
                    and resource_type in (None, contained.get("resourceType"))
                ):
                    return contained
            return None
        keys: list[str] = []
        if ref.kind in ("urn", "absolute", "relative"):
            keys.append(ref.key)
        if ref.kind == "absolute":
            keys.append(f"{ref.resource_type}/{ref.id}")
        if ref.kind == "bare" and resource_type:
            keys += [f"{resource_type}/{ref.id}", f"urn:uuid:{ref.id.lower()}"]
        for key in keys:
            found = self.lookup(key)
            if found is not None and resource_type in (None, found.get("resourceType")):
                return found
        return None

    def medication_for(self, order: JSON) -> JSON | None:
        """The Medication resource an order refers to (contained, prefetched or fetched)."""
        ref = order.get("medicationReference")
        if not isinstance(ref, dict):
            return None
        return self.resolve(ref, order, "Medication")


class Ownership:
    """Whether a resource's subject/patient is this request's patient: True (yes), False (it
    names another patient), None (cannot tell: unresolvable, a Group, no comparable data)."""

    def __init__(self, record: PatientRecord, patient_id: str, patient_url: str) -> None:
        self._record = record
        self._patient_id = patient_id
        self._own = f"Patient/{patient_id}"
        self._patient_keys = {f"Patient/{patient_id}", f"urn:uuid:{patient_id.lower()}"}
        if patient_url:
            self._patient_keys.add(patient_url)
        patient = record.patient
        self._identifiers = identifier_pairs(patient.get("identifier")) if patient else frozenset()

    def of(self, resource: JSON) -> bool | None:
        for element in ("subject", "patient"):
            ref = resource.get(element)
            if isinstance(ref, dict):
                if ref.get("reference") == self._own:  # the common case, decided at once
                    return True
                return self._names_patient(ref, resource)
        return True  # no subject: nothing says it is someone else's

    def _same_patient(self, target: JSON) -> bool | None:
        if target is self._record.patient or target.get("id") == self._patient_id:
            return True
        verdict = identifiers_agree(identifier_pairs(target.get("identifier")), self._identifiers)
        if verdict is not None:
            return verdict
        return False if isinstance(target.get("id"), str) else None

    def _names_patient(self, reference: JSON, holder: JSON) -> bool | None:
        ref = parse_reference(reference)
        by_identifier = (
            identifiers_agree(ref.identifiers, self._identifiers) if ref.identifiers else None
        )
        if ref.kind == "identifier":
            return by_identifier
        if ref.kind == "contained":
            target = self._record.resolve(ref.key, holder, "Patient")
            if target is not None:
                verdict = identifiers_agree(
                    identifier_pairs(target.get("identifier")), self._identifiers
                )
                if verdict is not None:
                    return verdict
            return by_identifier
        if ref.kind not in ("relative", "absolute", "bare", "urn"):
            return by_identifier
        if ref.resource_type not in ("", "Patient"):
            return None  # a Group, a Device...: not a patient this service can compare
        if ref.id == self._patient_id or ref.key in self._patient_keys:
            return True
        target = self._record.resolve(ref.key if ref.kind != "absolute" else reference)
        if target is None and ref.kind == "bare":
            target = self._record.lookup(f"urn:uuid:{ref.id.lower()}")
        if target is not None:
            if target.get("resourceType") != "Patient":
                return None
            verdict = self._same_patient(target)
            if verdict is not None:
                return verdict
        if by_identifier is not None:
            return by_identifier
        # a bundle-local urn that no Bundle entry carries: unresolvable, not proof of anything
        return None if ref.kind == "urn" else False
