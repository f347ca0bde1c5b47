"""One decision, one answer: card_decision links each shown order card to the decision it
asks for (a digest of patient key, encounter, rule and draft orders), so an answered card is
not shown again for the same unchanged draft in the same encounter (docs/cards.md).

Revision ID: 0004_answers
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_answers"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_decision",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("decision_key", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_card_decision_decision_key", "card_decision", ["decision_key"])
    op.create_index("ix_card_decision_issued_at", "card_decision", ["issued_at"])


def downgrade() -> None:
    op.drop_table("card_decision")
