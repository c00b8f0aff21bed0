"""Recall: the memory digest each episode saw, and the recollections it was built from.

Revision ID: 0002_recall
Revises: 0001_episode_log
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_recall"
down_revision = "0001_episode_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("recalled", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "recollections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("memory_id", sa.String(64), nullable=False),
        sa.Column("source_episode_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_recollections_episode_id", "recollections", ["episode_id"])
    op.create_index("ix_recollections_source_episode_id", "recollections", ["source_episode_id"])
