"""Failed entries and unconfirmed sends: the reason a run failed on its entry, and on each ledger
row the time a send was planned and the real time the provider accepted it; an index on the
ledger's status (the unconfirmed rows a check settles).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_deliveries_status", ["status"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_status")
        batch.drop_column("accepted_at")
        batch.drop_column("planned_at")
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("reason")
