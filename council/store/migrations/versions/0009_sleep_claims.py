"""Sleep claims: a night pass claims each episode before commenting on it, so two sleepers never share one.

Revision ID: 0009_sleep_claims
Revises: 0008_task_leases
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_sleep_claims"
down_revision = "0008_task_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sleep_claims",
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("sleeper", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    )
