"""Persona versions: trained adapters, which one is in use, and the version each episode ran with.

Revision ID: 0006_persona_versions
Revises: 0005_task_attempts
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_persona_versions"
down_revision = "0005_task_attempts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persona_versions",
        sa.Column("persona", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent", sa.String(32), nullable=False),
        sa.Column("adapter", sa.Text, nullable=False),
        sa.Column("dataset_hash", sa.String(64), nullable=False),
        sa.Column("base_hash", sa.String(64), nullable=False),
        sa.Column("pair_ids", sa.JSON, nullable=False),
        sa.Column("training", sa.JSON, nullable=False),
        sa.Column("gate", sa.JSON, nullable=False),
        sa.Column("promoted", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.UniqueConstraint("persona", "number"),
    )
    op.create_table(
        "persona_selections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("persona", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("selected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True)),
    )
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("persona_version", sa.String(32), nullable=False, server_default="base"))
