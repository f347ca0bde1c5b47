"""Card templates (cards/*.json) and their rendering into CDS Hooks 2.0 cards.

Templates are loaded and checked once at start-up: every variant has a valid indicator, every
suggestion resource is a valid FHIR R4 resource once filled with sample values, every override
reason exists in the shared catalogue. Rendering then only substitutes values: a fresh uuid on
every card and suggestion, patient data escaped for markdown, summary held to 139 characters,
empty optional fields left out.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from cds_service.fhir.read import validate_resource
from cds_service.rules import Finding

SUMMARY_MAX = 139
TOPIC_SYSTEM = "urn:opioid-lbp-cds:rule"
INDICATORS = frozenset({"info", "warning", "critical"})
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+!<>|~])")


class TemplateError(ValueError):
    """A card template is unusable; raised at start-up, never during a request."""


def cards_dir() -> Path:
    """Where the card templates are: inside the installed package, or cards/ in a checkout."""
    packaged = resources.files("cds_service").joinpath("cards")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "cards"


def escape_markdown(value: str) -> str:
    """Patient-sourced text is shown as text: no markdown links, images, HTML or emphasis."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(value.split()))


def _plain(value: str) -> str:
    return " ".join(value.split())


def _fill(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)


def fill_json(template_json: str, values: Mapping[str, str]) -> Any:
    """Fill {placeholders} in a JSON text with JSON-escaped values and parse it. Braces that
    are not placeholders (UCUM annotations such as {tbl}) are left alone."""
    escaped = {k: json.dumps(v)[1:-1] for k, v in values.items()}
    return json.loads(_PLACEHOLDER.sub(lambda m: escaped.get(m.group(1), m.group(0)),
                                       template_json))


def clip_summary(summary: str) -> str:
    summary = _plain(summary)
    if len(summary) <= SUMMARY_MAX:
        return summary
    return summary[: SUMMARY_MAX - 1].rstrip() + "\u2026"


class CardTemplates:
    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or cards_dir()
        catalogue = json.loads((directory / "override-reasons.json").read_text("utf-8"))
        self._reason_system = catalogue["system"]
        self._reasons: dict[str, str] = catalogue["reasons"]
        self.suggestions: dict[str, dict[str, Any]] = {
            key: value for key, value in json.loads(
                (directory / "suggestions.json").read_text("utf-8")).items()
            if not key.startswith("_")}
        self._check_suggestions()
        self._actions_json = {key: json.dumps(spec["actions"])
                              for key, spec in self.suggestions.items()}
        self._static: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            if path.name in {"override-reasons.json", "suggestions.json"}:
                continue
            template = json.loads(path.read_text("utf-8"))
            self._check(template, path.name)
            self.templates[template["rule_id"]] = template

    def _check(self, template: dict[str, Any], name: str) -> None:
        for key in ("rule_id", "source", "variants"):
            if key not in template:
                raise TemplateError(f"{name}: missing {key}")
        for variant, spec in template["variants"].items():
            if spec.get("indicator") not in INDICATORS:
                raise TemplateError(f"{name}: variant {variant} has no valid indicator")
            if not spec.get("summary"):
                raise TemplateError(f"{name}: variant {variant} has no summary")
        for code in template.get("override_reasons", []):
            if code not in self._reasons:
                raise TemplateError(f"{name}: unknown override reason {code}")

    def _check_suggestions(self) -> None:
        sample = {"patient_id": "example", "resource_id": "MedicationRequest/example",
                  "drug": "example"}
        name = "suggestions.json"
        for key, suggestion in self.suggestions.items():
            if not suggestion.get("label") or not suggestion.get("actions"):
                raise TemplateError(f"{name}: suggestion {key} needs a label and actions")
            for action in suggestion.get("actions", []):
                if action.get("type") not in {"create", "update", "delete"}:
                    raise TemplateError(f"{name}: suggestion {key} has a bad action type")
                resource = action.get("resource")
                if resource is not None:
                    anomalies: Counter[str] = Counter()
                    if not validate_resource(fill_json(json.dumps(resource), sample), anomalies):
                        raise TemplateError(f"{name}: suggestion {key} is not valid R4: "
                                            f"{sorted(anomalies)}")

    def indicator(self, finding: Finding) -> str:
        indicator: str = self.templates[finding.rule_id]["variants"][finding.variant]["indicator"]
        return indicator

    def _static_parts(self, rule_id: str) -> dict[str, Any]:
        """The parts of a rule's cards that never change, built once (shared, never mutated)."""
        cached = self._static.get(rule_id)
        if cached is None:
            template = self.templates[rule_id]
            source = template["source"]
            cached = prune({
                "source": {"label": source["label"], "url": source.get("url"),
                           "topic": {"system": TOPIC_SYSTEM, "code": rule_id,
                                     "display": source.get("topic_display")}},
                "overrideReasons": [
                    {"system": self._reason_system, "code": code,
                     "display": self._reasons[code]}
                    for code in template.get("override_reasons", [])],
                "links": template.get("links"),
                "selectionBehavior": template.get("selection_behavior", "any"),
            })
            self._static[rule_id] = cached
        return cached

    def render(self, finding: Finding) -> dict[str, Any]:
        template = self.templates[finding.rule_id]
        variant = template["variants"][finding.variant]
        static = self._static_parts(finding.rule_id)
        md_values = {k: escape_markdown(v) for k, v in finding.values.items()}
        md_values["evidence"] = "\n".join(f"- {escape_markdown(line)}"
                                          for line in finding.evidence)
        plain_values = {k: _plain(v) for k, v in finding.values.items()}
        card: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "summary": clip_summary(_fill(variant["summary"], plain_values)),
            "indicator": variant["indicator"],
            "source": static["source"],
        }
        detail = _fill(variant.get("detail", ""), md_values).strip()
        if detail:
            card["detail"] = detail
        suggestions = [self._suggestion(spec.key, spec.values) for spec in finding.suggestions]
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = static["selectionBehavior"]
        for key in ("overrideReasons", "links"):
            if key in static:
                card[key] = static[key]
        return card

    def _suggestion(self, key: str, values: Mapping[str, str]) -> dict[str, Any]:
        """Suggestion actions are stored as JSON text; placeholders are filled with JSON-escaped
        values and parsed back, which is several times faster than walking the resource."""
        spec = self.suggestions[key]
        plain = {k: _plain(v) for k, v in values.items()}
        return {
            "label": _fill(spec["label"], plain),
            "uuid": str(uuid.uuid4()),
            "actions": fill_json(self._actions_json[key], plain),
        }


def prune(node: Any) -> Any:
    """Drop None, empty strings, empty lists and empty objects: the spec forbids empty values."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            value = prune(value)
            if value is None or value == "" or value == [] or value == {}:
                continue
            out[key] = value
        return out
    if isinstance(node, list):
        items = [prune(item) for item in node]
        return [i for i in items if not (i is None or i == "" or i == [] or i == {})]
    return node
