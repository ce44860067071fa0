"""Data keys and erasures: the per-contact keys that encrypt Temporal payloads (wrapped by a master
key, destroyed on erasure), and the audit record of each erasure.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=320), nullable=False),
        sa.Column("master_key_id", sa.String(length=64), nullable=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner"),
    )
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("contact_hash", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_by", sa.String(length=128), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("runs_ended", sa.Integer(), nullable=False),
        sa.Column("runs_terminated", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_erasures_contact_hash", "erasures", ["contact_hash"])


def downgrade() -> None:
    op.drop_index("ix_erasures_contact_hash", table_name="erasures")
    op.drop_table("erasures")
    op.drop_table("data_keys")
