"""Holds recorded when they start; experiment decisions keyed by the step's arms.

Revision ID: 0019
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=700), nullable=False),
        sa.Column("workflow_id", sa.String(length=512), nullable=True),
        sa.Column("journey_key", sa.String(length=128), nullable=True),
        sa.Column("step", sa.String(length=128), nullable=True),
        sa.Column("contact_id", sa.String(length=255), nullable=True),
        sa.Column("template", sa.String(length=128), nullable=True),
        sa.Column("variant", sa.String(length=128), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key", "until", name="uq_send_hold"),
    )
    op.create_index("ix_send_holds_workflow_id", "send_holds", ["workflow_id"])
    op.create_index("ix_send_holds_contact_id", "send_holds", ["contact_id"])
    op.create_index("ix_send_holds_journey_held", "send_holds", ["journey_key", "held_at"])
    with op.batch_alter_table("experiment_decisions") as batch:
        batch.add_column(sa.Column("arms", sa.String(length=64), nullable=True))
        batch.drop_constraint("uq_experiment_decision", type_="unique")
        batch.create_unique_constraint("uq_experiment_decision", ["journey_key", "step", "arms"])


def downgrade() -> None:
    with op.batch_alter_table("experiment_decisions") as batch:
        batch.drop_constraint("uq_experiment_decision", type_="unique")
        batch.create_unique_constraint("uq_experiment_decision", ["journey_key", "step"])
        batch.drop_column("arms")
    op.drop_index("ix_send_holds_journey_held", table_name="send_holds")
    op.drop_index("ix_send_holds_contact_id", table_name="send_holds")
    op.drop_index("ix_send_holds_workflow_id", table_name="send_holds")
    op.drop_table("send_holds")
