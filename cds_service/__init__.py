"""CDS Hooks 2.0 service for opioid stewardship in low back pain.

`create_app(config)` builds the Flask app; value sets, card templates and rule settings are
loaded once here, never per request.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask
from flask_cors import CORS

from cds_service.config import Config, ConfigError, from_env

if TYPE_CHECKING:
    from cds_service.knowledge import Knowledge
    from cds_service.rules.base import Rule

__version__ = "0.1.0"
GC_THRESHOLDS = (50_000, 20, 20)  # young, middle, old generation (CPython's default 700, 10, 10)


class _App(Flask):
    """Flask, with the coroutine check of each view and request handler made once per
    function instead of on every request (Flask asks it of every before/after/teardown
    handler and view it calls: ~9 checks of ~2.5 us per hook call)."""

    _MAX_CHECKED = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked: dict[Any, Any] = {}

    def ensure_sync(self, func: Any) -> Any:
        checked = self._checked.get(func)
        if checked is None:
            checked = super().ensure_sync(func)
            if len(self._checked) < self._MAX_CHECKED:
                self._checked[func] = checked
        return checked


def create_app(
    config: Config | None = None,
    *,
    rules: tuple[Rule, ...] | None = None,
    settings_overrides: Mapping[str, Any] | None = None,
    knowledge: Knowledge | None = None,
) -> Flask:
    """The app, with everything static built once: Knowledge (value sets, drug tables, MME
    factors, card and suggestion templates), typed Settings, the rule registry and the engine.
    Tests pass their own config, rules or settings overrides instead of patching modules."""
    from cds_service import logs
    from cds_service.hooks.pipeline import Engine, RecordCheck
    from cds_service.hooks.services import discovery_document
    from cds_service.http.views import bp
    from cds_service.knowledge import Knowledge
    from cds_service.knowledge.valuesets import ValueSetError
    from cds_service.rules.lines import SHARED_LINES
    from cds_service.rules.registry import default_rules
    from cds_service.settings import load_settings

    config = config or from_env()
    logs.configure(config.log_level)
    rules = default_rules() if rules is None else rules
    if knowledge is None:
        try:
            knowledge = Knowledge.load(config.valuesets_dir or None)
        except ValueSetError as exc:
            raise ConfigError(f"CDS_VALUESETS_DIR: {exc}") from None
    # Memory bounded in bytes: names clipped before matching, caches with a byte budget.
    knowledge.classifier.bound_memory(config.max_name_chars, config.cache_max_bytes)
    knowledge.conditions.bound_memory(config.max_name_chars, config.cache_max_bytes)
    knowledge.therapies.bound_memory(config.max_name_chars, config.cache_max_bytes)
    knowledge.allergies.max_name_chars = config.max_name_chars
    settings = load_settings(
        {r.id: r.settings_type for r in rules},
        config.rule_settings_file,
        config.mme_table,
        settings_overrides,
    )
    knowledge.cards.check_against([*rules, RecordCheck()], SHARED_LINES)
    app = _App(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["CDS_CONFIG"] = config
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["cds_knowledge"] = knowledge
    # discovery, with the knowledge version and value sets in use (extension.knowledge)
    app.extensions["cds_discovery"] = json.dumps(
        {
            **discovery_document(
                {
                    hook: tuple(
                        knowledge.cards.templates[r.id]["source"].get("topic_display") or r.id
                        for r in rules
                        if hook in r.hooks
                        and settings.rules[r.id].enabled
                        and settings.rules[r.id].mode == "active"
                    )
                    for hook in {h for r in rules for h in r.hooks}
                }
            ),
            "extension": {"knowledge": knowledge.valuesets.summary()},
        },
        separators=(",", ":"),
    )
    app.extensions["cds_engine"] = Engine(config, knowledge, settings, rules)
    # The store (replay cache, issued-card log, feedback) and the operations endpoints.
    from cds_service.hooks.feedback import CardIds
    from cds_service.http.ops import install as install_readiness
    from cds_service.http.ops import ops_bp, parse_ops_allow
    from cds_service.store import CardLogWriter, open_store
    from cds_service.store.replay import StoreReplayCache

    store = open_store(config)
    app.extensions["cds_store"] = store
    if config.one_answer_per_decision:  # one decision, one answer (docs/cards.md)
        app.extensions["cds_engine"].answers = store
    from cds_service.store.cardlog import ServiceState

    # logged with each card: the knowledge version and each rule's settings digest
    app.extensions["cds_service_state"] = ServiceState.of(knowledge.version, settings.rules)
    # card and suggestion uuids that feedback can later be checked against (hooks/feedback.py)
    app.extensions["cds_card_ids"] = CardIds(
        store.pseudonymizer.derived_keys(b"card-ids"), knowledge.cards.templates
    )
    app.extensions["cds_reason_codes"] = {
        rule_id: knowledge.cards.reason_codes(rule_id) for rule_id in knowledge.cards.templates
    }
    app.extensions["cds_card_log"] = (
        CardLogWriter(store, config.card_log_queue) if config.card_log else None
    )
    app.extensions["cds_ops_allow"] = parse_ops_allow(config.ops_allow)
    install_readiness(app, store, config.worker_threads)
    app.register_blueprint(ops_bp)
    if config.auth == "required":
        from cds_service.http.auth import Authenticator, JwksFetcher, load_trusted_issuers

        app.extensions["cds_auth"] = Authenticator(
            load_trusted_issuers(config.trusted_issuers_file),
            config.public_base_url,
            config.auth_leeway,
            replay_cache=StoreReplayCache(store),
            fetcher=JwksFetcher(timeout=config.jwks_timeout),
            max_lifetime=config.auth_max_token_lifetime,
        )
    app.register_blueprint(bp)
    from cds_service.http import analytics

    analytics.install(app, rules, settings.rules)  # /analytics: its own access check
    from cds_service.http.hygiene import install as install_hygiene

    install_hygiene(app, config)  # early errors drain an unread body or close the connection
    from cds_service.http import cors

    origins: Any = cors.allowed_origins(config)  # never "null" (http/cors.py)
    cors_options: dict[str, Any] = {
        # never /analytics or the operations endpoints: no other site's script may read the
        # governance figures, the metrics or the readiness state
        "resources": {
            r"/cds-services*": {"origins": origins},
            r"^/(?!analytics(/|$)|metrics/?$|healthz/?$|readyz/?$).*": {"origins": origins},
        },
        "allow_headers": ["Authorization", "Content-Type"],
        "methods": ["GET", "POST", "OPTIONS"],
        "max_age": 600,
    }
    CORS(app, **cors_options)
    from flask_cors.core import get_cors_options

    # hook and feedback POSTs: the same headers, decided once per Origin (http/cors.py)
    cors.install(app, get_cors_options(app, cors_options, {}, {"origins": origins}))
    # Everything built so far (value sets, code tables, templates) lives as long as the
    # process: move it out of the garbage collector's sight, so a large request's parsing
    # does not pay for scanning it again and again (5,000 orders: JSON parse 90 -> 30 ms),
    # and gunicorn's forked workers keep sharing those pages.
    gc.collect()
    gc.freeze()
    # A request allocates tens of thousands of containers (a 1,000-order body: ~100,000)
    # that reference counting frees; at the default threshold (700) the young generation
    # was collected ~30 times per 1,000-order call for almost no cyclic garbage.
    gc.set_threshold(*GC_THRESHOLDS)
    return app


__all__ = ["Config", "__version__", "create_app"]
