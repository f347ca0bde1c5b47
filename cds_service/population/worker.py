"""The engine a backtest process evaluates with: built once per process (a pool worker, a
Spark executor's Python worker) from the same create_app as the server, so the facts, rules,
settings, silent modes and value sets are the service's own."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cds_service.population.replay import Options, PatientResult, Replayer


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build the same Replayer in another process (picklable)."""

    key: bytes
    options: Options
    rules: tuple[str, ...] = ()  # rule ids to run (default: every registered rule)
    env: dict[str, str] = field(default_factory=dict)  # CDS_* settings of the run


_CACHE: dict[bytes, Replayer] = {}


def replayer(spec: EngineSpec) -> Replayer:
    """The process's Replayer for `spec` (built on first use)."""
    import pickle

    name = pickle.dumps(spec)
    cached = _CACHE.get(name)
    if cached is None:
        cached = _CACHE[name] = _build(spec)
    return cached


def _build(spec: EngineSpec) -> Replayer:
    from cds_service import create_app
    from cds_service.config import from_env
    from cds_service.rules.registry import default_rules

    config = from_env(spec.env).with_overrides(
        {
            "log_level": "WARNING",
            "database_url": "sqlite://",
            "card_log": False,
            "today": "",
            "pseudonym_key": spec.key.hex(),
        }
    )
    # --rules: the others are switched off (the same settings, only `enabled` changed)
    off = {
        r.id: {"enabled": False} for r in default_rules() if spec.rules and r.id not in spec.rules
    }
    app = create_app(config, settings_overrides={"rules": off} if off else None)
    logging.getLogger("cds_service.hooks").setLevel(logging.WARNING)
    return Replayer(
        app.extensions["cds_engine"], app.extensions["cds_knowledge"], spec.key, spec.options
    )


def evaluate_groups(
    spec: EngineSpec, groups: Sequence[tuple[str, Sequence[tuple[str, str]]]]
) -> list[PatientResult]:
    """Replay a batch of patients (patient id, [(fullUrl, resource JSON)])."""
    engine = replayer(spec)
    return [engine.patient(patient, rows) for patient, rows in groups]
