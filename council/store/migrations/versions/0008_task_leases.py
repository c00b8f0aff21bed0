"""Tasks: a claim records its worker and a lease the worker renews, so several workers can share one queue.

Revision ID: 0008_task_leases
Revises: 0007_budget_status
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_task_leases"
down_revision = "0007_budget_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("worker", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
