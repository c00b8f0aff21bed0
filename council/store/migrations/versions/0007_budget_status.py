"""Episodes closed at their token budget get status ``budget``; only the council's decisions are ``let_go``.

Revision ID: 0007_budget_status
Revises: 0006_persona_versions
Create Date: 2026-11-27
"""

from alembic import op

revision = "0007_budget_status"
down_revision = "0006_persona_versions"
branch_labels = None
depends_on = None

BUDGET = "the answer reached its token budget"


def upgrade() -> None:
    op.execute(f"UPDATE episodes SET status = 'budget' WHERE status = 'let_go' AND stop_reason = '{BUDGET}'")


def downgrade() -> None:
    op.execute("UPDATE episodes SET status = 'let_go' WHERE status = 'budget'")
