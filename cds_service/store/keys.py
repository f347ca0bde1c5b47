"""The pseudonym key ring the configuration names (CDS_PSEUDONYM_KEY, CDS_PSEUDONYM_KEY_FILE,
or the key generated beside the embedded SQLite file), checked before any key is used.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy.engine import URL

from cds_service.config import Config, ConfigError
from cds_service.store.engine import database_url, in_memory
from cds_service.store.pseudonym import (
    KEY_FILE_NAME,
    MIN_KEY_BYTES,
    WELL_KNOWN_KEYS,
    Pseudonymizer,
    generated_ring,
    read_key_ring,
)


def _checked_key(key: bytes | tuple[bytes, ...], name: str) -> Pseudonymizer:
    ring = (key,) if isinstance(key, bytes) else key
    for each in ring:
        if len(each) < MIN_KEY_BYTES:
            raise ConfigError(
                f"{name}: the pseudonym key must be at least {MIN_KEY_BYTES} bytes "
                "(e.g. `openssl rand -hex 32`)"
            )
        if each in WELL_KNOWN_KEYS:
            raise ConfigError(
                f"{name}: this is the example key published with the service; generate your "
                "own (e.g. `openssl rand -hex 32`)"
            )
    if len(set(ring)) != len(ring):
        raise ConfigError(f"{name}: the key ring holds the same key twice")
    return Pseudonymizer(ring)


def key_file_path(config: Config) -> Path | None:
    """The file the key ring is read from (CDS_PSEUDONYM_KEY_FILE, or the generated key of
    the embedded default), None when the key comes from the environment or is in memory."""
    if config.pseudonym_key:
        return None
    if config.pseudonym_key_file:
        return Path(config.pseudonym_key_file)
    url = database_url(config)
    if in_memory(url) or url.get_backend_name() != "sqlite":
        return None
    return Path(str(url.database)).parent / KEY_FILE_NAME


def pseudonymizer_for(config: Config) -> Pseudonymizer:
    """The configured key ring, for tools that do not open a Store (backtest, rotate-key)."""
    url = database_url(config)
    directory = None
    if url.get_backend_name() == "sqlite" and not in_memory(url):
        directory = Path(str(url.database)).parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return configured_pseudonymizer(config, url, directory)


def configured_pseudonymizer(config: Config, url: URL, directory: Path | None) -> Pseudonymizer:
    if config.pseudonym_key:
        previous = tuple(
            k.strip().encode() for k in config.pseudonym_previous_keys.split(",") if k.strip()
        )
        return _checked_key(
            (*previous, config.pseudonym_key.encode()),
            "CDS_PSEUDONYM_PREVIOUS_KEYS, CDS_PSEUDONYM_KEY" if previous else "CDS_PSEUDONYM_KEY",
        )
    if config.pseudonym_previous_keys:
        raise ConfigError("CDS_PSEUDONYM_PREVIOUS_KEYS is set without CDS_PSEUDONYM_KEY")
    if config.pseudonym_key_file:
        try:
            ring = read_key_ring(Path(config.pseudonym_key_file))
        except OSError as exc:
            raise ConfigError(f"CDS_PSEUDONYM_KEY_FILE: cannot read it ({exc.strerror})") from None
        return _checked_key(ring, "CDS_PSEUDONYM_KEY_FILE")
    if in_memory(url):
        return Pseudonymizer(secrets.token_bytes(32))  # nothing outlives the process
    if url.get_backend_name() != "sqlite" or directory is None:
        raise ConfigError(
            "CDS_DATABASE_URL is shared by several replicas: set "
            "CDS_PSEUDONYM_KEY or CDS_PSEUDONYM_KEY_FILE (the same secret on "
            "every replica)"
        )
    return _checked_key(generated_ring(directory), str(directory / KEY_FILE_NAME))
