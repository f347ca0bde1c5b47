"""The rule catalogue of docs/rules.md, generated from the rules' own metadata, so it cannot go
stale: each rule's id and hooks (the class), headline, When / Unless / Then / Source (its
module docstring), indicators, priority and topic (its card file) and settings with their
defaults (rules/settings.json). A test regenerates it and compares with the file.

    python -m cds_service.rules.catalogue                        # print the catalogue
    python -m cds_service.rules.catalogue --check docs/rules.md  # exit 1 if it is stale
    python -m cds_service.rules.catalogue --write docs/rules.md  # replace it in the file
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cds_service.cards import CardTemplates
from cds_service.rules.base import Rule
from cds_service.settings import packaged_defaults

START = "<!-- rule-catalogue:start (generated: python -m cds_service.rules.catalogue) -->"
END = "<!-- rule-catalogue:end -->"
SECTIONS = ("When", "Unless", "Then", "Source")
_SHARED_KEYS = {"enabled", "mode", "exclusions"}


def rule_doc(rule: Rule) -> dict[str, str]:
    """The rule module's docstring: `headline` (after "<rule id>:") and each section."""
    text = sys.modules[type(rule).__module__].__doc__ or ""
    out = {"headline": ""}
    current = "headline"
    for line in text.strip().splitlines():
        match = re.match(r"(\w+):\s*(.*)", line)
        if match and match.group(1) in SECTIONS:
            current = match.group(1)
            out[current] = match.group(2)
            continue
        if not line.strip() and current == "headline":
            current = ""
            continue
        if current:
            out[current] = f"{out.get(current, '')} {line.strip()}".strip()
    headline = out["headline"]
    prefix = f"{rule.id}:"
    out["headline"] = headline[len(prefix) :].strip() if headline.startswith(prefix) else headline
    return out


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def catalogue(
    rules: Iterable[Rule],
    templates: CardTemplates | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> str:
    """The catalogue as markdown (between the START and END markers)."""
    templates = templates or CardTemplates()
    settings = (defaults or packaged_defaults())["rules"]
    rules = list(rules)
    lines = [
        START,
        "",
        "| rule id | hooks | what it flags | indicator | priority | settings (default) |",
        "|---|---|---|---|---|---|",
    ]
    for rule in rules:
        template = templates.templates[rule.id]
        indicators = dict.fromkeys(v["indicator"] for v in template["variants"].values())
        own = {k: v for k, v in settings.get(rule.id, {}).items() if k not in _SHARED_KEYS}
        cells = [
            f"`{rule.id}`",
            ", ".join(sorted(rule.hooks)),
            _cell(rule_doc(rule)["headline"]),
            ", ".join(indicators),
            str(template.get("priority", 50)),
            ", ".join(f"`{k}` {_value(v)}" for k, v in own.items() if not k.startswith("_")) or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for rule in rules:
        doc = rule_doc(rule)
        module = type(rule).__module__.replace(".", "/") + ".py"
        headline = _cell(doc["headline"])
        headline = headline[:1].upper() + headline[1:]
        lines += ["", f"### `{rule.id}`", "", f"{headline} (`{module}`)", ""]
        lines += [f"- **{name}:** {_cell(doc[name])}" for name in SECTIONS if doc.get(name)]
    lines += ["", END]
    return "\n".join(lines)


def replaced(document: str, table: str) -> str:
    """The document with the text between the markers replaced by `table`."""
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise ValueError("the document has no rule-catalogue markers")
    return document[:start] + table + document[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    from cds_service.rules.registry import default_rules

    parser = argparse.ArgumentParser(prog="python -m cds_service.rules.catalogue")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", metavar="FILE", help="exit 1 if FILE's catalogue is stale")
    group.add_argument("--write", metavar="FILE", help="replace FILE's catalogue")
    args = parser.parse_args(argv)
    table = catalogue(default_rules())
    path = Path(args.check or args.write or "")
    if not (args.check or args.write):
        sys.stdout.write(table + "\n")
        return 0
    document = path.read_text("utf-8")
    fresh = replaced(document, table)
    if args.write:
        path.write_text(fresh, "utf-8")
        return 0
    if fresh != document:
        sys.stderr.write(
            f"{path}: the rule catalogue is stale; run "
            f"python -m cds_service.rules.catalogue --write {path}\n"
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
