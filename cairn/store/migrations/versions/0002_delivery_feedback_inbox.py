"""Channels: provider message ids on deliveries, delivery feedback, in-app/on-site inbox, task
claiming and completion, and an index on contacts' phone numbers (inbound SMS find their contact).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _moment(name: str, *, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_index("ix_contacts_phone", "contacts", ["phone"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("assignee", sa.String(length=255), nullable=True))
        batch.add_column(_moment("claimed_at", nullable=True))
        batch.add_column(_moment("completed_at", nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(length=128), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("provider_message_id", sa.String(length=255), nullable=True))
        batch.create_index("ix_deliveries_provider_message_id", ["provider_message_id"])

    op.create_table(
        "delivery_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=700), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("contact_id", sa.String(length=255), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("permanent", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        _moment("occurred_at", nullable=False),
        _moment("received_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_delivery_feedback_delivery_id", "delivery_feedback", ["delivery_id"])
    op.create_index("ix_delivery_feedback_contact_id", "delivery_feedback", ["contact_id"])

    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_key", sa.String(length=700), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("journey_key", sa.String(length=128), nullable=True),
        sa.Column("template", sa.String(length=128), nullable=True),
        sa.Column("parts", sa.JSON(), nullable=False),
        _moment("created_at", nullable=False),
        _moment("read_at", nullable=True),
        _moment("dismissed_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_key"),
    )
    op.create_index("ix_inbox_messages_contact_id", "inbox_messages", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_inbox_messages_contact_id", table_name="inbox_messages")
    op.drop_table("inbox_messages")
    op.drop_index("ix_delivery_feedback_contact_id", table_name="delivery_feedback")
    op.drop_index("ix_delivery_feedback_delivery_id", table_name="delivery_feedback")
    op.drop_table("delivery_feedback")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_provider_message_id")
        batch.drop_column("provider_message_id")
    with op.batch_alter_table("tasks") as batch:
        for column in ("outcome", "completed_at", "claimed_at", "assignee"):
            batch.drop_column(column)
    op.drop_index("ix_contacts_phone", table_name="contacts")
