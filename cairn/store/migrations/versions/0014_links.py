"""Click tracking: the links of sent messages behind their signed redirects.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_links",
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id", "position"),
    )
    op.create_index("ix_delivery_links_contact_id", "delivery_links", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_delivery_links_contact_id", table_name="delivery_links")
    op.drop_table("delivery_links")
