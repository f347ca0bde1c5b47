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
    # Governance (migration 0003), null on cards logged before it:
    # the ordering decision (keyed HMAC of server, patient, encounter and the drafts it is
    # about: order-select and order-sign of the same draft share it); null on patient-view
    Column("decision_key", String(64), nullable=True),
    Column("variant", String(64), nullable=True),  # the card template's variant
    Column("prescriber_key", String(64), nullable=True),  # keyed HMAC of context.userId
    Column("knowledge_version", String(64), nullable=True),  # value sets in force
    Column("settings_digest", String(64), nullable=True),  # digest of the rule's settings
    # the pseudonym key ring state its keys were made under (NULL: before key ids, the
    # ring's first key); `cds-service db rotate-key` brings rows to the current key
    Column("key_id", String(16), nullable=True),
    Index("ix_issued_card_issued_at", "issued_at"),
    Index("ix_issued_card_decision_key", "decision_key"),
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

# One decision, one answer: what each shown order card decided about. decision_key is a
# SHA-256 over (patient key HMAC, encounter or user-and-day, rule, draft signatures): no
# identifier. A decision is answered once feedback exists for any card with its key.
card_decision = Table(
    "card_decision",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("decision_key", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(16), nullable=True),  # as issued_card.key_id
    Index("ix_card_decision_decision_key", "decision_key"),
    Index("ix_card_decision_issued_at", "issued_at"),
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

# One row per order-select / order-sign call answered 200 (migration 0003): the ordering
# decisions evaluated (the denominator of firing rates) and what a later order-sign shows
# (the "acted on" check). Every key is a keyed HMAC; no draft id or drug name is stored.
order_call = Table(
    "order_call",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("called_at", DateTime(timezone=True), nullable=False),
    Column("service_id", String(128), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("decision_key", String(64), nullable=False),
    Column("opioid", Boolean, nullable=False),  # an opioid draft is among the decision's drafts
    Column("encounter_key", String(64), nullable=False),
    Column("decision_drafts", JSON, nullable=False),  # keys of the drafts the decision is about
    Column("draft_keys", JSON, nullable=False),  # keys of every draft in focus
    Column("classes", JSON, nullable=False),  # drug classes of the drafts in focus
    Column("prescriber_key", String(64), nullable=True),
    Column("key_id", String(16), nullable=True),  # as issued_card.key_id
    Index("ix_order_call_called_at", "called_at"),
    Index("ix_order_call_decision_key", "decision_key"),
    Index("ix_order_call_encounter_key", "encounter_key"),
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
