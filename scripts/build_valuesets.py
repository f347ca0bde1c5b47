"""Generate the service's code tables from public FHIR ValueSet expansions (run by a developer,
never by the service).

    python scripts/build_valuesets.py [--source DIR]

DIR (default vendor/terminology, the vendored public sources with their provenance in its
README.md) holds the FHIR ValueSet expansions named <id>.json, one per set listed in
cds_service/knowledge/data/valuesets/manifest.json (CDC Opioid Prescribing Support IG and VSAC
sets), and omtk-opioid-products.json (the CDC OMTK opioid product table). Writes, inside the
package:
- data/valuesets/<id>.json: the expansion (url, name, title, version, date, publisher, every
  code with its display) with a `_generated` note: source file, code count, build date;
- data/rxnorm_products.json: every RxNorm code of the medication sets and of the OMTK opioid
  product table, parsed from its normalised name (ingredients, strengths, dose form, route,
  classes); an OMTK product's opioid strengths are checked against the OMTK row.
Then reviews every medication code against its sets (after data/valuesets/overrides.json) and
exits 1 listing each contradiction: fix data/ingredients.json or add an override with a reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from cds_service.fhir.read import RXNORM
from cds_service.knowledge.classifier import Classifier
from cds_service.knowledge.products import ingredient_data, load_classifier, product_entry, review
from cds_service.knowledge.valuesets import (
    ValueSetError,
    load_valuesets,
    manifest,
    parse_expansion,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "cds_service" / "knowledge" / "data"
VENDORED = ROOT / "vendor" / "terminology"
OMTK = "omtk-opioid-products.json"


def omtk_disagreements(entry: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """Where the name's parse differs from the OMTK row (opioid ingredients and strengths)."""
    parsed = {name: (value, unit) for name, value, unit in entry["ingredients"]}
    problems = []
    if not entry["classes"]:
        problems.append("no class from the name")
    wanted: dict[str, list[tuple[float, str]]] = {}  # two salts of one ingredient: two rows
    for ingredient in row["ingredients"]:
        unit = ingredient["strength_unit"].lower()
        unit = {"mg/hr": "mg/h", "mg/ml": "mg/mL", "mcg/hr": "mcg/h"}.get(unit, unit)
        wanted.setdefault(ingredient["name"].lower(), []).append(
            (ingredient["strength_value"], unit)
        )
    for name, options in wanted.items():
        if name not in parsed:
            problems.append(f"{name} not parsed")
            continue
        value, unit = parsed[name]
        comparable = [o for o in options if o[1] in {"mg", "mg/mL", "mg/h", "mcg", "mcg/h"}]
        if len(comparable) > 1 and len({u for _, u in comparable}) == 1:  # two salts add up
            comparable.append((sum(v for v, _ in comparable), comparable[0][1]))
        if comparable and not any(
            unit == u and value is not None and abs(value - v) <= 1e-6 for v, u in comparable
        ):
            problems.append(f"{name} {value} {unit}, OMTK {comparable}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default=str(VENDORED), help="folder of FHIR ValueSet expansions"
    )
    args = parser.parse_args(argv)
    source = Path(args.source)
    today = dt.date.today().isoformat()
    man = manifest()
    medication_codes: dict[str, str] = {}
    for entry in man["sets"]:
        path = source / f"{entry['id']}.json"
        try:
            document = json.loads(path.read_text("utf-8"))
            expansion = parse_expansion(document, path.name)
        except (OSError, ValueError, ValueSetError) as exc:
            print(f"build_valuesets: {path}: {exc}", file=sys.stderr)
            return 2
        if expansion.url != entry["url"]:
            print(
                f"build_valuesets: {path.name}: url {expansion.url} is not {entry['url']}",
                file=sys.stderr,
            )
            return 2
        out = {
            "resourceType": "ValueSet",
            "url": expansion.url,
            "name": expansion.name,
            "title": expansion.title,
            **({"version": expansion.version} if expansion.version else {}),
            "date": expansion.date,
            "publisher": document.get("publisher", ""),
            "_generated": {
                "by": "scripts/build_valuesets.py",
                "on": today,
                "source": f"{entry.get('source', man['source'])}: {path.name}",
                "codes": len(expansion.contains),
            },
            "expansion": {
                "timestamp": document["expansion"].get("timestamp", expansion.date),
                "total": len(expansion.contains),
                "contains": [
                    {"system": s, "code": c, "display": d} for s, c, d in expansion.contains
                ],
            },
        }
        target = DATA / "valuesets" / f"{entry['id']}.json"
        target.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", "utf-8")
        print(f"{entry['id']}: {len(expansion.contains)} codes, date {expansion.date}")
        if entry["kind"] == "medication":
            for system, code, display in expansion.contains:
                if system == RXNORM and display:
                    medication_codes.setdefault(code, display)
    text_parser = Classifier(ingredient_data())
    omtk_path = source / OMTK
    omtk = json.loads(omtk_path.read_text("utf-8"))
    omtk_rows = {row["rxcui"]: row for row in omtk["products"]}
    for code, row in omtk_rows.items():
        medication_codes.setdefault(code, row["name"])
    products = {
        code: product_entry(text_parser, display)
        for code, display in sorted(medication_codes.items(), key=lambda kv: int(kv[0]))
    }
    problems = [
        f"{code} {products[code]['display']}: {problem}"
        for code, row in omtk_rows.items()
        for problem in omtk_disagreements(products[code], row)
    ]
    (DATA / "rxnorm_products.json").write_text(
        json.dumps(
            {
                "_generated": {
                    "by": "scripts/build_valuesets.py",
                    "on": today,
                    "source": "RxNorm normalised names (display) of the medication value sets "
                    f"and of {OMTK} ({omtk['source']['canonical']}, generated "
                    f"{omtk['source']['content_generated']}, {omtk['source']['repository']} @ "
                    f"{omtk['source']['commit'][:8]}; {omtk['source']['attribution']})",
                    "codes": len(products),
                    "omtk_codes": len(omtk_rows),
                },
                "products": products,
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        "utf-8",
    )
    print(f"rxnorm_products: {len(products)} codes")
    valuesets = load_valuesets()
    problems += review(valuesets, load_classifier(valuesets=valuesets))
    for problem in problems:
        print(f"REVIEW: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
