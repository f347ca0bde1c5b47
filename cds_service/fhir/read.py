"""Lenient readers for the few FHIR R4 fields the rules need, straight from raw JSON.

Real clients send slightly invalid FHIR (the CDS Hooks sandbox sends
`MedicationRequest.category` as an object instead of an array). These helpers accept the
shapes seen in the wild, never raise on odd input, and report anomalies by name only (never
with patient data) so they can be counted in the request log.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

JSON = dict[str, Any]

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
NDC = "http://hl7.org/fhir/sid/ndc"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.nlm.nih.gov/research/umls/hcpcs"

# Systems as real data spells them, mapped to one canonical URI.
_SYSTEM_ALIASES = {
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.69": NDC,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.ama-assn.org/go/cpt/": CPT,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,
    "urn:oid:2.16.840.1.113883.6.14": HCPCS,
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
    "http://terminology.hl7.org/CodeSystem/HCPCS": HCPCS,
    "http://terminology.hl7.org/CodeSystem/hcpcs": HCPCS,
}


def canonical_system(system: Any) -> str:
    if not isinstance(system, str):
        return ""
    system = system.strip()
    return str(_SYSTEM_ALIASES.get(system, system))


def as_list(value: Any) -> list[Any]:
    """A repeating element: a list as is, a lone object (a common client quirk) as [object]."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def codings(concept: Any) -> Iterator[tuple[str, str, str]]:
    """(system, code, display) for each coding of a CodeableConcept; odd shapes yield nothing."""
    if not isinstance(concept, dict):
        return
    for coding in as_list(concept.get("coding")):
        if not isinstance(coding, dict):
            continue
        code = coding.get("code")
        display = coding.get("display")
        yield (
            canonical_system(coding.get("system")),
            code.strip() if isinstance(code, str) else "",
            display if isinstance(display, str) else "",
        )


def concept_key(concept: JSON) -> tuple[Any, ...]:
    """A hashable cache key from the strings a CodeableConcept's matching reads: text and each
    coding's system, code and display. Non-string values collapse to None (the matchers ignore
    them too), so request data is never walked or repr'd, however odd or deep."""
    coding = concept.get("coding")
    text = concept.get("text")
    parts: list[Any] = [text if isinstance(text, str) else None]
    for c in coding if isinstance(coding, list) else [coding]:
        if isinstance(c, dict):
            # spelled out (no generator): this runs for every drug and condition of a chart
            system, code, display = c.get("system"), c.get("code"), c.get("display")
            parts.append(
                (
                    system if isinstance(system, str) else None,
                    code if isinstance(code, str) else None,
                    display if isinstance(display, str) else None,
                )
            )
    return tuple(parts)


def concept_text(concept: Any) -> str:
    """The best human-readable name of a CodeableConcept: text, else a coding display."""
    if not isinstance(concept, dict):
        return ""
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for _, _, display in codings(concept):
        if display.strip():
            return display.strip()
    return ""


_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def parse_date(value: Any) -> dt.date | None:
    """The calendar date of a FHIR date/dateTime/instant; partial dates take their first day."""
    if not isinstance(value, str):
        return None
    if len(value) >= 10 and value[4] == "-" and value[7] == "-":
        # the common full date (or dateTime): the C parser; anything it refuses (a partial
        # or malformed date) takes the general path below, which gives the same dates
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    match = _DATE_RE.match(value.strip())
    if not match:
        return None
    year, month, day = match.group(1), match.group(2) or "01", match.group(3) or "01"
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        return None


def status_code(resource: JSON, element: str) -> str:
    """A `code` element, or the first coding code of a CodeableConcept status (Condition)."""
    value = resource.get(element)
    if isinstance(value, str):
        return value.strip().lower()
    for _, code, _ in codings(value):
        if code:
            return code.lower()
    return ""


@dataclass(frozen=True)
class ParsedReference:
    """One FHIR Reference as written, taken apart without resolving it.

    kind: "relative" (Type/id), "absolute" (any base + Type/id), "urn" (urn:uuid: or urn:oid:,
    bundle-local), "bare" (an id alone), "contained" (#id), "identifier" (a logical reference:
    no reference string, only an identifier), or "" (nothing usable: empty, a search URL, odd
    shapes). `/_history/n` is dropped. `key` is the string to look up among Bundle fullUrls.
    """

    kind: str
    resource_type: str = ""
    id: str = ""
    key: str = ""
    identifiers: frozenset[tuple[str, str]] = frozenset()


_NOTHING = ParsedReference("")


def identifier_pairs(value: Any) -> frozenset[tuple[str, str]]:
    """(canonical system, value) of an Identifier or a list of them; odd shapes yield nothing."""
    pairs = set()
    for ident in as_list(value):
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            text = ident["value"].strip()
            if text:
                pairs.add((canonical_system(ident.get("system")), text))
    return frozenset(pairs)


def identifiers_agree(
    mine: frozenset[tuple[str, str]], theirs: frozenset[tuple[str, str]]
) -> bool | None:
    """True when two identifier sets share a (system, value); False when they share a system
    but never its value (two different people in the same registry); None when they cannot be
    compared."""
    if mine & theirs:
        return True
    shared = {s for s, _ in mine if s} & {s for s, _ in theirs if s}
    return False if shared else None


def parse_reference(reference: Any) -> ParsedReference:
    """Take a Reference (object or string) apart; never raises."""
    identifiers: frozenset[tuple[str, str]] = frozenset()
    if isinstance(reference, dict):
        identifiers = identifier_pairs(reference.get("identifier"))
        reference = reference.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        return ParsedReference("identifier", identifiers=identifiers) if identifiers else _NOTHING
    ref = reference.strip()
    if ref.startswith("#"):
        return ParsedReference("contained", id=ref[1:], key=ref, identifiers=identifiers)
    if ref.lower().startswith(("urn:uuid:", "urn:oid:")):
        scheme, _, rest = ref.partition(":")[2].partition(":")
        # uuids are case-insensitive (RFC 4122): one spelling for fullUrl look-ups
        key = f"urn:uuid:{rest.lower()}" if scheme.lower() == "uuid" else f"urn:oid:{rest}"
        return ParsedReference("urn", id=rest, key=key, identifiers=identifiers)
    if "?" in ref:  # a conditional reference (a search): not resolvable here
        return ParsedReference("", identifiers=identifiers)
    parts = ref.rstrip("/").split("/")
    if "_history" in parts[:-1] and len(parts) >= 3:
        parts = parts[: len(parts) - 1 - parts[::-1].index("_history")]
    if not parts or not parts[-1]:
        return ParsedReference("", identifiers=identifiers)
    if "://" in ref:
        if len(parts) < 5:  # scheme, "", host, Type, id at the least
            return ParsedReference("", identifiers=identifiers)
        return ParsedReference("absolute", parts[-2], parts[-1], "/".join(parts), identifiers)
    if len(parts) == 1:
        return ParsedReference("bare", id=parts[0], key=parts[0], identifiers=identifiers)
    return ParsedReference("relative", parts[-2], parts[-1], "/".join(parts[-2:]), identifiers)


def full_url_key(full_url: Any) -> str:
    """A Bundle entry's fullUrl in the form parse_reference gives as `key` ("" if unusable).
    A relative fullUrl ('Patient/1', not valid FHIR but seen in hand-made Bundles) is kept."""
    if not isinstance(full_url, str) or not full_url.strip():
        return ""
    parsed = parse_reference(full_url)
    return parsed.key if parsed.kind in ("urn", "absolute", "relative") else ""


def bundle_entries(bundle: JSON) -> Iterator[tuple[str, JSON]]:
    """(fullUrl as sent, resource) of a Bundle's entries; the fullUrl is "" when there is
    none or it is not a string. It is not normalised here (full_url_key does that, and only
    for the few entries a reference ever has to be resolved against)."""
    for entry in as_list(bundle.get("entry")):
        if isinstance(entry, dict):
            resource = entry.get("resource")
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                full_url = entry.get("fullUrl")
                yield full_url if isinstance(full_url, str) else "", resource


def bundle_resources(bundle: JSON) -> Iterator[JSON]:
    """The resources of a Bundle's entries, skipping entries that are not objects."""
    for entry in as_list(bundle.get("entry")):
        if isinstance(entry, dict):
            resource = entry.get("resource")
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                yield resource


def next_link(bundle: JSON) -> str | None:
    for link in as_list(bundle.get("link")):
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def is_operation_outcome_only(value: Any) -> bool:
    """An OperationOutcome, or a Bundle of only OperationOutcomes (a failed search)."""
    if not isinstance(value, dict):
        return False
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") != "Bundle":
        return False
    found = False
    for resource in bundle_resources(value):  # stops at the first other resource
        if resource.get("resourceType") != "OperationOutcome":
            return False
        found = True
    return found


# Known quirks: elements that R4 defines as arrays but clients send as a single object.
_ARRAY_ELEMENTS = {
    "MedicationRequest": ("category", "dosageInstruction", "note", "identifier", "reasonCode"),
    "MedicationStatement": ("category", "dosage", "note", "identifier", "reasonCode"),
    "MedicationDispense": ("dosageInstruction", "note", "identifier"),
    "Condition": ("category", "identifier", "note", "bodySite"),
    "Procedure": ("identifier", "reasonCode", "note"),
    "ServiceRequest": ("category", "identifier", "reasonCode", "note"),
}


def normalise_quirks(resource: JSON, anomalies: Counter[str]) -> JSON:
    """Wrap lone objects where R4 wants arrays, counting each repair by element name."""
    rtype = resource.get("resourceType", "")
    for element in _ARRAY_ELEMENTS.get(rtype, ()):
        value = resource.get(element)
        if isinstance(value, dict):
            resource[element] = [value]
            anomalies[f"{rtype}.{element}:object-for-array"] += 1
    return resource


def type_name(value: Any) -> str:
    """A resourceType as logs and anomaly names may show it: a FHIR R4B type name as is,
    anything else (client free text) as "unknown-type"."""
    from fhir.resources.R4B import fhirtypes

    if (
        isinstance(value, str)
        and value.isascii()
        and value.isalpha()
        and len(value) <= 64
        and hasattr(fhirtypes, value + "Type")
    ):
        return value
    return "unknown-type"


def validate_resource(resource: JSON, anomalies: Counter[str]) -> bool:
    """Check one resource against the fhir.resources R4B model; on failure count the element
    paths that failed (never values, never element names the client made up) and keep using
    the raw JSON."""
    from fhir.resources.R4B import get_fhir_model_class

    rtype = resource.get("resourceType")
    try:
        model = get_fhir_model_class(type_name(rtype))
    except (KeyError, ValueError, AttributeError, TypeError):
        anomalies["resource:unknown-type"] += 1
        return False
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        for error in exc.errors()[:5]:
            if error.get("type") == "extra_forbidden":
                anomalies[f"{rtype}:unknown-element"] += 1  # its name is client text
                continue
            path = ".".join(str(p) for p in error.get("loc", ()) if not isinstance(p, int))
            anomalies[f"{rtype}.{path}:invalid"] += 1
        return False
    except (RecursionError, ValueError, TypeError):
        anomalies[f"{rtype}:invalid"] += 1
        return False
    return True
