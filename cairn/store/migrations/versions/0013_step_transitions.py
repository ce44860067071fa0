"""Step transitions: each visit of a step by an entry, how it was left (the per-step funnel).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "step_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("journey_key", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("workflow_id", sa.String(length=512), nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=128), nullable=False),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.Column("reached_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_by", sa.String(length=160), nullable=True),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_step", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("entry_id", "step", "visit", name="uq_step_transitions_visit"),
    )
    op.create_index("ix_step_transitions_journey_entered", "step_transitions",
                    ["journey_key", "entered_at"])
    op.create_index("ix_step_transitions_workflow", "step_transitions", ["workflow_id"])
    op.create_index("ix_step_transitions_contact_id", "step_transitions", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_step_transitions_contact_id", table_name="step_transitions")
    op.drop_index("ix_step_transitions_workflow", table_name="step_transitions")
    op.drop_index("ix_step_transitions_journey_entered", table_name="step_transitions")
    op.drop_table("step_transitions")
