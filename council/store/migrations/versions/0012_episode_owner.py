"""Episodes: the process that wrote each one, so a run whose process died can be told from one still running.

Revision ID: 0012_episode_owner
Revises: 0011_vote_steering
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_episode_owner"
down_revision = "0011_vote_steering"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.drop_column("owner")
