"""`cds-service terminology list | lookup SYSTEM|CODE | import DIR`: which value sets are in
use, why a code is (or is not) in them, and installing newer expansions into the local
override folder (CDS_VALUESETS_DIR), which the service reads at its next start."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from cds_service.fhir.read import ICD10CM, NDC, RXNORM, SNOMED, canonical_system
from cds_service.knowledge.valuesets import (
    ValueSetError,
    ValueSets,
    load_valuesets,
    manifest,
    read_local_file,
)

SYSTEM_NAMES = {
    "rxnorm": RXNORM,
    "snomed": SNOMED,
    "sct": SNOMED,
    "snomedct": SNOMED,
    "icd10cm": ICD10CM,
    "icd-10-cm": ICD10CM,
    "icd10": ICD10CM,
    "ndc": NDC,
}


def list_lines(valuesets: ValueSets) -> list[str]:
    lines = [f"knowledge version {valuesets.version}"]
    for table in valuesets.tables.values():
        source = "packaged" if table.origin == "packaged" else f"local file {table.origin}"
        version = f", version {table.version}" if table.version else ""
        lines.append(
            f"{table.name or table.id}: {len(table.codes)} codes in use "
            f"({table.published_count} published), date {table.date}{version}, "
            f"{source}"
        )
        lines.append(f"  url: {table.url}")
        lines.append(f"  use: {table.use}")
        for override in table.overrides:
            lines.append(f"  override: {override}")
    return lines


def parse_term(term: str) -> tuple[str, str]:
    system, sep, code = term.strip().partition("|")
    if not sep or not code.strip():
        raise ValueSetError(
            "give SYSTEM|CODE, e.g. http://snomed.info/sct|127040003 or rxnorm|1049621"
        )
    system = SYSTEM_NAMES.get(system.strip().lower(), system.strip())
    return canonical_system(system), code.strip()


def lookup_lines(term: str, valuesets_dir: str | None) -> list[str]:
    from cds_service.knowledge.conditions import load_condition_sets
    from cds_service.knowledge.products import load_classifier

    system, code = parse_term(term)
    valuesets = load_valuesets(valuesets_dir)
    lines = []
    found = valuesets.lookup(system, code)
    for table, why in found:
        lines.append(f"{table.name or table.id}: {why}")
        lines.append(f"  use: {table.use}")
    if not found:
        lines.append("in no value set in use")
    if system == RXNORM:
        result = load_classifier(valuesets=valuesets).classify_code(system, code)
        if result.how == "rxnorm-product-code":
            strengths = ", ".join(
                f"{i.name} {i.strength_value:g} {i.strength_unit}"
                if i.strength_value is not None
                else i.name
                for i in result.ingredients
            )
            lines.append(
                f"classified from the code: {', '.join(sorted(result.classes))}; "
                f"{strengths}; {result.dose_form or 'form not stated'}"
                f"{'; extended-release' if result.extended_release else ''}"
            )
        elif result.ingredients:
            lines.append(
                f"classified from the code: {', '.join(sorted(result.classes))} (ingredient code)"
            )
        else:
            lines.append("not classified from the code alone (text is needed)")
    else:
        concept = {"coding": [{"system": system, "code": code}]}
        categories = load_condition_sets(valuesets=valuesets).categories(concept)
        lines.append(f"categories: {', '.join(sorted(categories)) or 'none'}")
    return lines


def import_dir(source_dir: str, valuesets_dir: str) -> list[str]:
    """Validate every *.json in source_dir and install it into valuesets_dir; all or nothing.
    The result is loaded in a staging copy first (the service must start with it)."""
    from cds_service.knowledge.conditions import load_condition_sets
    from cds_service.knowledge.products import load_classifier

    if not valuesets_dir:
        raise ValueSetError(
            "set CDS_VALUESETS_DIR to the folder the service loads newer value sets from"
        )
    files = sorted(Path(source_dir).glob("*.json"))
    if not Path(source_dir).is_dir() or not files:
        raise ValueSetError(f"{source_dir}: no ValueSet JSON files (*.json) to import")
    known = {e["url"]: e["id"] for e in manifest()["sets"]}
    chosen: dict[str, Path] = {}
    for path in files:
        set_id, _ = read_local_file(path, known)
        if set_id in chosen:
            raise ValueSetError(f"{path.name}: {chosen[set_id].name} has the same url")
        chosen[set_id] = path
    target = Path(valuesets_dir)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        for existing in target.glob("*.json"):
            shutil.copyfile(existing, Path(staging) / existing.name)
        for set_id, path in chosen.items():
            shutil.copyfile(path, Path(staging) / f"{set_id}.json")
        staged = load_valuesets(staging)
        load_classifier(valuesets=staged)
        load_condition_sets(valuesets=staged)
        lines = []
        for set_id in chosen:
            table = staged.tables[set_id]
            partial = Path(valuesets_dir) / f".{set_id}.json.part"
            shutil.copyfile(Path(staging) / f"{set_id}.json", partial)
            os.replace(partial, target / f"{set_id}.json")
            lines.append(
                f"installed {table.name or set_id}: {table.published_count} codes, "
                f"date {table.date}"
            )
    lines.append(f"knowledge version after restart: {staged.version}")
    return lines
