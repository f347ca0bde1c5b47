"""Shared state in a database: the JWT replay cache, the issued-card log with hook-call counts,
and feedback (see db.py for how the database is chosen, writer.py for the card-log queue)."""

from __future__ import annotations

from cds_service.store.cardlog import CardLogEntry, IssuedCard
from cds_service.store.db import Store, open_store
from cds_service.store.engine import database_url
from cds_service.store.errors import StoreSchemaError, StoreUnavailable
from cds_service.store.writer import CardLogWriter

__all__ = [
    "CardLogEntry",
    "CardLogWriter",
    "IssuedCard",
    "Store",
    "StoreSchemaError",
    "StoreUnavailable",
    "database_url",
    "open_store",
]
