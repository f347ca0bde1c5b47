"""Reading a Bulk Data export: NDJSON / NDJSON.gz files (one resource a line) or JSON files
holding a patient Bundle (Synthea's output), and keying every resource by its patient.

Nothing here is fatal: a line that is not JSON, a resource without a patient, an unknown
resource type, a truncated gzip is a `Problem` (file, line, reason), counted and reported.
References to the patient are read in every form the service resolves (fhir/read.py
parse_reference): relative `Patient/id`, absolute `https://.../Patient/id`, `urn:uuid:id`
(in a Bundle: the entry whose fullUrl it is), a bare id.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.fhir.read import full_url_key, parse_reference, type_name

# The resource types the rules read (hooks/services.py prefetch keys); others are skipped.
USED_TYPES = frozenset(
    {
        "Patient",
        "MedicationRequest",
        "Medication",
        "Condition",
        "Procedure",
        "ServiceRequest",
        "MedicationDispense",
        "MedicationStatement",
        "Encounter",
        "CarePlan",
        "AllergyIntolerance",
    }
)
MEDICATION_HOLDERS = frozenset({"MedicationRequest", "MedicationDispense", "MedicationStatement"})

# Problem reasons (the summary counts them by these names)
NOT_JSON = "not-json"
NOT_A_RESOURCE = "not-a-resource"
UNKNOWN_TYPE = "unknown-resource-type"
NO_PATIENT = "no-patient-reference"
UNKNOWN_PATIENT = "unknown-patient"
PATIENT_WITHOUT_ID = "patient-without-id"
TRUNCATED = "truncated-or-corrupt-gzip"
UNREADABLE_FILE = "unreadable-file"
MEDICATION_WITHOUT_ID = "medication-without-id"


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the export folder
    line: int  # 1-based line (NDJSON) or entry number (Bundle); 0 = the file as a whole
    reason: str


@dataclass(frozen=True)
class Item:
    """One usable line or entry: what `key_resource` made of it."""

    kind: str  # "resource" (belongs to `key`), "medication" (id `key`), "skipped" (type unused)
    key: str
    file: str
    line: int
    full_url: str
    text: str  # the resource as JSON text
    medication_refs: tuple[str, ...] = ()  # Medication ids the resource references
    rtype: str = ""


def export_files(source: Path) -> list[Path]:
    """The export's files in a stable order: *.ndjson, *.ndjson.gz and *.json (Bundles)."""
    if source.is_file():
        return [source]
    files = [
        p
        for p in source.rglob("*")
        if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz", ".json"))
    ]
    return sorted(files, key=lambda p: p.relative_to(source).as_posix())


def relative_name(path: Path, source: Path) -> str:
    return path.name if source.is_file() else path.relative_to(source).as_posix()


def _patient_id(reference: Any, local: dict[str, str]) -> str | None:
    ref = parse_reference(reference)
    if ref.kind == "urn" and ref.key in local:
        return local[ref.key]
    if ref.kind in ("relative", "absolute") and ref.resource_type == "Patient" and ref.id:
        return ref.id
    if ref.kind in ("urn", "bare") and ref.id:
        return ref.id  # urn:uuid:<id> as population exports write it (Patient.id = the uuid)
    return None


def _medication_id(reference: Any, local: dict[str, str]) -> str | None:
    ref = parse_reference(reference)
    if ref.kind == "urn" and ref.key in local:
        return local[ref.key]
    if ref.kind in ("relative", "absolute") and ref.resource_type == "Medication" and ref.id:
        return ref.id
    if ref.kind in ("urn", "bare") and ref.id:
        return ref.id
    return None


def key_resource(
    resource: Any,
    file: str,
    line: int,
    text: str,
    full_url: str = "",
    local: dict[str, str] | None = None,
) -> Item | Problem:
    """Whose resource this is. `local` maps a Bundle's fullUrl keys to resource ids."""
    local = local or {}
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return Problem(file, line, NOT_A_RESOURCE)
    rtype = resource["resourceType"]
    if type_name(rtype) != rtype:
        return Problem(file, line, UNKNOWN_TYPE)
    if rtype not in USED_TYPES:
        return Item("skipped", rtype, file, line, full_url, "")
    rid = resource.get("id")
    if not full_url and isinstance(rid, str) and rid.strip():
        # NDJSON has no fullUrl: population exports write references to a resource as
        # urn:uuid:<its id>, so that is its fullUrl (Type/id references resolve anyway)
        full_url = f"urn:uuid:{rid.strip()}"
    if rtype == "Patient":
        if not isinstance(rid, str) or not rid.strip():
            return Problem(file, line, PATIENT_WITHOUT_ID)
        return Item("resource", rid, file, line, full_url, text, rtype=rtype)
    if rtype == "Medication":
        if not isinstance(rid, str) or not rid.strip():
            return Problem(file, line, MEDICATION_WITHOUT_ID)  # nothing can reference it
        return Item("medication", rid, file, line, full_url, text, rtype=rtype)
    patient = None
    for element in ("subject", "patient"):
        if element in resource:
            patient = _patient_id(resource[element], local)
            break
    if not patient:
        return Problem(file, line, NO_PATIENT)
    meds: tuple[str, ...] = ()
    if rtype in MEDICATION_HOLDERS and "medicationReference" in resource:
        med = _medication_id(resource["medicationReference"], local)
        meds = (med,) if med else ()
    return Item("resource", patient, file, line, full_url, text, meds, rtype)


def read_lines(path: Path, name: str) -> Iterator[tuple[int, str] | Problem]:
    """(line number, text) of a NDJSON file, or a Problem where reading stopped."""
    line_no = 0
    try:
        opener: Any = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line_no, text in enumerate(handle, 1):
                if text.strip():
                    yield line_no, text
    except (EOFError, zlib.error, gzip.BadGzipFile):
        yield Problem(name, line_no + 1, TRUNCATED)
    except OSError:
        yield Problem(name, line_no, UNREADABLE_FILE)


def parse_line(name: str, line: int, text: str) -> Item | Problem:
    try:
        resource = json.loads(text)
    except (ValueError, RecursionError):
        return Problem(name, line, NOT_JSON)
    return key_resource(resource, name, line, text.strip())


def read_ndjson(path: Path, name: str) -> Iterator[Item | Problem]:
    for got in read_lines(path, name):
        if isinstance(got, Problem):
            yield got
        else:
            yield parse_line(name, got[0], got[1])


def read_bundle(path: Path, name: str) -> Iterator[Item | Problem]:
    """A JSON file with one Bundle (or one resource): each entry is reported as its number."""
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        yield Problem(name, 1, NOT_JSON)
        return
    except OSError:
        yield Problem(name, 0, UNREADABLE_FILE)
        return
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        yield key_resource(data, name, 1, json.dumps(data, separators=(",", ":")))
        return
    raw = data.get("entry")
    entries: list[Any] = raw if isinstance(raw, list) else []
    local: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            key = full_url_key(entry.get("fullUrl"))
            rid = entry["resource"].get("id")
            if key and isinstance(rid, str):
                local[key] = rid
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            yield Problem(name, number, NOT_A_RESOURCE)
            continue
        resource = entry.get("resource")
        url = entry.get("fullUrl")
        full_url = url if isinstance(url, str) else ""
        text = json.dumps(resource, separators=(",", ":"))
        yield key_resource(resource, name, number, text, full_url, local)


def read_file(path: Path, name: str) -> Iterator[Item | Problem]:
    if path.name.endswith(".json"):
        return read_bundle(path, name)
    return read_ndjson(path, name)
