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
import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, exists, false, select, text, update

from cds_service.config import Config, ConfigError
from cds_service.store import migrate
from cds_service.store.card_writes import CardLogWrites, stdlib_json_text
from cds_service.store.cardlog import SuggestionLabels
from cds_service.store.engine import (
    UNAVAILABLE,
    create_private,
    database_url,
    file_lock_upgrade,
    in_memory,
    make_engine,
    owner_only,
)
from cds_service.store.errors import StoreSchemaError, StoreUnavailable
from cds_service.store.keys import configured_pseudonymizer
from cds_service.store.maintenance import Maintenance
from cds_service.store.reads import Reads
from cds_service.store.schema import card_decision, feedback, issued_card, replay_cache

log = logging.getLogger("cds_service.store")

FEEDBACK_BATCH = 25  # feedback items per transaction
FEEDBACK_ATTEMPTS = 3  # tries of one feedback batch before the POST is answered 503


def answer_key(outcome: str, timestamp: str, reason: str, accepted: Sequence[str]) -> str:
    """The digest that identifies one answer to a card (feedback's uniqueness)."""
    canonical = "\x1f".join([outcome, timestamp, reason, *sorted(accepted)])
    return hashlib.sha256(canonical.encode()).hexdigest()


_ANSWER_STATEMENTS = 16  # statements kept for up to this many keys per call


def _jti_key(jti: str) -> str:
    if len(jti) <= 128:
        return jti
    return "sha256:" + hashlib.sha256(jti.encode()).hexdigest()


class Store(CardLogWrites, Maintenance, Reads):
    """Replay cache, card log and feedback. Methods raise StoreUnavailable when the database
    cannot be used; nothing here logs data, only operation names and error types."""

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
        self.close_hot_connections()
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
        # on the thread's own connection (autocommit: the one statement is atomic by itself)
        return bool(self._run_hot("replay", self._claim, params, commit=True))

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
        # one INSERT of every link (compiled once per number of cards, like the answers
        # query): on the thread's own SQLite connection, in autocommit, it is a single
        # statement, atomic by itself, with no BEGIN and COMMIT round of its own; every
        # call into SQLite lets other threads take the GIL and costs a wait to get it back
        links = list(decisions.items())
        count = len(links)
        prepared = self._link_decisions.get(count)
        if prepared is None:
            issued_type = card_decision.c.issued_at.type
            prepared = self._prepared(
                self._insert(card_decision)
                .values(
                    [
                        {
                            "card_uuid": bindparam(f"link_card_uuid_{i}"),
                            "decision_key": bindparam(f"link_decision_key_{i}"),
                            "issued_at": bindparam(f"link_issued_at_{i}", type_=issued_type),
                            "key_id": bindparam(f"link_key_id_{i}"),
                        }
                        for i in range(count)
                    ]
                )
                .on_conflict_do_nothing(index_elements=["card_uuid"])
            )
            if count <= _ANSWER_STATEMENTS:
                self._link_decisions[count] = prepared
        key_id = self.pseudonymizer.key_id
        named: dict[str, Any] = {}
        for i, (card_uuid, key) in enumerate(links):
            named[f"link_card_uuid_{i}"] = card_uuid[:64]
            named[f"link_decision_key_{i}"] = key[:64]
            named[f"link_issued_at_{i}"] = issued_at
            named[f"link_key_id_{i}"] = key_id
        self._run_hot("decisions", prepared, named, commit=True)

    def decision_key(self, request: Any, rule_id: str, drafts: tuple[str, ...]) -> str:
        """The decision an order card asks for, as a digest (no identifier): the patient's
        keyed HMAC, the encounter (where the EHR sends none, as the CDS Hooks sandbox does:
        the same user on the same UTC day), the rule and the draft orders' signatures."""
        return self.decision_keys(request, [(rule_id, drafts)])[0]

    def decision_keys(
        self, request: Any, findings: Sequence[tuple[str, tuple[str, ...]]]
    ) -> list[str]:
        """decision_key of each (rule id, drafts) of one call, the patient's HMAC and the
        scope made once for all of them."""
        patient = self.pseudonymizer.base_patient_key(
            str(request.fhir_server or "")[:2048], str(request.patient_id)[:1024]
        )
        if request.encounter_id:
            scope = f"encounter:{request.encounter_id}"
        else:
            scope = f"user-day:{request.user_id}:{dt.datetime.now(dt.UTC).date().isoformat()}"
        keys = []
        for rule_id, drafts in findings:
            # json.dumps' text, made by the card log's reusable encoder (the same digest)
            text = stdlib_json_text([patient, scope, rule_id, sorted(drafts)])
            # finished through the key ring like every stored pseudonym (db rotate-key
            # re-keys it)
            keys.append(self.pseudonymizer.finish(hashlib.sha256(text.encode()).hexdigest()))
        return keys

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
        return {row[0] for row in self._run_hot("answers", prepared, named)}

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


def open_store(config: Config, labels: SuggestionLabels | None = None) -> Store:
    """Build the store once at start-up (see the module docstring for what it does)."""
    from cds_service.cards import cards_dir

    url = database_url(config)
    directory: Path | None = None
    if url.get_backend_name() == "sqlite" and not in_memory(url):
        directory = Path(str(url.database)).parent
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"CDS_DATA_DIR: cannot create {directory} ({exc.strerror})") from None
        owner_only(directory, 0o700)
        create_private(Path(str(url.database)))
    pseudonymizer = configured_pseudonymizer(config, url, directory)
    engine = make_engine(url, config.database_timeout, threads=config.worker_threads)
    if url.get_backend_name() == "sqlite":
        if directory is None:
            migrate.upgrade(engine)
        else:
            file_lock_upgrade(engine, directory / ".migrate.lock")
    else:
        try:
            current, head = migrate.revisions(engine)
        except UNAVAILABLE:
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
                owner_only(path, 0o600)
    if not in_memory(url):
        engine.dispose()  # no connection is carried into forked gunicorn workers
    return Store(
        engine,
        pseudonymizer,
        labels or SuggestionLabels.from_cards_dir(cards_dir()),
        config.retention_days,
        embedded=directory is not None,
    )
