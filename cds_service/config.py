"""Service configuration: embedded defaults, overridable by environment variables.

Every setting has a default that serves a local developer safely (FHIR calls to loopback only,
auth off only on loopback). docs/configuration.md lists the same names (a test checks it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Config:
    # Outbound FHIR access (the SSRF guard: only listed bases are ever contacted).
    fhir_allowlist: tuple[str, ...] = ("loopback",)
    fhir_allow_http: bool = False  # plain http is allowed for loopback bases regardless
    # Above 1 s so a dropped SYN can be retried once by TCP (its first retry is at 1 s).
    fhir_connect_timeout: float = 1.5
    fhir_read_timeout: float = 2.0  # longest silence between two reads
    fhir_deadline: float = 3.0  # hard total per hook call: connect, headers and body together
    fhir_max_pages: int = 10
    fhir_max_response_bytes: int = 20 * 1024 * 1024
    fhir_max_medication_fetches: int = 20
    # Isolation and admission (per worker process; see fhir/bulkhead.py).
    fhir_server_max_exchanges: int = 8  # threads per FHIR base URL
    # hook calls using one FHIR base URL at once; 0 = the fallback limit (one EHR normally
    # has one FHIR server, so it may use every fallback slot)
    fhir_server_max_calls: int = 0
    fhir_max_fallback_calls: int = 0  # hook calls waiting on any FHIR server; 0 = threads / 2
    fhir_server_max_waiting: int = 0  # calls queued for one server's slot; 0 = its slot count
    fhir_max_servers: int = 32  # FHIR base URLs tracked (bulkhead + breaker each)
    fhir_breaker_failures: int = 5  # failed exchanges in a row that open the breaker; 0 = off
    fhir_breaker_cooldown: float = 10.0  # seconds before an open breaker lets a probe through
    # longest wait for a slot before answering 503 (also within the request's own deadline)
    admission_wait: float = 1.0
    retry_after: int = 2  # seconds, in the 503's Retry-After
    # Memory: text clipped before matching, and the byte budget of each cache.
    max_name_chars: int = 512
    cache_max_bytes: int = 8 * 1024 * 1024
    # An early error on a request whose body was not read: drain up to this much, else close.
    http_drain_max_bytes: int = 32 * 1024 * 1024
    http_drain_seconds: float = 5.0
    # Request threads of a worker (`cds-service serve --threads` sets it; 0 = unknown):
    # /readyz reports a worker whose threads are all busy as not ready.
    worker_threads: int = 0
    # Slow clients (`cds-service serve` reads each request whole before a thread takes it):
    http_header_timeout: float = 10.0  # seconds for the request line and headers
    http_body_min_rate: int = 32 * 1024  # bytes/s a body must average after the grace
    http_body_grace: float = 5.0  # seconds before a body's rate is checked
    # Memory: request bytes one worker holds at once (0 = the body limit: one large body at a
    # time, small calls beside a smaller one; a request alone is always admitted); a request
    # that does not fit waits up to http_inflight_wait seconds, then gets 503 + Retry-After.
    worker_inflight_bytes: int = 0
    http_inflight_wait: float = 10.0
    # Inbound limits.
    max_body_bytes: int = 16 * 1024 * 1024
    max_bundle_entries: int = 20_000
    # Feedback: items per POST (413 beyond) and the body size refused before it is read.
    feedback_max_items: int = 100
    feedback_max_bytes: int = 1024 * 1024
    # Browsers (the CDS Hooks sandbox) call the service directly. Empty = the default: with
    # CDS_AUTH=off the CDS Hooks sandbox and pages on loopback only, with CDS_AUTH=required
    # any origin (the bearer token is the credential); "*" = any; "null" never (http/cors.py).
    cors_origins: tuple[str, ...] = ()
    # A fixed clinical "today" (ISO date) for demos and reproducible evaluation; empty = clock.
    today: str = ""
    log_level: str = "INFO"
    mme_table: str = "cdc-2022"  # or "cdc-2016"
    rule_settings_file: str = ""  # JSON overlay of rules/settings.json
    # Authentication of CDS clients (CDS Hooks "Trusting CDS Clients").
    auth: str = "off"  # or "required"
    public_base_url: str = ""  # e.g. https://cds.example.org (the JWT aud is built from it)
    trusted_issuers_file: str = ""
    auth_leeway: float = 60.0
    # Longest accepted token lifetime (exp - iat, plus the leeway); CDS Hooks suggests 5 min.
    auth_max_token_lifetime: float = 300.0
    # Host names /analytics answers to (a DNS-rebinding page reaches loopback under its own).
    analytics_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]", "::1")
    jwks_timeout: float = 2.0
    # A folder of newer value set expansions (`cds-service terminology import`), loaded at
    # start-up in place of the packaged set with the same url; empty = packaged sets only.
    valuesets_dir: str = ""
    # Store, card log and operations.
    # "" = the embedded default: SQLite in data_dir; or sqlite:///path; or postgresql://...
    database_url: str = field(default="", repr=False)  # may hold a password
    data_dir: str = ""  # "" = $XDG_DATA_HOME/opioid-lbp-cds (~/.local/share/opioid-lbp-cds)
    database_timeout: float = 2.0  # seconds to connect (PostgreSQL) or wait for a lock (SQLite)
    pseudonym_key: str = field(default="", repr=False)  # secret for the patient key HMAC
    pseudonym_key_file: str = ""
    # keys the ring held before CDS_PSEUDONYM_KEY, oldest first, comma-separated (rotation)
    pseudonym_previous_keys: str = field(default="", repr=False)
    retention_days: int = 365
    card_log: bool = True
    card_log_queue: int = 10_000
    # One decision, one answer (docs/cards.md): an order card answered through feedback is not
    # shown again for the same unchanged draft in the same encounter. Per site; on by default.
    one_answer_per_decision: bool = True
    ops_allow: tuple[str, ...] = ("loopback",)  # who may call /metrics, /healthz, /readyz
    ops_port: int = 0  # a separate port (same --host) where those endpoints answer anyone
    prometheus_multiproc_dir: str = ""
    # another folder of backtest runs for the /analytics picker (besides <data dir>/backtests)
    backtests_dir: str = ""
    # Governance analytics (/analytics): "" = loopback callers only; set = every caller must
    # present this token (HTTP Basic password or Bearer), loopback included.
    analytics_token: str = field(default="", repr=False)

    def clinical_today(self) -> dt.date:
        if self.today:
            return dt.date.fromisoformat(self.today)
        return dt.datetime.now(dt.UTC).date()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known})


ENV_NAMES: dict[str, str] = {
    "one_answer_per_decision": "CDS_ONE_ANSWER_PER_DECISION",
    "fhir_allowlist": "CDS_FHIR_ALLOWLIST",
    "fhir_allow_http": "CDS_FHIR_ALLOW_HTTP",
    "fhir_connect_timeout": "CDS_FHIR_CONNECT_TIMEOUT",
    "fhir_read_timeout": "CDS_FHIR_READ_TIMEOUT",
    "fhir_deadline": "CDS_FHIR_DEADLINE",
    "fhir_max_pages": "CDS_FHIR_MAX_PAGES",
    "fhir_max_response_bytes": "CDS_FHIR_MAX_RESPONSE_BYTES",
    "fhir_max_medication_fetches": "CDS_FHIR_MAX_MEDICATION_FETCHES",
    "fhir_server_max_exchanges": "CDS_FHIR_SERVER_MAX_EXCHANGES",
    "fhir_server_max_calls": "CDS_FHIR_SERVER_MAX_CALLS",
    "fhir_max_fallback_calls": "CDS_FHIR_MAX_FALLBACK_CALLS",
    "fhir_server_max_waiting": "CDS_FHIR_SERVER_MAX_WAITING",
    "fhir_max_servers": "CDS_FHIR_MAX_SERVERS",
    "fhir_breaker_failures": "CDS_FHIR_BREAKER_FAILURES",
    "fhir_breaker_cooldown": "CDS_FHIR_BREAKER_COOLDOWN",
    "admission_wait": "CDS_ADMISSION_WAIT",
    "retry_after": "CDS_RETRY_AFTER",
    "max_name_chars": "CDS_MAX_NAME_CHARS",
    "cache_max_bytes": "CDS_CACHE_MAX_BYTES",
    "http_drain_max_bytes": "CDS_HTTP_DRAIN_MAX_BYTES",
    "http_drain_seconds": "CDS_HTTP_DRAIN_SECONDS",
    "max_body_bytes": "CDS_MAX_BODY_BYTES",
    "http_header_timeout": "CDS_HTTP_HEADER_TIMEOUT",
    "http_body_min_rate": "CDS_HTTP_BODY_MIN_RATE",
    "http_body_grace": "CDS_HTTP_BODY_GRACE",
    "worker_inflight_bytes": "CDS_WORKER_INFLIGHT_BYTES",
    "http_inflight_wait": "CDS_HTTP_INFLIGHT_WAIT",
    "max_bundle_entries": "CDS_MAX_BUNDLE_ENTRIES",
    "feedback_max_items": "CDS_FEEDBACK_MAX_ITEMS",
    "feedback_max_bytes": "CDS_FEEDBACK_MAX_BYTES",
    "cors_origins": "CDS_CORS_ORIGINS",
    "today": "CDS_TODAY",
    "log_level": "CDS_LOG_LEVEL",
    "mme_table": "CDS_MME_TABLE",
    "rule_settings_file": "CDS_RULE_SETTINGS_FILE",
    "auth": "CDS_AUTH",
    "public_base_url": "CDS_PUBLIC_BASE_URL",
    "trusted_issuers_file": "CDS_TRUSTED_ISSUERS_FILE",
    "auth_leeway": "CDS_AUTH_LEEWAY",
    "auth_max_token_lifetime": "CDS_AUTH_MAX_TOKEN_LIFETIME",
    "analytics_hosts": "CDS_ANALYTICS_HOSTS",
    "jwks_timeout": "CDS_JWKS_TIMEOUT",
    "valuesets_dir": "CDS_VALUESETS_DIR",
    "database_url": "CDS_DATABASE_URL",
    "data_dir": "CDS_DATA_DIR",
    "database_timeout": "CDS_DATABASE_TIMEOUT",
    "pseudonym_key": "CDS_PSEUDONYM_KEY",
    "pseudonym_key_file": "CDS_PSEUDONYM_KEY_FILE",
    "pseudonym_previous_keys": "CDS_PSEUDONYM_PREVIOUS_KEYS",
    "retention_days": "CDS_RETENTION_DAYS",
    "card_log": "CDS_CARD_LOG",
    "card_log_queue": "CDS_CARD_LOG_QUEUE",
    "ops_allow": "CDS_OPS_ALLOW",
    "ops_port": "CDS_OPS_PORT",
    "prometheus_multiproc_dir": "PROMETHEUS_MULTIPROC_DIR",
    "analytics_token": "CDS_ANALYTICS_TOKEN",
    "backtests_dir": "CDS_BACKTESTS_DIR",
}


def default_data_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where the embedded database and the generated pseudonym key live by default."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(
        Path(env.get("HOME") or Path.home()) / ".local" / "share"
    )
    return str(Path(base) / "opioid-lbp-cds")


MIN_ANALYTICS_TOKEN = 16


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
        raise ConfigError(
            "CDS_AUTH=required needs CDS_PUBLIC_BASE_URL and CDS_TRUSTED_ISSUERS_FILE"
        )
    if any(origin.strip().lower() == "null" for origin in config.cors_origins):
        raise ConfigError(
            "CDS_CORS_ORIGINS: 'null' is never allowed (sandboxed frames and local files send "
            "it: any page can)"
        )
    if config.mme_table not in {"cdc-2022", "cdc-2016"}:
        raise ConfigError(f"CDS_MME_TABLE: {config.mme_table!r} is not cdc-2022 or cdc-2016")
    if config.valuesets_dir and not os.path.isdir(config.valuesets_dir):
        raise ConfigError(
            f"CDS_VALUESETS_DIR: {config.valuesets_dir!r} is not a folder "
            "(create it, or unset the variable to use the packaged value sets)"
        )
    for name in ("fhir_server_max_calls", "fhir_max_fallback_calls", "fhir_server_max_waiting"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{ENV_NAMES[name]}: must be 0 (automatic) or more")
    if config.retention_days < 1:
        raise ConfigError("CDS_RETENTION_DAYS must be at least 1")
    if config.card_log_queue < 1:
        raise ConfigError("CDS_CARD_LOG_QUEUE must be at least 1")
    for entry in config.ops_allow:
        if entry not in {"loopback", "*"}:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(
                    f"CDS_OPS_ALLOW: {entry!r} is not loopback, * or an address or network"
                ) from None
    if config.analytics_token and len(config.analytics_token) < MIN_ANALYTICS_TOKEN:
        raise ConfigError(
            f"CDS_ANALYTICS_TOKEN: use at least {MIN_ANALYTICS_TOKEN} characters "
            "(e.g. `openssl rand -hex 24`)"
        )
    if not 0 <= config.ops_port <= 65535:
        raise ConfigError("CDS_OPS_PORT must be a port number (0 = none)")
    if not config.data_dir:
        config = replace(config, data_dir=default_data_dir(env))
    for name in (
        "fhir_connect_timeout",
        "fhir_read_timeout",
        "fhir_deadline",
        "fhir_server_max_exchanges",
        "max_name_chars",
        "cache_max_bytes",
        "feedback_max_items",
        "feedback_max_bytes",
        "http_header_timeout",
        "http_body_min_rate",
        "http_inflight_wait",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{ENV_NAMES[name]}: must be greater than 0")
    if config.today:
        try:
            dt.date.fromisoformat(config.today)
        except ValueError:
            raise ConfigError(f"CDS_TODAY: {config.today!r} is not an ISO date") from None
    return config
