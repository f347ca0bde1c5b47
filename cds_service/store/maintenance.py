"""Store maintenance: the retention purge and key rotation (re-keying every stored pseudonym
to the ring's current key; docs/hardening.md "Key rotation").
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update

from cds_service.store.engine import StoreEngine, as_dicts
from cds_service.store.schema import (
    card_decision,
    card_rule,
    feedback,
    hook_call_count,
    issued_card,
    order_call,
    replay_cache,
)

# Tables holding keyed pseudonyms: (table, single-key columns, JSON-list-of-keys columns).
_KEYED: tuple[tuple[Any, tuple[str, ...], tuple[str, ...]], ...] = (
    (issued_card, ("patient_key", "decision_key", "prescriber_key"), ()),
    (card_decision, ("decision_key",), ()),
    (
        order_call,
        ("decision_key", "encounter_key", "prescriber_key"),
        ("decision_drafts", "draft_keys"),
    ),
)


class Maintenance(StoreEngine):
    """Retention and key rotation."""

    # --- retention ---
    def purge(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Delete card-log rows, day counts and feedback older than the retention period,
        and replay-cache entries whose token has expired."""
        current = now or dt.datetime.now(dt.UTC)
        cutoff = current - dt.timedelta(days=self.retention_days)
        with self._begin("purge") as connection:
            old_cards = select(issued_card.c.card_uuid).where(issued_card.c.issued_at < cutoff)
            connection.execute(delete(card_rule).where(card_rule.c.card_uuid.in_(old_cards)))
            connection.execute(delete(card_decision).where(card_decision.c.issued_at < cutoff))
            return {
                "issued_card": connection.execute(
                    delete(issued_card).where(issued_card.c.issued_at < cutoff)
                ).rowcount,
                "feedback": connection.execute(
                    delete(feedback).where(feedback.c.received_at < cutoff)
                ).rowcount,
                "order_call": connection.execute(
                    delete(order_call).where(order_call.c.called_at < cutoff)
                ).rowcount,
                "hook_call_count": connection.execute(
                    delete(hook_call_count).where(hook_call_count.c.day < cutoff.date())
                ).rowcount,
                "replay_cache": connection.execute(
                    delete(replay_cache).where(replay_cache.c.expires_at < current.timestamp())
                ).rowcount,
            }

    # --- reading (reports, tests) ---
    def rotate_keys(self, batch: int = 500) -> dict[str, int]:
        """Bring every stored pseudonym to the current key of the ring (docs/hardening.md
        "Key rotation"): each row written under an earlier ring state (its key_id, NULL
        meaning the ring's first key) is re-keyed from its stored value, in transactions of
        at most `batch` rows. Idempotent and safe beside a running service (which only
        inserts). Returns rows re-keyed per table, and rows whose key id is not in the ring
        (left as they are, counted under "unknown")."""
        current = self.pseudonymizer.key_id
        done: dict[str, int] = {}
        unknown = 0
        for table, scalars, lists in _KEYED:
            pk = table.c.card_uuid if "card_uuid" in table.c else table.c.id
            stale = or_(table.c.key_id.is_(None), table.c.key_id != current)
            columns = [pk, table.c.key_id, *(table.c[c] for c in (*scalars, *lists))]
            after: Any = None
            count = 0
            while True:
                query = select(*columns).where(stale).order_by(pk).limit(batch)
                if after is not None:
                    query = query.where(pk > after)
                with self._begin("rotate_keys") as connection:
                    rows = as_dicts(connection.execute(query))
                    if not rows:
                        break
                    after = rows[-1][pk.name]
                    changes = []
                    for row in rows:
                        new = self._rekeyed(row, scalars, lists)
                        if new is None:
                            unknown += 1
                            continue
                        changes.append({"b_pk": row[pk.name], "b_old": row["key_id"], **new})
                    if changes:
                        old = table.c.key_id
                        connection.execute(
                            update(table)
                            .where(pk == bindparam("b_pk"))
                            .where(or_(old == bindparam("b_old"), old.is_(None)))
                            .values(
                                key_id=current,
                                **{c: bindparam(f"b_{c}") for c in (*scalars, *lists)},
                            ),
                            changes,
                        )
                    count += len(changes)
            done[table.name] = count
        done["unknown"] = unknown
        return done

    def _rekeyed(
        self, row: dict[str, Any], scalars: tuple[str, ...], lists: tuple[str, ...]
    ) -> dict[str, Any] | None:
        keys = self.pseudonymizer
        new: dict[str, Any] = {}
        if row["key_id"] is not None and row["key_id"] not in keys.key_ids:
            return None
        for column in scalars:
            value = row[column]
            new[f"b_{column}"] = None if value is None else keys.rekey_from(row["key_id"], value)
        for column in lists:
            values = row[column] or []
            new[f"b_{column}"] = [keys.rekey_from(row["key_id"], str(v)) for v in values]
        return new

    def key_ids(self) -> dict[str, int]:
        """Rows per key id (NULL as "none") across the keyed tables: more than the current
        id means `cds-service db rotate-key` has rows to re-key."""
        counts: Counter[str] = Counter()
        with self._begin("read") as connection:
            for table, _, _ in _KEYED:
                query = select(table.c.key_id, func.count()).group_by(table.c.key_id)
                for row in connection.execute(query):
                    counts[str(row[0] or "none")] += int(row[1])
        return dict(counts)
