"""Votes: whether a judge found sentences addressed to whoever judges in the text it read.

Revision ID: 0011_vote_steering
Revises: 0010_vote_coverage
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_vote_steering"
down_revision = "0010_vote_coverage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("steering", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.drop_column("steering")
