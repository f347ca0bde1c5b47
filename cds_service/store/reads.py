"""Store reads for reports and tests: read-only queries in one transaction, and the raw
tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from cds_service.store.engine import StoreEngine, as_dicts
from cds_service.store.schema import feedback, hook_call_count, issued_card, replay_cache


class Reads(StoreEngine):
    """Read-only queries (reports, tests)."""

    # --- reading (reports, tests) ---
    def _rows(self, query: Any) -> list[dict[str, Any]]:
        with self._begin("read") as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def read_many(self, operation: str, queries: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Run read-only queries in one transaction (the report's aggregates)."""
        with self._begin(operation) as connection:
            return [as_dicts(connection.execute(query)) for query in queries]

    def read_tuples(self, operation: str, queries: Sequence[Any]) -> list[list[tuple[Any, ...]]]:
        """Run read-only queries in one transaction, rows as plain tuples (large reads)."""
        with self._begin(operation) as connection:
            return [[tuple(row) for row in connection.execute(query)] for query in queries]

    def issued_cards(self) -> list[dict[str, Any]]:
        return self._rows(select(issued_card).order_by(issued_card.c.issued_at))

    def feedback_items(self) -> list[dict[str, Any]]:
        return self._rows(select(feedback).order_by(feedback.c.id))

    def hook_call_counts(self) -> list[dict[str, Any]]:
        return self._rows(
            select(hook_call_count).order_by(hook_call_count.c.day, hook_call_count.c.service_id)
        )

    def replay_entries(self) -> int:
        with self._begin("read") as connection:
            return len(connection.execute(select(replay_cache.c.jti)).all())
