"""An index for the journey report: a journey's sends in a time window.

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_journey_kind_created", "deliveries",
                    ["journey_key", "kind", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_journey_kind_created", table_name="deliveries")
