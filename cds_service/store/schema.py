"""The store's tables (SQLAlchemy Core), the same for SQLite and PostgreSQL.

Nothing here identifies a patient: the card log holds a keyed HMAC of (fhirServer, patient
id), never the id; suggestion labels are stored as their templates ("Remove the draft {drug}
order"), never with the drug filled in. Alembic migrations (migrations/versions/) create and
change these tables; this module is what the code reads and writes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()

# (issuer, jti) of every accepted EHR token, until the token expires.
replay_cache = Table(
    "replay_cache",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(128), primary_key=True),  # the jti, or "sha256:<hex>" when longer
    Column("expires_at", Float, nullable=False),  # epoch seconds (exp + leeway)
    Index("ix_replay_cache_expires_at", "expires_at"),
)

# Every card returned by a hook call.
issued_card = Table(
    "issued_card",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("rule_id", String(128), nullable=False),
    Column("service_id", String(128), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("patient_key", String(64), nullable=False),  # HMAC-SHA256, hex
    # [{"uuid": ..., "key": template key or null, "label": template label or null}, ...]
    Column("suggestions", JSON, nullable=False),
    # a silent-mode rule's card: logged for governance review, never returned to the EHR
    Column("silent", Boolean, nullable=False, server_default=false()),
    # the other rules whose concern this card also answers ("say it once"), e.g. ["first-..."]
    Column("covers", JSON, nullable=False, server_default=text("'[]'")),
    Index("ix_issued_card_issued_at", "issued_at"),
    Index("ix_issued_card_rule_id", "rule_id"),
)

# One row per rule a card counts for in the report: the card's own rule (covered false) and
# each rule it covers (covered true).
card_rule = Table(
    "card_rule",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("rule_id", String(128), primary_key=True),
    Column("covered", Boolean, nullable=False),
    Index("ix_card_rule_rule_id", "rule_id"),
)

# Hook calls answered 200, per service and UTC day (the denominator of alert rates).
hook_call_count = Table(
    "hook_call_count",
    metadata,
    Column("day", Date, primary_key=True),
    Column("service_id", String(128), primary_key=True),
    Column("calls", Integer, nullable=False),
    Column("calls_with_cards", Integer, nullable=False),
)

# CDS Hooks feedback, once per distinct answer to a card (card uuid, answer_key).
feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_uuid", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("service_id", String(128), nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_reason", String(128), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The rule of the issued card; null with card_issued false for a uuid never issued here.
    Column("rule_id", String(128), nullable=True),
    Column("card_issued", Boolean, nullable=False),
    # digest of the whole answer (outcome, timestamp, reason, suggestions): a resent item is
    # stored once, a different later answer to the same card is a new row (migration 0005)
    Column("answer_key", String(64), nullable=False, server_default=text("''")),
    UniqueConstraint("card_uuid", "answer_key", name="uq_feedback_card_answer"),
    Index("ix_feedback_received_at", "received_at"),
    Index("ix_feedback_card_uuid", "card_uuid"),
)
