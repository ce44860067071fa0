"""Initial schema: contacts, events, journey versions, entries, deliveries, scores, tasks, segments.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written from `cairn.store.schema` by autogenerate, then reviewed: times are
`DateTime(timezone=True)` (the schema's UTCDateTime only converts values in Python), JSON columns
are portable `sa.JSON`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _moment(name: str, *, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("anonymous_id", sa.String(length=255), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("push_tokens", sa.JSON(), nullable=False),
        sa.Column("web_push", sa.JSON(), nullable=False),
        sa.Column("consent", sa.JSON(), nullable=False),
        sa.Column("suppressed", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        _moment("first_seen_at", nullable=True),
        _moment("last_seen_at", nullable=True),
        _moment("created_at", nullable=False),
        _moment("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_contacts_anonymous_id", "contacts", ["anonymous_id"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        _moment("timestamp", nullable=False),
        _moment("received_at", nullable=False),
        _moment("routed_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_events_contact_name_ts", "events", ["contact_id", "name", "timestamp"])
    op.create_index("ix_events_unrouted", "events", ["routed_at"])

    op.create_table(
        "journey_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=True),
        _moment("published_at", nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key", "version", name="uq_journey_version"),
    )

    op.create_table(
        "entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("journey_key", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("entry_key", sa.String(length=255), nullable=True),
        sa.Column("workflow_id", sa.String(length=512), nullable=False),
        sa.Column("trigger_message_id", sa.String(length=255), nullable=True),
        _moment("entered_at", nullable=False),
        _moment("ended_at", nullable=True),
        sa.Column("outcome", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_entries_journey_contact", "entries", ["journey_key", "contact_id"])
    op.create_index("ix_entries_workflow", "entries", ["workflow_id"])

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=700), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("workflow_id", sa.String(length=512), nullable=True),
        sa.Column("journey_key", sa.String(length=128), nullable=True),
        sa.Column("step", sa.String(length=128), nullable=True),
        sa.Column("contact_id", sa.String(length=255), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("template", sa.String(length=128), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rendered", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        _moment("created_at", nullable=False),
        _moment("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_deliveries_contact_id", "deliveries", ["contact_id"])
    op.create_index("ix_deliveries_workflow_id", "deliveries", ["workflow_id"])

    op.create_table(
        "scores",
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("dimension", sa.String(length=128), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        _moment("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "dimension"),
    )

    op.create_table(
        "score_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=700), nullable=True),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        sa.Column("dimension", sa.String(length=128), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=512), nullable=True),
        sa.Column("workflow_id", sa.String(length=512), nullable=True),
        _moment("at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_score_history_contact_id", "score_history", ["contact_id"])
    op.create_index("ix_score_history_workflow_id", "score_history", ["workflow_id"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=700), nullable=True),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("contact_id", sa.String(length=255), nullable=True),
        sa.Column("journey_key", sa.String(length=128), nullable=True),
        sa.Column("workflow_id", sa.String(length=512), nullable=True),
        sa.Column("step", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        _moment("due_at", nullable=True),
        _moment("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_tasks_queue", "tasks", ["queue"])
    op.create_index("ix_tasks_workflow_id", "tasks", ["workflow_id"])

    op.create_table(
        "segment_memberships",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment", sa.String(length=128), nullable=False),
        sa.Column("contact_id", sa.String(length=255), nullable=False),
        _moment("entered_at", nullable=False),
        _moment("exited_at", nullable=True),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_memberships_contact", "segment_memberships", ["contact_id", "segment"])


def downgrade() -> None:
    op.drop_table("segment_memberships")
    op.drop_table("tasks")
    op.drop_table("score_history")
    op.drop_table("scores")
    op.drop_table("deliveries")
    op.drop_table("entries")
    op.drop_table("journey_versions")
    op.drop_table("events")
    op.drop_table("contacts")
