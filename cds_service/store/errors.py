"""The one exception the rest of the service sees from the store."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The database cannot be reached or is locked past the timeout (the message never holds
    data or credentials)."""


class StoreSchemaError(RuntimeError):
    """The database schema is behind this release: run `cds-service db upgrade`."""
