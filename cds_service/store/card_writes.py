"""The issued-card log's write: a batch of hook calls and their cards (issued cards, the
rules each card covers, decisions, order calls, day counts) in one transaction, and the
feedback that arrived before its card linked to it."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, DateTime, false, insert, select, update

from cds_service.store.cardlog import CardLogEntry
from cds_service.store.engine import StoreEngine
from cds_service.store.schema import (
    card_decision,
    card_rule,
    feedback,
    hook_call_count,
    issued_card,
    order_call,
)

# json.dumps(value) with the default settings, byte for byte, from one encoder made once (no
# circular-reference check: the values are fresh lists of strings and flat objects; a cycle
# would still fail, with RecursionError)
stdlib_json_text: Callable[[Any], str] = json.JSONEncoder(check_circular=False).encode


def _json_text_or(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A list or object as json.dumps writes it; anything else as SQLAlchemy would."""

    def text(value: Any) -> Any:
        if isinstance(value, (list, dict)):
            return stdlib_json_text(value)
        return process(value)

    return text


_SAMPLE_TIMES = (
    dt.datetime(2026, 12, 7, 10, 30, 5, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    dt.datetime(987, 6, 5, 4, 3, 2, 1),
)


def _sqlite_time_or(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A datetime as SQLite's DateTime conversion writes it ("2026-12-07 10:30:05.123456",
    the zone left out) through the C isoformat, when that gives the conversion's text for
    sample moments (checked once, here); anything else, or another storage format, as
    SQLAlchemy would."""

    def iso(value: Any) -> Any:
        if type(value) is dt.datetime:
            return value.isoformat(" ", "microseconds")[:26]
        return process(value)

    if all(iso(moment) == process(moment) for moment in _SAMPLE_TIMES):
        return iso
    return process  # pragma: no cover - another SQLAlchemy storage format


class CardLogWrites(StoreEngine):
    """The card log's writes (store/writer.py's thread calls them in batches)."""

    def _insert_many(
        self, connection: Connection, name: str, build: Callable[[], Any], rows: list[Any]
    ) -> None:
        """One insert of many rows in the connection's transaction: compiled once per
        statement (with the rows' columns; every batch gives the same ones), the dialect's
        value conversions applied as SQLAlchemy would, and run as the driver's executemany
        (SQLAlchemy's own executemany rebuilds each row's parameters, ~10x the CPU, on the
        writer thread that competes with request threads for the GIL). Database errors
        come wrapped by SQLAlchemy, as from execute()."""
        prepared = self._many_prepared.get(name)
        if prepared is None:
            compiled = build().compile(dialect=self.engine.dialect, column_keys=list(rows[0]))
            processors = dict(getattr(compiled, "_bind_processors", None) or {})
            for bind, process in processors.items():
                processors[bind] = self._cheaper(compiled.binds[bind].type, process)
            prepared = (
                str(compiled),
                bool(compiled.positional),
                list(compiled.positiontup or []),
                processors,
            )
            self._many_prepared[name] = prepared
        params = self._params(prepared, rows)
        connection.exec_driver_sql(prepared[0], [tuple(p) if prepared[1] else p for p in params])

    def _cheaper(self, column_type: Any, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The same conversion of a card-log value, cheaper on the writer thread: on SQLite a
        JSON column's text made by one reusable C encoder (the text json.dumps gives, which
        SQLAlchemy's JSON type stores), a DateTime's text made once per distinct moment in a
        row after row (every card of a call has the same one)."""
        if self.dialect != "sqlite":
            return process
        if isinstance(column_type, JSON) and self.engine.dialect._json_serializer is None:
            return _json_text_or(process)
        if isinstance(column_type, DateTime):
            return _sqlite_time_or(process)
        return process

    # --- card log ---
    def write_card_log(self, entries: Sequence[CardLogEntry]) -> int:
        """Write a batch of hook calls and their cards in one transaction; returns the number
        of cards written. Feedback that arrived before its card was logged gets linked."""
        cards = [card for entry in entries for card in entry.cards]
        key_id = self.pseudonymizer.key_id  # the ring the entries' keys were made under
        calls: Counter[tuple[dt.date, str]] = Counter()
        with_cards: Counter[tuple[dt.date, str]] = Counter()
        for entry in entries:
            calls[(entry.call.day, entry.call.service_id)] += 1
            with_cards[(entry.call.day, entry.call.service_id)] += int(entry.call.with_cards)
        with self._begin("card_log") as connection:
            if cards:
                self._insert_many(
                    connection,
                    "issued_card",
                    lambda: self._insert(issued_card).on_conflict_do_nothing(
                        index_elements=["card_uuid"]
                    ),
                    [
                        {
                            "card_uuid": c.card_uuid,
                            "rule_id": c.rule_id,
                            "service_id": c.service_id,
                            "hook": c.hook,
                            "indicator": c.indicator,
                            "issued_at": c.issued_at,
                            "patient_key": c.patient_key,
                            "suggestions": [dict(s) for s in c.suggestions],
                            "silent": c.silent,
                            "covers": list(c.covers),
                            "decision_key": c.decision_key,
                            "variant": c.variant,
                            "prescriber_key": c.prescriber_key,
                            "knowledge_version": c.knowledge_version,
                            "settings_digest": c.settings_digest,
                            "key_id": key_id,
                        }
                        for c in cards
                    ],
                )
                self._insert_many(
                    connection,
                    "card_rule",
                    lambda: self._insert(card_rule).on_conflict_do_nothing(
                        index_elements=["card_uuid", "rule_id"]
                    ),
                    [
                        {"card_uuid": c.card_uuid, "rule_id": rule, "covered": rule != c.rule_id}
                        for c in cards
                        for rule in (c.rule_id, *c.covers)
                    ],
                )
            decided = [c for c in cards if c.decision]
            if decided:
                self._insert_many(
                    connection,
                    "card_decision",
                    lambda: self._insert(card_decision).on_conflict_do_nothing(
                        index_elements=["card_uuid"]
                    ),
                    [
                        {
                            "card_uuid": c.card_uuid,
                            "decision_key": c.decision[:64],
                            "issued_at": c.issued_at,
                            "key_id": key_id,
                        }
                        for c in decided
                    ],
                )
            orders = [e.call.order for e in entries if e.call.order is not None]
            if orders:
                self._insert_many(
                    connection,
                    "order_call",
                    lambda: insert(order_call),
                    [
                        {
                            "called_at": o.called_at,
                            "service_id": o.service_id,
                            "hook": o.hook,
                            "decision_key": o.decision_key,
                            "opioid": o.opioid,
                            "encounter_key": o.encounter_key,
                            "decision_drafts": list(o.decision_drafts),
                            "draft_keys": list(o.draft_keys),
                            "classes": list(o.classes),
                            "prescriber_key": o.prescriber_key,
                            "key_id": key_id,
                        }
                        for o in orders
                    ],
                )
            for (day, service_id), count in sorted(calls.items()):
                stmt = self._insert(hook_call_count).values(
                    day=day,
                    service_id=service_id,
                    calls=count,
                    calls_with_cards=with_cards[(day, service_id)],
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["day", "service_id"],
                    set_={
                        "calls": hook_call_count.c.calls + stmt.excluded.calls,
                        "calls_with_cards": hook_call_count.c.calls_with_cards
                        + stmt.excluded.calls_with_cards,
                    },
                )
                connection.execute(stmt)
            if cards:
                rule = (
                    select(issued_card.c.rule_id)
                    .where(issued_card.c.card_uuid == feedback.c.card_uuid)
                    .scalar_subquery()
                )
                connection.execute(
                    update(feedback)
                    .where(
                        feedback.c.card_issued == false(),
                        feedback.c.card_uuid.in_([c.card_uuid for c in cards]),
                    )
                    .values(card_issued=True, rule_id=rule)
                )
        return len(cards)
