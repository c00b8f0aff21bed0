"""Episode log: episodes, segments, reflection points and votes.

Revision ID: 0001_episode_log
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_episode_log"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "episodes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("persona", sa.String(64), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.Text, nullable=False),
        sa.Column("final_text", sa.Text, nullable=False),
        sa.Column("transcript", sa.Text, nullable=False),
        sa.Column("model_ids", sa.JSON, nullable=False),
        sa.Column("archetype_hashes", sa.JSON, nullable=False),
        sa.Column("timings", sa.JSON, nullable=False),
    )
    op.create_index("ix_episodes_created_at", "episodes", ["created_at"])
    op.create_index("ix_episodes_pool", "episodes", ["pool"])
    op.create_index("ix_episodes_status", "episodes", ["status"])
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("boundary", sa.String(16), nullable=False),
        sa.Column("accepted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_segments_episode_id", "segments", ["episode_id"])
    op.create_table(
        "reflection_points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(32), sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="SET NULL")),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("support", sa.Float, nullable=False),
        sa.Column("dissent", sa.JSON, nullable=False),
        sa.Column("abstained", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_reflection_points_episode_id", "reflection_points", ["episode_id"])
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "reflection_point_id",
            sa.Integer,
            sa.ForeignKey("reflection_points.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("archetype", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("probs", sa.JSON, nullable=False),
        sa.Column("mass", sa.Float, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_votes_reflection_point_id", "votes", ["reflection_point_id"])


def downgrade() -> None:
    for table in ("votes", "reflection_points", "segments", "episodes"):
        op.drop_table(table)
