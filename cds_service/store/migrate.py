"""Alembic, driven from code: the migrations ship inside the package (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x0C05_11  # advisory lock: one replica migrates at a time


def alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise RuntimeError("the packaged migrations have no head revision")
    return revision


def revisions(engine: Engine) -> tuple[str | None, str]:
    """(the database's current revision, this release's head)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade in one transaction (PostgreSQL: under an advisory lock, so replicas started
    together take turns; SQLite callers hold a file lock)."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
