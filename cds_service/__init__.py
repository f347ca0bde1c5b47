"""CDS Hooks 2.0 service for opioid stewardship in low back pain.

`create_app(config)` builds the Flask app; value sets, card templates and rule settings are
loaded once here, never per request.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_cors import CORS

from cds_service.config import Config, from_env

__version__ = "0.1.0"


def create_app(config: Config | None = None, rule_settings: dict[str, Any] | None = None) -> Flask:
    from cds_service import logs
    from cds_service.hooks.pipeline import Engine
    from cds_service.http.views import bp

    config = config or from_env()
    logs.configure(config.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["CDS_CONFIG"] = config
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["cds_engine"] = Engine(config, rule_settings)
    # --- store, card log, operations endpoints (issue 11) ---
    from cds_service.http.ops import ops_bp, parse_ops_allow
    from cds_service.store import CardLogWriter, open_store
    from cds_service.store.replay import StoreReplayCache

    store = open_store(config)
    app.extensions["cds_store"] = store
    app.extensions["cds_card_log"] = (CardLogWriter(store, config.card_log_queue)
                                      if config.card_log else None)
    app.extensions["cds_ops_allow"] = parse_ops_allow(config.ops_allow)
    app.register_blueprint(ops_bp)
    # --- end of store block ---
    if config.auth == "required":
        from cds_service.http.auth import Authenticator, JwksFetcher, load_trusted_issuers

        app.extensions["cds_auth"] = Authenticator(
            load_trusted_issuers(config.trusted_issuers_file), config.public_base_url,
            config.auth_leeway, replay_cache=StoreReplayCache(store),
            fetcher=JwksFetcher(timeout=config.jwks_timeout))
    app.register_blueprint(bp)
    origins: Any = "*" if "*" in config.cors_origins else list(config.cors_origins)
    CORS(
        app,
        resources={r"/cds-services*": {"origins": origins}, r"/*": {"origins": origins}},
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
    )
    return app


__all__ = ["Config", "__version__", "create_app"]
