"""Governance analytics: silent cards, covered rules, and one row per rule a card answers for.

issued_card gains `silent` (a silent-mode rule's card: logged, never returned) and `covers`
(the other rules whose concern the card also answers, "say it once"). card_rule holds one row
per (card, rule) the card counts for: its own rule (covered false) and each covered rule
(covered true); the report counts a rule's cards from it. Existing cards get their own row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("silent", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(
            sa.Column("covers", sa.JSON, nullable=False, server_default=sa.text("'[]'"))
        )
    op.create_table(
        "card_rule",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("rule_id", sa.String(128), primary_key=True),
        sa.Column("covered", sa.Boolean, nullable=False),
    )
    op.create_index("ix_card_rule_rule_id", "card_rule", ["rule_id"])
    op.execute(
        "INSERT INTO card_rule (card_uuid, rule_id, covered) "
        "SELECT card_uuid, rule_id, false FROM issued_card"
    )


def downgrade() -> None:
    op.drop_table("card_rule")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("covers")
        batch.drop_column("silent")
