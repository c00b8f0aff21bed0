"""Sleep: the council's commentary on episodes, preference pairs, and which episodes each pool slept on.

Revision ID: 0003_sleep
Revises: 0002_recall
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_sleep"
down_revision = "0002_recall"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commentaries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("archetype", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("episode_id", "pool", "archetype", name="uq_commentary"),
    )
    op.create_index("ix_commentaries_episode_id", "commentaries", ["episode_id"])
    op.create_table(
        "preference_pairs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_preference_pairs_episode_id", "preference_pairs", ["episode_id"])
    op.create_index("ix_preference_pairs_pool", "preference_pairs", ["pool"])
    op.create_table(
        "slept",
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("pairs", sa.Integer, nullable=False),
        sa.Column("slept_at", sa.DateTime(timezone=True), nullable=False),
    )
