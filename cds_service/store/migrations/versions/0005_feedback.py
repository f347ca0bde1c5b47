"""Feedback: one row per distinct answer, so a later different answer to a card is kept.

A feedback row was unique on (card uuid, outcome, outcomeTimestamp): a second override of the
same card with another reason at the same timestamp was silently dropped. Rows are now unique
on (card uuid, answer_key), answer_key being a digest of the whole answer (outcome, timestamp,
reason code, accepted suggestions); a resent identical item still lands once. Existing rows
get "outcome|timestamp" as their key, which keeps them distinct exactly as before.

Revision ID: 0005_feedback
Revises: 0004_answers
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_feedback"
down_revision = "0004_answers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(
            sa.Column("answer_key", sa.String(64), nullable=False, server_default=sa.text("''"))
        )
    op.execute("UPDATE feedback SET answer_key = outcome || '|' || outcome_timestamp")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint("uq_feedback_card_outcome_time", type_="unique")
        batch.create_unique_constraint("uq_feedback_card_answer", ["card_uuid", "answer_key"])
        batch.create_index("ix_feedback_card_uuid", ["card_uuid"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_index("ix_feedback_card_uuid")
        batch.drop_constraint("uq_feedback_card_answer", type_="unique")
    # keep one row per (card, outcome, timestamp): the latest answer
    op.execute(
        "DELETE FROM feedback WHERE id NOT IN (SELECT max(id) FROM feedback "
        "GROUP BY card_uuid, outcome, outcome_timestamp)"
    )
    with op.batch_alter_table("feedback") as batch:
        batch.create_unique_constraint(
            "uq_feedback_card_outcome_time", ["card_uuid", "outcome", "outcome_timestamp"]
        )
        batch.drop_column("answer_key")
