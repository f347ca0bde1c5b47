"""Service configuration: embedded defaults, overridable by environment variables.

Every setting has a default that serves a local developer safely (FHIR calls to loopback only,
auth off only on loopback). The README's configuration table lists the same names.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Config:
    # Outbound FHIR access (the SSRF guard: only listed bases are ever contacted).
    fhir_allowlist: tuple[str, ...] = ("loopback",)
    fhir_allow_http: bool = False  # plain http is allowed for loopback bases regardless
    fhir_connect_timeout: float = 0.5
    fhir_read_timeout: float = 2.0
    fhir_deadline: float = 3.0
    fhir_max_pages: int = 10
    fhir_max_response_bytes: int = 20 * 1024 * 1024
    fhir_max_medication_fetches: int = 20
    # Inbound limits.
    max_body_bytes: int = 16 * 1024 * 1024
    max_bundle_entries: int = 20_000
    # Browsers (the CDS Hooks sandbox) call the service directly.
    cors_origins: tuple[str, ...] = ("*",)
    # A fixed clinical "today" (ISO date) for demos and reproducible evaluation; empty = clock.
    today: str = ""
    log_level: str = "INFO"
    feedback_capacity: int = 10_000
    mme_table: str = "cdc-2022"  # or "cdc-2016"
    # Authentication of CDS clients (CDS Hooks "Trusting CDS Clients").
    auth: str = "off"  # or "required"
    public_base_url: str = ""  # e.g. https://cds.example.org (the JWT aud is built from it)
    trusted_issuers_file: str = ""
    auth_leeway: float = 60.0
    jwks_timeout: float = 2.0

    def clinical_today(self) -> dt.date:
        if self.today:
            return dt.date.fromisoformat(self.today)
        return dt.datetime.now(dt.UTC).date()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known})


ENV_NAMES: dict[str, str] = {
    "fhir_allowlist": "CDS_FHIR_ALLOWLIST",
    "fhir_allow_http": "CDS_FHIR_ALLOW_HTTP",
    "fhir_connect_timeout": "CDS_FHIR_CONNECT_TIMEOUT",
    "fhir_read_timeout": "CDS_FHIR_READ_TIMEOUT",
    "fhir_deadline": "CDS_FHIR_DEADLINE",
    "fhir_max_pages": "CDS_FHIR_MAX_PAGES",
    "fhir_max_response_bytes": "CDS_FHIR_MAX_RESPONSE_BYTES",
    "fhir_max_medication_fetches": "CDS_FHIR_MAX_MEDICATION_FETCHES",
    "max_body_bytes": "CDS_MAX_BODY_BYTES",
    "max_bundle_entries": "CDS_MAX_BUNDLE_ENTRIES",
    "cors_origins": "CDS_CORS_ORIGINS",
    "today": "CDS_TODAY",
    "log_level": "CDS_LOG_LEVEL",
    "feedback_capacity": "CDS_FEEDBACK_CAPACITY",
    "mme_table": "CDS_MME_TABLE",
    "auth": "CDS_AUTH",
    "public_base_url": "CDS_PUBLIC_BASE_URL",
    "trusted_issuers_file": "CDS_TRUSTED_ISSUERS_FILE",
    "auth_leeway": "CDS_AUTH_LEEWAY",
    "jwks_timeout": "CDS_JWKS_TIMEOUT",
}


class ConfigError(ValueError):
    """A configuration value cannot be used; the message names the variable."""


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    defaults = Config()
    values: dict[str, Any] = {}
    for f in fields(Config):
        name = ENV_NAMES.get(f.name)
        if name is None or name not in env:
            continue
        raw = env[name]
        default = getattr(defaults, f.name)
        try:
            if isinstance(default, bool):
                values[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, tuple):
                values[f.name] = _split(raw)
            else:
                values[f.name] = raw.strip()
        except ValueError as exc:
            raise ConfigError(f"{name}: cannot read {raw!r} ({exc})") from None
    config = replace(defaults, **values)
    if config.auth not in {"off", "required"}:
        raise ConfigError(f"CDS_AUTH: {config.auth!r} is not 'required' or 'off'")
    if config.auth == "required" and not (config.public_base_url and config.trusted_issuers_file):
        raise ConfigError("CDS_AUTH=required needs CDS_PUBLIC_BASE_URL and "
                          "CDS_TRUSTED_ISSUERS_FILE")
    if config.mme_table not in {"cdc-2022", "cdc-2016"}:
        raise ConfigError(f"CDS_MME_TABLE: {config.mme_table!r} is not cdc-2022 or cdc-2016")
    if config.today:
        try:
            dt.date.fromisoformat(config.today)
        except ValueError:
            raise ConfigError(f"CDS_TODAY: {config.today!r} is not an ISO date") from None
    return config
