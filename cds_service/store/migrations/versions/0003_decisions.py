"""Governance per ordering decision: what each logged card was about and under what service.

issued_card gains `decision_key` (keyed HMAC of the FHIR server, patient, encounter and the
draft orders the decision is about, so order-select and order-sign of one draft share it),
`variant` (the card template's variant), `prescriber_key` (keyed HMAC of context.userId),
`knowledge_version` and `settings_digest` (the value sets and the rule's settings in force).
order_call holds one row per order-select / order-sign call answered 200: the decisions
evaluated (firing-rate denominator) and what a later order-sign showed ("acted on").
Cards logged before this migration keep nulls and count one decision per card.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_CARD_COLUMNS = (
    "decision_key",
    "variant",
    "prescriber_key",
    "knowledge_version",
    "settings_digest",
)


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        for name in _CARD_COLUMNS:
            batch.add_column(sa.Column(name, sa.String(64), nullable=True))
    op.create_index("ix_issued_card_decision_key", "issued_card", ["decision_key"])
    op.create_table(
        "order_call",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("called_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("decision_key", sa.String(64), nullable=False),
        sa.Column("opioid", sa.Boolean, nullable=False),
        sa.Column("encounter_key", sa.String(64), nullable=False),
        sa.Column("decision_drafts", sa.JSON, nullable=False),
        sa.Column("draft_keys", sa.JSON, nullable=False),
        sa.Column("classes", sa.JSON, nullable=False),
        sa.Column("prescriber_key", sa.String(64), nullable=True),
    )
    op.create_index("ix_order_call_called_at", "order_call", ["called_at"])
    op.create_index("ix_order_call_decision_key", "order_call", ["decision_key"])
    op.create_index("ix_order_call_encounter_key", "order_call", ["encounter_key"])


def downgrade() -> None:
    op.drop_table("order_call")
    op.drop_index("ix_issued_card_decision_key", table_name="issued_card")
    with op.batch_alter_table("issued_card") as batch:
        for name in reversed(_CARD_COLUMNS):
            batch.drop_column(name)
