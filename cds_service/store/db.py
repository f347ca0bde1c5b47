"""The store: one small interface over SQLite (embedded default) or PostgreSQL.

`open_store(config)` picks the database from CDS_DATABASE_URL:
- "" (default): a SQLite file `cds.sqlite3` in CDS_DATA_DIR, created on first start, in WAL
  mode, upgraded to the current schema on start (under a file lock, so gunicorn workers and
  several processes sharing the directory agree);
- `sqlite:///path` (a file) or `sqlite://` (in memory, one process: `cds-service evaluate`);
- `postgresql://user:pass@host:port/db` as given (psycopg 3 drives it); the schema is
  upgraded with `cds-service db upgrade`, and a server behind the current schema refuses to
  start.

Every write that must hold across processes is one atomic statement: the replay cache
claims (issuer, jti) with INSERT ... ON CONFLICT, feedback is inserted once per (card uuid,
outcome, outcomeTimestamp) with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from cds_service.config import Config, ConfigError, default_data_dir
from cds_service.store import migrate
from cds_service.store.cardlog import CardLogEntry, SuggestionLabels
from cds_service.store.errors import StoreSchemaError, StoreUnavailable
from cds_service.store.pseudonym import (
    KEY_FILE_NAME,
    MIN_KEY_BYTES,
    WELL_KNOWN_KEYS,
    Pseudonymizer,
    generated_ring,
    read_key_ring,
)
from cds_service.store.schema import (
    card_decision,
    card_rule,
    feedback,
    hook_call_count,
    issued_card,
    order_call,
    replay_cache,
)

log = logging.getLogger("cds_service.store")

DB_FILE_NAME = "cds.sqlite3"
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


def database_url(config: Config) -> URL:
    """The SQLAlchemy URL for the configured database (postgresql:// -> psycopg 3)."""
    raw = config.database_url.strip()
    if not raw:
        directory = Path(config.data_dir or default_data_dir())
        return URL.create("sqlite", database=str(directory / DB_FILE_NAME))
    try:
        url = make_url(raw)
    except sa_exc.ArgumentError:
        raise ConfigError("CDS_DATABASE_URL: not a database URL") from None
    backend = url.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise ConfigError(
        f"CDS_DATABASE_URL: {backend} is not supported (use postgresql:// or sqlite:///path)"
    )


def _in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: URL, timeout: float, statement_timeout: bool = True) -> Engine:
    if url.get_backend_name() == "sqlite":
        if _in_memory(url):
            return create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        engine = create_engine(
            url,
            pool_size=8,
            max_overflow=8,
            pool_timeout=timeout,
            connect_args={"timeout": timeout, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # the report's sorts (one row per firing, analytics/report.py) stay in memory
            # instead of spilling to temporary files
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {"connect_timeout": max(1, round(timeout))}
    if statement_timeout:
        connect_args["options"] = f"-c statement_timeout={max(1000, int(timeout * 5000))}"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=timeout,
        connect_args=connect_args,
    )


FEEDBACK_BATCH = 25  # feedback items per transaction
FEEDBACK_ATTEMPTS = 3  # tries of one feedback batch before the POST is answered 503


def answer_key(outcome: str, timestamp: str, reason: str, accepted: Sequence[str]) -> str:
    """The digest that identifies one answer to a card (feedback's uniqueness)."""
    canonical = "\x1f".join([outcome, timestamp, reason, *sorted(accepted)])
    return hashlib.sha256(canonical.encode()).hexdigest()


# a statement compiled once: SQL, positional, parameter order, value conversions
_Prepared = tuple[str, bool, list[str], dict[str, Any]]
_ANSWER_STATEMENTS = 16  # statements kept for up to this many keys per call


def _jti_key(jti: str) -> str:
    if len(jti) <= 128:
        return jti
    return "sha256:" + hashlib.sha256(jti.encode()).hexdigest()


class Store:
    """Replay cache, card log and feedback. Methods raise StoreUnavailable when the database
    cannot be used; nothing here logs data, only operation names and error types."""

    def __init__(
        self,
        engine: Engine,
        pseudonymizer: Pseudonymizer,
        labels: SuggestionLabels,
        retention_days: int,
        *,
        embedded: bool,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.pseudonymizer = pseudonymizer
        self.labels = labels
        self.retention_days = retention_days
        self.embedded = embedded
        self._pid = os.getpid()
        self._claim: _Prepared | None = None  # the replay claim, compiled
        self._answered: dict[int, _Prepared] = {}  # the answers query per number of keys
        self._link_decision: _Prepared | None = None  # record_decisions' insert
        dbapi = engine.dialect.loaded_dbapi
        # the driver's own errors, for statements run on a raw DBAPI connection
        self._dbapi_unavailable: tuple[type[BaseException], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
        )
        self._connect_unavailable = (*_UNAVAILABLE, *self._dbapi_unavailable)

    # --- plumbing ---
    def _insert(self, table: Any) -> Any:
        module: Any = postgresql if self.dialect == "postgresql" else sqlite
        return module.insert(table)

    def _check_fork(self) -> None:
        """A gunicorn worker (forked after create_app) must not reuse the parent's
        connections: drop them from this process's pool, leaving the parent's intact."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self.engine.dispose(close=False)

    @contextmanager
    def _begin(self, operation: str) -> Iterator[Connection]:
        self._check_fork()
        try:
            with self.engine.begin() as connection:
                yield connection
        except _UNAVAILABLE as exc:
            error = type(getattr(exc, "orig", None) or exc).__name__
            log.warning("store-unavailable", extra={"reason": operation, "error": error})
            raise StoreUnavailable(f"{operation}: database unavailable") from None

    def ping(self) -> None:
        with self._begin("ping") as connection:
            connection.execute(text("SELECT 1"))

    def write_probe(self) -> None:
        """A real write (one replay-cache row per process, expiring in a minute and purged
        like any expired token), so a full disk or a read-only database is seen as such;
        raises StoreUnavailable when the database cannot take it."""
        now = time.time()
        stmt = self._insert(replay_cache).values(
            issuer="~readiness-probe", jti=str(os.getpid()), expires_at=now + 60
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["issuer", "jti"], set_={"expires_at": stmt.excluded.expires_at}
        )
        with self._begin("write_probe") as connection:
            connection.execute(stmt)

    def close(self) -> None:
        self.engine.dispose()

    # --- replay cache ---
    def claim_jti(self, issuer: str, jti: str, expires_at: float) -> bool:
        """True if (issuer, jti) was not held by an unexpired token and is now claimed until
        `expires_at`; False on a replay. One atomic statement, so exactly one of several
        concurrent claims (any process, any replica) wins."""
        if self._claim is None:
            # built and compiled once (with bound parameters), then run on a pooled DBAPI
            # connection: building it per call cost more than the database round trip, and
            # SQLAlchemy's execution context per call about as much again
            stmt = self._insert(replay_cache).values(
                issuer=bindparam("claim_issuer"),
                jti=bindparam("claim_jti"),
                expires_at=bindparam("claim_expires_at"),
            )
            self._claim = self._prepared(
                stmt.on_conflict_do_update(
                    index_elements=["issuer", "jti"],
                    set_={"expires_at": stmt.excluded.expires_at},
                    where=replay_cache.c.expires_at < bindparam("claim_now"),
                ).returning(replay_cache.c.jti)
            )
        params = {
            "claim_issuer": issuer[:512],
            "claim_jti": _jti_key(jti),
            "claim_expires_at": expires_at,
            "claim_now": time.time(),
        }
        return bool(self._run_raw("replay", self._claim, params, commit=True))

    def _prepared(self, statement: Any) -> _Prepared:
        """A statement compiled for this database once: (SQL, positional, parameter order,
        the dialect's value conversions per parameter, e.g. SQLite's float for a Float)."""
        compiled = statement.compile(dialect=self.engine.dialect)
        processors = dict(getattr(compiled, "_bind_processors", None) or {})
        return (
            str(compiled),
            bool(compiled.positional),
            list(compiled.positiontup or []),
            processors,
        )

    def _run_raw(
        self,
        operation: str,
        prepared: _Prepared,
        named: dict[str, Any] | list[dict[str, Any]],
        commit: bool = False,
    ) -> list[Any]:
        """Run a prepared statement on a pooled DBAPI connection (committed when `commit`);
        its rows. A list of parameter sets runs the statement once per set in one
        transaction and fetches nothing. A database that cannot be reached raises
        StoreUnavailable, as _begin does."""
        sql, positional, order, processors = prepared
        sets = named if isinstance(named, list) else [named]
        if processors:
            sets = [
                {
                    name: processors[name](value) if name in processors else value
                    for name, value in one.items()
                }
                for one in sets
            ]
        params: list[Any] = [[one[name] for name in order] if positional else one for one in sets]
        self._check_fork()
        try:
            raw = self.engine.raw_connection()
        except self._connect_unavailable as exc:  # a pool's connect error comes unwrapped
            self._unavailable(operation, exc)
        try:
            cursor = raw.cursor()
            try:
                rows: list[Any] = []
                if isinstance(named, list):
                    for one_set in params:
                        cursor.execute(sql, one_set)
                else:
                    cursor.execute(sql, params[0])
                    rows = list(cursor.fetchall())
            finally:
                cursor.close()
            if commit:
                raw.commit()
            return rows
        except self._dbapi_unavailable as exc:
            raw.invalidate()  # a broken connection is not returned to the pool
            self._unavailable(operation, exc)
        finally:
            raw.close()  # back to the pool, which rolls back whatever is left open

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
                connection.execute(
                    self._insert(issued_card).on_conflict_do_nothing(index_elements=["card_uuid"]),
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
                connection.execute(
                    self._insert(card_rule).on_conflict_do_nothing(
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
                connection.execute(
                    self._insert(card_decision).on_conflict_do_nothing(
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
                connection.execute(
                    insert(order_call),
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

    # --- feedback ---
    def add_feedback(
        self, service_id: str, items: Sequence[dict[str, Any]], now: dt.datetime | None = None
    ) -> int:
        """Store feedback items; returns how many were new. A resent item (the same answer to
        the same card) is stored once whichever process receives it; a different answer to
        the same card is a new row. Written in short transactions of at most
        FEEDBACK_BATCH items, so no POST holds the write lock for long (a hook call's replay
        claim or the card log waits at most one batch)."""
        received = now or dt.datetime.now(dt.UTC)
        new = 0
        for start in range(0, len(items), FEEDBACK_BATCH):
            batch = items[start : start + FEEDBACK_BATCH]
            rows = [self._feedback_row(service_id, item, received) for item in batch]
            cards = list({row["card_uuid"] for row in rows})
            logged_rule = (
                select(issued_card.c.rule_id)
                .where(issued_card.c.card_uuid == feedback.c.card_uuid)
                .scalar_subquery()
            )
            insert_rows = (
                self._insert(feedback)
                .on_conflict_do_nothing(index_elements=["card_uuid", "answer_key"])
                .returning(feedback.c.id)
            )
            # two statements per transaction, whatever the batch: the write lock is held
            # for as short a time as the database allows; a batch that could not get the
            # lock in time is tried again (resending is idempotent) before the POST is 503
            for attempt in range(FEEDBACK_ATTEMPTS):
                try:
                    new += self._feedback_batch(insert_rows, rows, cards, logged_rule)
                    break
                except StoreUnavailable:
                    # a busy SQLite file frees in milliseconds; an unreachable server does not
                    if not self.embedded or attempt == FEEDBACK_ATTEMPTS - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))
        return new

    # --- one decision, one answer ---
    def record_decisions(self, decisions: Mapping[str, str], issued_at: dt.datetime) -> None:
        """Link each shown order card to the decision it asks for (card uuid -> decision key)
        at once, before the card is answered: feedback that follows the card within
        milliseconds, on any worker, then answers the decision. The card log writes the same
        rows later (a second insert of a card is ignored)."""
        if not decisions:
            return
        if self._link_decision is None:
            # compiled once and run on a pooled DBAPI connection, like the answers query:
            # this insert is on the request thread of every order call that shows a card
            self._link_decision = self._prepared(
                self._insert(card_decision)
                .values(
                    card_uuid=bindparam("link_card_uuid"),
                    decision_key=bindparam("link_decision_key"),
                    issued_at=bindparam("link_issued_at", type_=card_decision.c.issued_at.type),
                    key_id=bindparam("link_key_id"),
                )
                .on_conflict_do_nothing(index_elements=["card_uuid"])
            )
        key_id = self.pseudonymizer.key_id
        self._run_raw(
            "decisions",
            self._link_decision,
            [
                {
                    "link_card_uuid": card_uuid[:64],
                    "link_decision_key": key[:64],
                    "link_issued_at": issued_at,
                    "link_key_id": key_id,
                }
                for card_uuid, key in decisions.items()
            ],
            commit=True,
        )

    def decision_key(self, request: Any, rule_id: str, drafts: tuple[str, ...]) -> str:
        """The decision an order card asks for, as a digest (no identifier): the patient's
        keyed HMAC, the encounter (where the EHR sends none, as the CDS Hooks sandbox does:
        the same user on the same UTC day), the rule and the draft orders' signatures."""
        patient = self.pseudonymizer.base_patient_key(
            str(request.fhir_server or "")[:2048], str(request.patient_id)[:1024]
        )
        if request.encounter_id:
            scope = f"encounter:{request.encounter_id}"
        else:
            scope = f"user-day:{request.user_id}:{dt.datetime.now(dt.UTC).date().isoformat()}"
        text = json.dumps([patient, scope, rule_id, sorted(drafts)])
        # finished through the key ring like every stored pseudonym (db rotate-key re-keys it)
        return self.pseudonymizer.finish(hashlib.sha256(text.encode()).hexdigest())

    def answered(self, keys: Sequence[str]) -> set[str]:
        """The decision keys among `keys` that a clinician has answered: feedback (accepted or
        overridden) exists for a card issued with that key, on any worker or replica."""
        if not keys:
            return set()
        # built and compiled once per number of keys (a call has a handful), then run on a
        # pooled DBAPI connection: building, compiling and SQLAlchemy's execution context
        # per call cost more than the database round trip (no state of its own: the answer
        # is read from the database on every call, whichever worker or replica wrote it)
        count = len(keys)
        prepared = self._answered.get(count)
        if prepared is None:
            prepared = self._prepared(
                select(card_decision.c.decision_key)
                .join(feedback, feedback.c.card_uuid == card_decision.c.card_uuid)
                .where(
                    card_decision.c.decision_key.in_(
                        [bindparam(f"answer_key_{i}") for i in range(count)]
                    )
                )
                .distinct()
            )
            if count <= _ANSWER_STATEMENTS:
                self._answered[count] = prepared
        named = {f"answer_key_{i}": key for i, key in enumerate(keys)}
        return {row[0] for row in self._run_raw("answers", prepared, named)}

    @staticmethod
    def _unavailable(operation: str, exc: BaseException) -> NoReturn:
        error = type(getattr(exc, "orig", None) or exc).__name__
        log.warning("store-unavailable", extra={"reason": operation, "error": error})
        raise StoreUnavailable(f"{operation}: database unavailable") from None

    def _feedback_batch(
        self, insert_rows: Any, rows: list[dict[str, Any]], cards: list[str], logged_rule: Any
    ) -> int:
        with self._begin("feedback") as connection:
            new = len(connection.execute(insert_rows, rows).all())
            connection.execute(
                update(feedback)
                .where(
                    feedback.c.card_uuid.in_(cards),
                    feedback.c.card_issued == false(),
                    exists(
                        select(issued_card.c.card_uuid).where(
                            issued_card.c.card_uuid == feedback.c.card_uuid
                        )
                    ),
                )
                .values(card_issued=True, rule_id=logged_rule)
            )
        return new

    @staticmethod
    def _feedback_row(
        service_id: str, item: dict[str, Any], received: dt.datetime
    ) -> dict[str, Any]:
        accepted = list(item["acceptedSuggestions"])
        return {
            "card_uuid": item["card"],
            "outcome": item["outcome"],
            "outcome_timestamp": item["outcomeTimestamp"],
            "service_id": service_id,
            "accepted_suggestions": accepted,
            "override_reason": item["overrideReason"],
            "received_at": received,
            "rule_id": item.get("rule"),
            "card_issued": False,
            "answer_key": answer_key(
                item["outcome"], item["outcomeTimestamp"], item["overrideReason"], accepted
            ),
        }

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
                    rows = _as_dicts(connection.execute(query))
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

    def _rows(self, query: Any) -> list[dict[str, Any]]:
        with self._begin("read") as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def read_many(self, operation: str, queries: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Run read-only queries in one transaction (the report's aggregates)."""
        with self._begin(operation) as connection:
            return [_as_dicts(connection.execute(query)) for query in queries]

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


def _as_dicts(result: Any) -> list[dict[str, Any]]:
    """Rows as dicts, the column names looked up once per result (not once per row)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


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
    if _in_memory(url) or url.get_backend_name() != "sqlite":
        return None
    return Path(str(url.database)).parent / KEY_FILE_NAME


def pseudonymizer_for(config: Config) -> Pseudonymizer:
    """The configured key ring, for tools that do not open a Store (backtest, rotate-key)."""
    url = database_url(config)
    directory = None
    if url.get_backend_name() == "sqlite" and not _in_memory(url):
        directory = Path(str(url.database)).parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return _pseudonymizer(config, url, directory)


def _pseudonymizer(config: Config, url: URL, directory: Path | None) -> Pseudonymizer:
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
    if _in_memory(url):
        return Pseudonymizer(secrets.token_bytes(32))  # nothing outlives the process
    if url.get_backend_name() != "sqlite" or directory is None:
        raise ConfigError(
            "CDS_DATABASE_URL is shared by several replicas: set "
            "CDS_PSEUDONYM_KEY or CDS_PSEUDONYM_KEY_FILE (the same secret on "
            "every replica)"
        )
    return _checked_key(generated_ring(directory), str(directory / KEY_FILE_NAME))


def _owner_only(path: Path, mode: int) -> None:
    """Make a data directory (0700) or database file (0600) private to its owner, whatever
    mode it had before; a path this process does not own is reported, not fatal."""
    try:
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except OSError as exc:
        log.warning(
            "data-path-mode-not-set", extra={"reason": f"{oct(mode)}: {exc.strerror or exc}"}
        )


def _create_private(path: Path) -> None:
    """Create the SQLite file with mode 0600 before SQLite does (its -wal and -shm files take
    the database file's mode), so it is never readable by others, not even briefly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"CDS_DATA_DIR: cannot create {path} ({exc.strerror})") from None
    os.close(fd)


def file_lock_upgrade(engine: Engine, lock_path: Path) -> None:
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            migrate.upgrade(engine)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(config: Config, labels: SuggestionLabels | None = None) -> Store:
    """Build the store once at start-up (see the module docstring for what it does)."""
    from cds_service.cards import cards_dir

    url = database_url(config)
    directory: Path | None = None
    if url.get_backend_name() == "sqlite" and not _in_memory(url):
        directory = Path(str(url.database)).parent
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"CDS_DATA_DIR: cannot create {directory} ({exc.strerror})") from None
        _owner_only(directory, 0o700)
        _create_private(Path(str(url.database)))
    pseudonymizer = _pseudonymizer(config, url, directory)
    engine = make_engine(url, config.database_timeout)
    if url.get_backend_name() == "sqlite":
        if directory is None:
            migrate.upgrade(engine)
        else:
            file_lock_upgrade(engine, directory / ".migrate.lock")
    else:
        try:
            current, head = migrate.revisions(engine)
        except _UNAVAILABLE:
            log.warning("store-unavailable-at-start", extra={"reason": "schema check"})
        else:
            if current != head:
                engine.dispose()
                raise StoreSchemaError(
                    f"the database schema is at {current or 'nothing'}, this release needs "
                    f"{head}: run `cds-service db upgrade`"
                )
    if directory is not None:
        database = Path(str(url.database))
        for suffix in ("", "-wal", "-shm"):
            path = database.with_name(database.name + suffix)
            if path.exists():
                _owner_only(path, 0o600)
    if not _in_memory(url):
        engine.dispose()  # no connection is carried into forked gunicorn workers
    return Store(
        engine,
        pseudonymizer,
        labels or SuggestionLabels.from_cards_dir(cards_dir()),
        config.retention_days,
        embedded=directory is not None,
    )
