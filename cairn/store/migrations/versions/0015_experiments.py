"""Experiments: the variant of each send, the arm of each split run, automatic winners.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("variant", sa.String(length=128), nullable=True))
    op.create_table(
        "experiment_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=700), nullable=False),
        sa.Column("journey_key", sa.String(length=128), nullable=False),
        sa.Column("journey_version", sa.Integer(), nullable=True),
        sa.Column("step", sa.String(length=128), nullable=False),
        sa.Column("workflow_id", sa.String(length=512), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("arm", sa.String(length=128), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_experiment_assignments_contact_id", "experiment_assignments",
                    ["contact_id"])
    op.create_index("ix_experiment_assignments_step", "experiment_assignments",
                    ["journey_key", "step"])
    op.create_table(
        "experiment_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("journey_key", sa.String(length=128), nullable=False),
        sa.Column("step", sa.String(length=128), nullable=False),
        sa.Column("journey_version", sa.Integer(), nullable=True),
        sa.Column("winner", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("metric", sa.String(length=255), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("journey_key", "step", name="uq_experiment_decision"),
    )


def downgrade() -> None:
    op.drop_table("experiment_decisions")
    op.drop_index("ix_experiment_assignments_step", table_name="experiment_assignments")
    op.drop_index("ix_experiment_assignments_contact_id", table_name="experiment_assignments")
    op.drop_table("experiment_assignments")
    op.drop_column("deliveries", "variant")
