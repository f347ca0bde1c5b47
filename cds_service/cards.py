"""Card templates (cards/*.json) and their rendering into CDS Hooks 2.0 cards.

Every sentence a clinician reads is in a template with named placeholders: a rule's card file
holds its variants (summary, detail) and its own evidence lines; cards/lines.json holds lines
several rules share. At start-up each template is checked against what the rules declare they
supply (`Rule.text`): a template that uses an unknown placeholder, or leaves out one the rule
supplies, stops the service with the file and key named; so does a variant or line that no rule
uses or a rule whose template is missing. Rendering then only substitutes values: a fresh uuid
on every card and suggestion, patient data escaped only where markdown would act on it, the
summary held to 139 characters, empty optional fields left out.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from cds_service.fhir.read import validate_resource
from cds_service.findings import Finding, Line, Text
from cds_service.ids import random_uuid
from cds_service.jsonfast import loads_fast

SUMMARY_MAX = 139
MAX_EVIDENCE = 3  # evidence lines a card shows (docs/cards.md: the five-second card)
TOPIC_SYSTEM = "urn:opioid-lbp-cds:rule"
INDICATORS = frozenset({"info", "warning", "critical"})
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
# Only what markdown would act on inline: emphasis, code, links/images, HTML, tables, strike.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_MD_SPECIAL_NO_BRACKETS = re.compile(r"([\\`*_<>|~])")
_MD_ANY = re.compile(r"[\\`*_\[\]<>|~]")
RESERVED = frozenset({"evidence"})
EXTENSION_COVERS = "opioid-lbp-cds.covers"
EXTENSION_RULE = "opioid-lbp-cds.rule"


REASON_CLASSES = frozenset({"not-applicable", "clinical-judgement", "patient-benefit"})


def reason_displays(catalogue: Mapping[str, Any]) -> dict[str, str]:
    """code -> display of cards/override-reasons.json, whose reasons are objects
    {"display", "class", "hl7"?}; refuses a reason without a display or with an unknown
    class (start-up, never mid-request)."""
    out: dict[str, str] = {}
    for code, reason in catalogue["reasons"].items():
        if not isinstance(reason, Mapping) or not isinstance(reason.get("display"), str):
            raise TemplateError(f"override-reasons.json: {code} needs a display")
        if reason.get("class") not in REASON_CLASSES:
            raise TemplateError(f"override-reasons.json: {code} has no known class")
        if "hl7" in reason and not isinstance(reason["hl7"], str):
            raise TemplateError(f"override-reasons.json: {code}: hl7 must be a code")
        out[code] = reason["display"]
    return out


class TextSpec(Protocol):
    """What declares the placeholders of a card file (a Rule, or the engine's own cards)."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> Mapping[str, frozenset[str]]: ...


class TemplateError(ValueError):
    """A card template is unusable; raised at start-up, never during a request."""


def cards_dir() -> Path:
    """Where the card templates are: inside the installed package, or cards/ in a checkout."""
    packaged = resources.files("cds_service").joinpath("cards")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "cards"


def escape_markdown(value: str) -> str:
    """Patient-sourced text is shown as text: no markdown links, images, HTML or emphasis.
    Brackets are escaped only where they could form a link ("](", "][" or a "]:" definition),
    so a brand name in brackets ("[Xanax]") reads as it is written."""
    if _is_plain(value) and _MD_ANY.search(value) is None:
        return value  # nothing to normalise or escape (most drug names and numbers)
    text = " ".join(value.split())
    linkable = "](" in text or "][" in text or "]:" in text
    pattern = _MD_SPECIAL if linkable else _MD_SPECIAL_NO_BRACKETS
    return pattern.sub(r"\\\1", text)


def _is_plain(value: str) -> bool:
    """True when " ".join(value.split()) is `value` itself: printable (so no tab, newline or
    other Unicode whitespace but the ASCII space), no doubled, leading or trailing space."""
    return (
        value.isprintable()
        and "  " not in value
        and not value.startswith(" ")
        and not value.endswith(" ")
    )


def _plain(value: str) -> str:
    return value if _is_plain(value) else " ".join(value.split())


def _json_escaped(value: str) -> str:
    """`value` as inside a JSON string (json.dumps without the quotes); printable ASCII
    without a quote or backslash is itself."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return json.dumps(value)[1:-1]


def fill_json(
    template_json: str, values: Mapping[str, str], parts: tuple[str, ...] | None = None
) -> Any:
    """Fill {placeholders} in a JSON text with JSON-escaped values and parse it. Braces that
    are not placeholders (UCUM annotations such as {tbl}) are left alone. `parts` is the
    text split at its placeholders (_PLACEHOLDER.split), when the caller keeps it."""
    out = list(parts if parts is not None else _PLACEHOLDER.split(template_json))
    for index in range(1, len(out), 2):
        name = out[index]
        out[index] = _json_escaped(values[name]) if name in values else "{" + name + "}"
    text = "".join(out)
    parsed, value = loads_fast(text.encode())
    return value if parsed else json.loads(text)


def clip_summary(summary: str) -> str:
    summary = _plain(summary)
    if len(summary) <= SUMMARY_MAX:
        return summary
    return summary[: SUMMARY_MAX - 1].rstrip() + "\u2026"


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def _text_placeholders(node: Any, key: str = "") -> set[str]:
    """Placeholders in a suggestion's strings; UCUM annotations such as {tbl} in a unit or
    code are not placeholders."""
    if isinstance(node, dict):
        return set().union(*(_text_placeholders(v, k) for k, v in node.items()))
    if isinstance(node, list):
        return set().union(*(_text_placeholders(v, key) for v in node))
    if isinstance(node, str) and key not in {"unit", "code"}:
        return placeholders(node)
    return set()


class CardTemplates:
    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or cards_dir()
        catalogue = json.loads((directory / "override-reasons.json").read_text("utf-8"))
        self._reason_system = catalogue["system"]
        self._reasons: dict[str, str] = reason_displays(catalogue)
        self.suggestions: dict[str, dict[str, Any]] = {
            key: value
            for key, value in json.loads(
                (directory / "suggestions.json").read_text("utf-8")
            ).items()
            if not key.startswith("_")
        }
        self.shared_lines: dict[str, str] = {
            key: value
            for key, value in json.loads((directory / "lines.json").read_text("utf-8")).items()
            if not key.startswith("_")
        }
        self._check_suggestions()
        self._actions_json = {
            key: json.dumps(spec["actions"]) for key, spec in self.suggestions.items()
        }
        self._actions_parts = {key: _split(text) for key, text in self._actions_json.items()}
        self._static: dict[str, dict[str, Any]] = {}
        self._rule_text: dict[str, _RuleText] = {}  # each rule's text split once
        self._label_parts = {key: _split(spec["label"]) for key, spec in self.suggestions.items()}
        self.templates: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            if path.name in {"override-reasons.json", "suggestions.json", "lines.json"}:
                continue
            template = json.loads(path.read_text("utf-8"))
            self._check(template, path.name)
            self.templates[template["rule_id"]] = template

    @property
    def reason_system(self) -> str:
        return str(self._reason_system)

    def reason_codes(self, rule_id: str) -> frozenset[str]:
        """The override reason codes a rule's cards offer (its card file's catalogue)."""
        template = self.templates.get(rule_id) or {}
        return frozenset(template.get("override_reasons", []))

    # -- start-up checks ----------------------------------------------------------------------

    def _check(self, template: dict[str, Any], name: str) -> None:
        for key in ("rule_id", "source", "variants"):
            if key not in template:
                raise TemplateError(f"{name}: missing {key}")
        if not isinstance(template.get("priority", 0), int):
            raise TemplateError(f"{name}: priority must be a whole number")
        for variant, spec in template["variants"].items():
            if spec.get("indicator") not in INDICATORS:
                raise TemplateError(f"{name}: variant {variant} has no valid indicator")
            if not spec.get("summary"):
                raise TemplateError(f"{name}: variant {variant} has no summary")
            if not isinstance(spec.get("priority", 0), int):
                raise TemplateError(f"{name}: variant {variant}: priority must be a whole number")
            shorter = spec.get("summary_short", [])
            if not isinstance(shorter, list) or not all(isinstance(t, str) and t for t in shorter):
                raise TemplateError(f"{name}: variant {variant}: summary_short must list texts")
        for code in template.get("override_reasons", []):
            if code not in self._reasons:
                raise TemplateError(f"{name}: unknown override reason {code}")

    def check_against(
        self, specs: Iterable[TextSpec], shared: Mapping[str, frozenset[str]]
    ) -> None:
        """Refuse templates that do not match what the rules supply (called at start-up)."""
        self._check_lines("lines.json", self.shared_lines, shared)
        for spec in specs:
            template = self.templates.get(spec.id)
            name = f"{spec.id}.json"
            if template is None:
                raise TemplateError(f"{name}: no card template for rule {spec.id}")
            declared_variants = {k[8:]: v for k, v in spec.text.items() if k.startswith("variant:")}
            declared_lines = {k[5:]: v for k, v in spec.text.items() if k.startswith("line:")}
            variants = template["variants"]
            if set(variants) != set(declared_variants):
                raise TemplateError(
                    f"{name}: variants {sorted(variants)} differ from the rule's "
                    f"{sorted(declared_variants)}"
                )
            for variant, fields in declared_variants.items():
                summary = placeholders(variants[variant]["summary"])
                used = summary | placeholders(variants[variant].get("detail", ""))
                self._compare(f"{name}: variant {variant}", used - RESERVED, set(fields))
                if "evidence" in summary:
                    raise TemplateError(f"{name}: variant {variant}: evidence in the summary")
                for short in variants[variant].get("summary_short", []):
                    unknown = placeholders(short) - set(fields)
                    if unknown:
                        raise TemplateError(
                            f"{name}: variant {variant}: summary_short uses unknown "
                            f"placeholder(s) {sorted(unknown)}"
                        )
            own = template.get("lines", {})
            clash = set(own) & set(self.shared_lines)
            if clash:
                raise TemplateError(f"{name}: lines {sorted(clash)} shadow cards/lines.json")
            self._check_lines(name, own, declared_lines)

    def _check_lines(
        self, name: str, lines: Mapping[str, str], declared: Mapping[str, frozenset[str]]
    ) -> None:
        if set(lines) != set(declared):
            raise TemplateError(
                f"{name}: lines {sorted(set(lines) ^ set(declared))} are "
                "not both in the template and declared by the rule"
            )
        for key, fields in declared.items():
            self._compare(f"{name}: line {key}", placeholders(lines[key]), set(fields))

    @staticmethod
    def _compare(where: str, used: set[str], declared: set[str]) -> None:
        unknown = used - declared
        if unknown:
            raise TemplateError(f"{where} uses unknown placeholder(s) {sorted(unknown)}")
        missing = declared - used
        if missing:
            raise TemplateError(f"{where} leaves out placeholder(s) {sorted(missing)}")

    def _check_suggestions(self) -> None:
        sample = {
            "patient_id": "example",
            "resource_id": "MedicationRequest/example",
            "drug": "example",
        }
        name = "suggestions.json"
        for key, suggestion in self.suggestions.items():
            if not suggestion.get("label") or not suggestion.get("actions"):
                raise TemplateError(f"{name}: suggestion {key} needs a label and actions")
            for action in suggestion.get("actions", []):
                if action.get("type") not in {"create", "update", "delete"}:
                    raise TemplateError(f"{name}: suggestion {key} has a bad action type")
                used = _text_placeholders(action) | placeholders(suggestion["label"])
                if used - set(sample):
                    raise TemplateError(
                        f"{name}: suggestion {key} uses unknown placeholder(s) "
                        f"{sorted(used - set(sample))}"
                    )
                resource = action.get("resource")
                if resource is not None:
                    anomalies: Counter[str] = Counter()
                    if not validate_resource(fill_json(json.dumps(resource), sample), anomalies):
                        raise TemplateError(
                            f"{name}: suggestion {key} is not valid R4: {sorted(anomalies)}"
                        )

    # -- rendering ----------------------------------------------------------------------------

    def indicator(self, finding: Finding) -> str:
        indicator: str = self.templates[finding.rule_id]["variants"][finding.variant]["indicator"]
        return indicator

    def priority(self, finding: Finding) -> int:
        """Lower is shown first: the most dangerous concern leads (the variant's `priority`,
        else the card file's)."""
        template = self.templates[finding.rule_id]
        variant = template["variants"][finding.variant]
        return int(variant.get("priority", template.get("priority", 50)))

    def _static_parts(self, rule_id: str) -> dict[str, Any]:
        """The parts of a rule's cards that never change, built once (shared, never mutated)."""
        cached = self._static.get(rule_id)
        if cached is None:
            template = self.templates[rule_id]
            source = template["source"]
            cached = prune(
                {
                    "source": {
                        "label": source["label"],
                        "url": source.get("url"),
                        "topic": {
                            "system": TOPIC_SYSTEM,
                            "code": rule_id,
                            "display": source.get("topic_display"),
                        },
                    },
                    "overrideReasons": [
                        {
                            "system": self._reason_system,
                            "code": code,
                            "display": self._reasons[code],
                        }
                        for code in template.get("override_reasons", [])
                    ],
                    "links": template.get("links"),
                    "selectionBehavior": template.get("selection_behavior", "any"),
                }
            )
            self._static[rule_id] = cached
        return cached

    def _compiled(self, rule_id: str) -> _RuleText:
        """A rule's card text split at its placeholders once (on its first card; templates are
        loaded at start-up): every variant's summary, shorter summaries and detail, and every
        line the rule may use (its own, then cards/lines.json)."""
        compiled = self._rule_text.get(rule_id)
        if compiled is None:
            template = self.templates[rule_id]
            lines = {key: _split(text) for key, text in self.shared_lines.items()}
            lines.update((key, _split(text)) for key, text in template.get("lines", {}).items())
            limit = int(template.get("max_evidence", MAX_EVIDENCE))
            compiled = _RuleText(
                {
                    name: _VariantText(
                        spec["indicator"],
                        _split(spec["summary"]),
                        tuple(_split(short) for short in spec.get("summary_short", ())),
                        _split(spec.get("detail", "")),
                    )
                    for name, spec in template["variants"].items()
                },
                lines,
                limit,
            )
            self._rule_text[rule_id] = compiled
        return compiled

    def line(self, rule_id: str, line: Line, markdown: bool) -> str:
        parts = self._compiled(rule_id).lines.get(line.key)
        if parts is None:
            raise TemplateError(f"{rule_id}: no line {line.key}")
        return self._fill_parts(rule_id, parts, line.values, markdown)

    def _value(self, rule_id: str, value: Text, markdown: bool) -> str:
        if isinstance(value, str):
            return escape_markdown(value) if markdown else _plain(value)
        if isinstance(value, Line):
            return self.line(rule_id, value, markdown)
        return ", ".join(self.line(rule_id, v, markdown) for v in value)

    def _fill_parts(
        self,
        rule_id: str,
        parts: tuple[str, ...],
        values: Mapping[str, Text],
        markdown: bool,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """[text, name, text, name, ..., text] (a template split at its placeholders) filled:
        the same left-to-right replacement as _PLACEHOLDER.sub, without a regex callback per
        placeholder on every call."""
        if len(parts) == 1:
            return parts[0]
        out = list(parts)
        for index in range(1, len(out), 2):
            name = out[index]
            if extra is not None and name in extra:
                out[index] = extra[name]
                continue
            value = values.get(name, _MISSING)
            if value is _MISSING:
                raise TemplateError(f"{rule_id}: no value for {{{name}}}")
            out[index] = self._value(rule_id, value, markdown)
        return "".join(out)

    def render(self, finding: Finding, covers: tuple[str, ...] = ()) -> dict[str, Any]:
        rule_id = finding.rule_id
        compiled = self._compiled(rule_id)
        variant = compiled.variants[finding.variant]
        static = self._static_parts(rule_id)
        values = finding.values
        # at most MAX_EVIDENCE lines, most decisive first (the rules order them): docs/cards.md
        evidence = "\n".join(
            f"- {self.line(rule_id, line, True)}" for line in finding.evidence[: compiled.limit]
        )
        summary = self._fill_parts(rule_id, variant.summary, values, False)
        if len(summary) > SUMMARY_MAX:
            # long drug names: the variant's shorter wordings, in order, before any clipping
            # (the decision words come last in a summary and must not be cut)
            for short in variant.summary_short:
                summary = self._fill_parts(rule_id, short, values, False)
                if len(_plain(summary)) <= SUMMARY_MAX:
                    break
        card: dict[str, Any] = {
            "uuid": random_uuid(),
            "summary": clip_summary(summary),
            "indicator": variant.indicator,
            "source": static["source"],
        }
        detail = self._fill_parts(
            rule_id, variant.detail, values, True, {"evidence": evidence}
        ).strip()
        if " \n" in detail:  # an empty optional clause at a line's end
            detail = _TRAILING_SPACE.sub("\n", detail)
        if detail:
            card["detail"] = detail
        if finding.suggestions:
            card["suggestions"] = [
                self._suggestion(spec.key, spec.values) for spec in finding.suggestions
            ]
            card["selectionBehavior"] = static["selectionBehavior"]
        for key in ("overrideReasons", "links"):
            if key in static:
                card[key] = static[key]
        if covers:
            # Feedback and analytics attribute the card to every rule whose concern it answers.
            card["extension"] = {EXTENSION_RULE: rule_id, EXTENSION_COVERS: list(covers)}
        return card

    def _suggestion(self, key: str, values: Mapping[str, str]) -> dict[str, Any]:
        """A suggestion's label and actions filled with the values (whitespace normalised).
        The actions are stored as JSON text split at its placeholders once; filled with
        JSON-escaped values and parsed back, which is several times faster than walking the
        resource."""
        plain = {k: _plain(v) for k, v in values.items()}
        return {
            "label": _fill_known(self._label_parts[key], plain),
            "uuid": random_uuid(),
            "actions": fill_json(self._actions_json[key], plain, self._actions_parts[key]),
        }


_MISSING: Any = object()


def _split(text: str) -> tuple[str, ...]:
    """A template text as [text, name, text, name, ..., text] (_PLACEHOLDER.split)."""
    return tuple(_PLACEHOLDER.split(text))


def _fill_known(parts: tuple[str, ...], values: Mapping[str, str]) -> str:
    """Split template text filled; a placeholder without a value stays as written."""
    if len(parts) == 1:
        return parts[0]
    out = list(parts)
    for index in range(1, len(out), 2):
        name = out[index]
        out[index] = values[name] if name in values else "{" + name + "}"
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _VariantText:
    indicator: str
    summary: tuple[str, ...]
    summary_short: tuple[tuple[str, ...], ...]
    detail: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _RuleText:
    variants: dict[str, _VariantText]
    lines: dict[str, tuple[str, ...]]
    limit: int


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
