"""CDS Hooks 2.0 service for opioid stewardship in low back pain.

`create_app(config)` builds the Flask app; value sets, card templates and rule settings are
loaded once here, never per request.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from flask_cors import CORS

from cds_service.config import Config, ConfigError, from_env

__version__ = "0.1.0"


def create_app(config: Config | None = None, rule_settings: dict[str, Any] | None = None) -> Flask:
    from cds_service import logs
    from cds_service.hooks.feedback import FeedbackStore
    from cds_service.hooks.pipeline import Engine
    from cds_service.http.views import bp

    config = config or from_env()
    logs.configure(config.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["CDS_CONFIG"] = config
    app.json.sort_keys = False  # type: ignore[attr-defined]
    from cds_service.hooks.services import discovery_document
    from cds_service.knowledge import install
    from cds_service.knowledge.valuesets import ValueSetError

    try:
        knowledge = install(config.valuesets_dir or None)
    except ValueSetError as exc:
        raise ConfigError(f"CDS_VALUESETS_DIR: {exc}") from None
    app.extensions["cds_knowledge"] = knowledge
    app.extensions["cds_discovery_json"] = json.dumps(
        {**discovery_document(), "extension": {"knowledge": knowledge.summary()}},
        separators=(",", ":"))
    app.extensions["cds_engine"] = Engine(config, rule_settings)
    app.extensions["cds_feedback"] = FeedbackStore(config.feedback_capacity)
    if config.auth == "required":
        from cds_service.http.auth import Authenticator, JwksFetcher, load_trusted_issuers

        app.extensions["cds_auth"] = Authenticator(
            load_trusted_issuers(config.trusted_issuers_file), config.public_base_url,
            config.auth_leeway, fetcher=JwksFetcher(timeout=config.jwks_timeout))
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
