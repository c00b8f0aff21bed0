"""Tasks: count attempts, so a task that keeps killing the daemon is given up instead of crash-looping.

Revision ID: 0005_task_attempts
Revises: 0004_tasks
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_task_attempts"
down_revision = "0004_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
