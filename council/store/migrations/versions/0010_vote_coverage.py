"""Votes: how much each judgment's training data covers the judged text, which the pooled rule weighs.

Revision ID: 0010_vote_coverage
Revises: 0009_sleep_claims
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_vote_coverage"
down_revision = "0009_sleep_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("coverage", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.drop_column("coverage")
