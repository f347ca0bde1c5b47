"""Typed clinical settings: thresholds, look-back windows, exclusions and on/off switches.

The defaults live in exactly one place, `rules/settings.json`; a deployment overlays its own
JSON file of the same shape (CDS_RULE_SETTINGS_FILE). Every value is checked against the
dataclass that declares it when the app is built: an unknown key, a missing key or a value of
the wrong type is refused at start-up with the key's path, never discovered mid-request.
"""

from __future__ import annotations

import json
import logging
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from importlib import resources
from typing import Any, Literal, TypeVar

T = TypeVar("T")
log = logging.getLogger("cds_service.settings")


class SettingsError(ValueError):
    """A settings file cannot be used; the message names the key."""


@dataclass(frozen=True)
class MedicationActivity:
    """How the record's medication entries are read into exposure and current use."""

    grace_days: int  # allowance after a supply runs out before an active order stops counting
    undated_lookback_days: int  # how long an active order with no supply information counts
    assumed_supply_days: int  # exposure length of an order or dispense with no supply given
    statement_confirmed_within_days: int  # an open-ended active statement confirmed this
    #                                       recently (dateAsserted) is current use


@dataclass(frozen=True)
class Exclusions:
    """Shared patient and order exclusions (clinical brief 4), each switchable."""

    under_18: bool
    cancer: bool
    sickle_cell_disease: bool
    hospice_palliative: bool
    inpatient_or_injectable: bool
    oud_treatment: bool


Mode = Literal["active", "silent"]


@dataclass(frozen=True)
class RuleSettings:
    """What every rule has; a rule's own settings class extends it."""

    enabled: bool
    # silent: the rule runs and its cards are logged (marked silent) for governance review,
    # but never returned to the EHR; a settings change, no release
    mode: Mode
    exclusions: Exclusions


@dataclass(frozen=True)
class Settings:
    medication_activity: MedicationActivity
    end_of_life_recent_days: int  # a dated hospice/end-of-life procedure or referral counts
    #                               as current care this long
    mme_table: str
    rules: Mapping[str, RuleSettings]

    def rule(self, rule_id: str, kind: type[T]) -> T:
        """The typed settings of one rule (the registry guarantees the type)."""
        value = self.rules[rule_id]
        if not isinstance(value, kind):
            raise TypeError(f"settings of {rule_id} are not {kind.__name__}")
        return value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build(kind: type[T], data: Any, path: str) -> T:
    """A frozen dataclass from JSON, every field required and checked by its declared type."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: expected an object")
    hints = typing.get_type_hints(kind)
    if not is_dataclass(kind):
        raise TypeError(f"{kind.__name__} is not a settings dataclass")
    names = {f.name for f in fields(kind)}
    unknown = sorted(k for k in data if k not in names and not k.startswith("_"))
    if unknown:
        raise SettingsError(f"{path}: unknown setting {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in sorted(names):
        if name not in data:
            raise SettingsError(f"{path}.{name}: missing")
        values[name] = _value(hints[name], data[name], f"{path}.{name}")
    return kind(**values)


def _value(hint: Any, raw: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(raw, bool):
            raise SettingsError(f"{path}: expected true or false")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise SettingsError(f"{path}: expected a whole number >= 0")
        return raw
    if hint is str:
        if not isinstance(raw, str):
            raise SettingsError(f"{path}: expected text")
        return raw
    if origin is tuple:
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise SettingsError(f"{path}: expected a list of text")
        return tuple(raw)
    if isinstance(hint, type) and is_dataclass(hint):
        return build(hint, raw, path)
    if isinstance(hint, types.UnionType) or origin is typing.Literal:
        allowed = typing.get_args(hint)
        if raw not in allowed:
            raise SettingsError(f"{path}: expected one of {', '.join(map(str, allowed))}")
        return raw
    raise SettingsError(f"{path}: unsupported setting type")  # pragma: no cover


def packaged_defaults() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("cds_service.rules").joinpath("settings.json").read_text("utf-8")
    )
    return data


def load_settings(
    rule_types: Mapping[str, type[RuleSettings]],
    override_file: str = "",
    mme_table: str = "cdc-2022",
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """The packaged defaults, overlaid with a deployment's file and then `overrides` (tests)."""
    data = packaged_defaults()
    if override_file:
        try:
            with open(override_file, encoding="utf-8") as handle:
                data = _merge(data, json.load(handle))
        except (OSError, ValueError) as exc:
            raise SettingsError(f"cannot read the settings file: {exc}") from None
    if overrides:
        data = _merge(data, overrides)
    known = {"medication_activity", "end_of_life_recent_days", "exclusions", "rules"}
    unknown = sorted(k for k in data if k not in known and not k.startswith("_"))
    if unknown:
        raise SettingsError(f"unknown setting {', '.join(unknown)}")
    rules_data = data.get("rules")
    if not isinstance(rules_data, Mapping):
        raise SettingsError("rules: expected an object")
    missing = sorted(set(rule_types) - set(rules_data))
    if missing:
        raise SettingsError(f"rules: missing {missing}")
    # Settings of a rule that is not registered (a rule removed from the registry, or an app
    # built with fewer rules) are ignored, with a warning: a registered rule's settings are
    # still checked key by key, so a misspelt key inside one still stops start-up.
    ignored = sorted(set(rules_data) - set(rule_types))
    if ignored:
        log.warning("settings-ignored", extra={"rules": ignored, "reason": "rule not registered"})
    shared = data.get("exclusions", {})
    rules: dict[str, RuleSettings] = {}
    for rule_id, kind in rule_types.items():
        own = dict(rules_data[rule_id])
        own["exclusions"] = _merge(shared, own.get("exclusions", {}))
        rules[rule_id] = build(kind, own, f"rules.{rule_id}")
    end_of_life = data.get("end_of_life_recent_days")
    return Settings(
        medication_activity=build(
            MedicationActivity, data.get("medication_activity"), "medication_activity"
        ),
        end_of_life_recent_days=_value(int, end_of_life, "end_of_life_recent_days"),
        mme_table=mme_table,
        rules=rules,
    )
