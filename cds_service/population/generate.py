"""A synthetic FHIR Bulk Data export of N patients made from the fixture patients
(`cds-service backtest generate`), deterministic for a seed.

Each synthetic patient is a copy of one fixture patient Bundle (the first N take each
fixture once, in order; the rest are drawn at random): every resource gets a new id, every
date moves by the same random number of days (up to three years back, so the record keeps its
story), the draft orders become signed orders authored on the fixture's day, and references
are rewritten in one form drawn per patient: relative (`Patient/id`), absolute
(`https://ehr.example.org/fhir/Patient/id`) or `urn:uuid:id`. One NDJSON file per resource
type (`--gzip`: .ndjson.gz), as a Bulk Data export writes them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from cds_service.fhir.read import JSON, full_url_key, parse_reference

TEMPLATE_TODAY = dt.date(2026, 11, 23)  # the fixtures' clinical "today" (tests/conftest.py)
MAX_SHIFT_DAYS = 3 * 365
ABSOLUTE_BASE = "https://ehr.example.org/fhir"
FORMS = ("relative", "absolute", "urn")
PRESCRIBERS = 40  # the pool an order without a requester draws its prescriber from
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(.*)$", re.DOTALL)
_RELATIVE = re.compile(r"^@([+-]\d{1,5})d(.*)$", re.DOTALL)  # demo data: "@-30d" = 30 days ago


def default_templates() -> Path:
    """The repository's fixture patients, else the demo patients shipped in the package."""
    here = Path(__file__).resolve().parents[2] / "fixtures" / "fhir"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "demo"


def load_templates(folder: Path) -> list[JSON]:
    """Every patient Bundle under `folder`, in path order."""
    out = []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text("utf-8"))
        except (ValueError, OSError):
            continue
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            continue
        raw = data.get("entry")
        entries: list[Any] = raw if isinstance(raw, list) else []
        if any(
            isinstance(e, dict) and (e.get("resource") or {}).get("resourceType") == "Patient"
            for e in entries
        ):
            out.append(data)
    return out


def _shift(value: str, days: int) -> str:
    relative = _RELATIVE.match(value)
    if relative:  # relative to the fixtures' day
        day = TEMPLATE_TODAY + dt.timedelta(days=int(relative.group(1)))
        value = day.isoformat() + relative.group(2)
    match = _DATE.match(value)
    if not match:
        return value
    try:
        day = dt.date.fromisoformat(match.group(1))
    except ValueError:
        return value
    return (day + dt.timedelta(days=days)).isoformat() + match.group(2)


class _Rewriter:
    def __init__(self, ids: dict[str, tuple[str, str]], form: str, days: int) -> None:
        self.ids = ids  # template key ("Type/id" or fullUrl key) -> (type, new id)
        self.form = form
        self.days = days

    def reference(self, value: str) -> str:
        ref = parse_reference(value)
        target = None
        if ref.kind in ("urn", "relative"):
            target = self.ids.get(ref.key)
        elif ref.kind == "absolute":
            target = self.ids.get(f"{ref.resource_type}/{ref.id}")
        if target is None:
            return value  # outside the patient's record (a Practitioner): kept as written
        rtype, new_id = target
        if self.form == "absolute":
            return f"{ABSOLUTE_BASE}/{rtype}/{new_id}"
        if self.form == "urn":
            return f"urn:uuid:{new_id}"
        return f"{rtype}/{new_id}"

    def walk(self, node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: self.walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(v, key) for v in node]
        if isinstance(node, str):
            if key == "reference":
                return self.reference(node)
            if key not in ("id", "code", "value", "text", "display", "system"):
                return _shift(node, self.days)
        return node


def synthetic_patient(template: JSON, number: int, rng: random.Random) -> list[JSON]:
    """One synthetic patient's resources from a template Bundle."""
    days = -rng.randint(0, MAX_SHIFT_DAYS)
    form = rng.choice(FORMS)
    prefix = f"p{number:07d}"
    entries = [
        e
        for e in template.get("entry", [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    ids: dict[str, tuple[str, str]] = {}
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        rtype = str(resource.get("resourceType"))
        new_id = prefix if rtype == "Patient" else f"{prefix}-{index}"
        old = resource.get("id")
        if isinstance(old, str):
            ids[f"{rtype}/{old}"] = (rtype, new_id)
        key = full_url_key(entry.get("fullUrl"))
        if key:
            ids[key] = (rtype, new_id)
    rewriter = _Rewriter(ids, form, days)
    prescriber = f"Practitioner/prescriber-{rng.randrange(PRESCRIBERS)}"
    out = []
    for index, entry in enumerate(entries):
        resource = rewriter.walk(entry["resource"])
        rtype = resource["resourceType"]
        resource.pop("meta", None)
        resource["id"] = prefix if rtype == "Patient" else f"{prefix}-{index}"
        if rtype == "MedicationRequest" and "requester" not in resource:
            resource["requester"] = {"reference": prescriber}
        if rtype in ("MedicationRequest", "ServiceRequest") and resource.get("status") == "draft":
            resource["status"] = "active"
            resource.setdefault(
                "authoredOn", (TEMPLATE_TODAY + dt.timedelta(days=days)).isoformat()
            )
        out.append(resource)
    return out


def patients(templates: list[JSON], count: int, seed: int) -> Iterator[list[JSON]]:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    for number in range(count):
        template = templates[number] if number < len(templates) else rng.choice(templates)
        yield synthetic_patient(template, number, rng)


def _open(path: Path, gz: bool) -> TextIO:
    """A file handle kept open across patients (closed by `generate`)."""
    if gz:
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=5)
    return path.open("w", encoding="utf-8")


def generate(
    out: Path, count: int, seed: int, templates: Path | None = None, gz: bool = False
) -> dict[str, int]:
    """Write the export; returns resources written per type."""
    loaded = load_templates(templates or default_templates())
    if not loaded:
        raise ValueError(f"no patient Bundles in {templates or default_templates()}")
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, TextIO] = {}
    counts: dict[str, int] = {}
    try:
        for resources in patients(loaded, count, seed):
            for resource in resources:
                rtype = resource["resourceType"]
                handle = handles.get(rtype)
                if handle is None:
                    name = f"{rtype}.ndjson" + (".gz" if gz else "")
                    handle = handles[rtype] = _open(out / name, gz)
                handle.write(json.dumps(resource, separators=(",", ":")) + "\n")
                counts[rtype] = counts.get(rtype, 0) + 1
    finally:
        for handle in handles.values():
            handle.close()
    return dict(sorted(counts.items()))
