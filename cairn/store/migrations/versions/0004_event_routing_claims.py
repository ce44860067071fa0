"""Events: routing claims (a lease, so one router at a time routes an event), failed attempts with
the next try time, the last routing error, and quarantine after too many failures.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _moment(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("routing_claimed_by", sa.String(length=64), nullable=True))
        batch.add_column(_moment("routing_claimed_at"))
        batch.add_column(sa.Column("routing_attempts", sa.Integer(), server_default="0",
                                   nullable=False))
        batch.add_column(_moment("next_routing_at"))
        batch.add_column(sa.Column("routing_error", sa.Text(), nullable=True))
        batch.add_column(_moment("quarantined_at"))
        batch.create_index("ix_events_quarantined", ["quarantined_at"])
        batch.create_index("ix_events_routing_claimed_by", ["routing_claimed_by"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_routing_claimed_by")
        batch.drop_index("ix_events_quarantined")
        batch.drop_column("quarantined_at")
        batch.drop_column("routing_error")
        batch.drop_column("next_routing_at")
        batch.drop_column("routing_attempts")
        batch.drop_column("routing_claimed_at")
        batch.drop_column("routing_claimed_by")
