"""Key ids: each row of keyed pseudonyms records the key ring state it was made under.

issued_card, card_decision and order_call get a nullable `key_id` (16 hex characters, a
public digest of the newest key of the ring). Existing rows keep NULL, which means "the
ring's first key" (the only key there was before rotation existed); `cds-service db
rotate-key` re-keys rows whose key id is not the current one (docs/hardening.md).

Revision ID: 0006_key_ids
Revises: 0005_feedback
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_key_ids"
down_revision = "0005_feedback"
branch_labels = None
depends_on = None

TABLES = ("issued_card", "card_decision", "order_call")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("key_id", sa.String(16), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_id")
