"""Tables, declared once and typed. Migrations in `migrations/versions` must match this file."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A moment stored as UTC and always read back timezone-aware (UTC).

    SQLite keeps no offset: without this, an aware time would be written as its local wall clock
    (so `+02:00` and `Z` values would not compare) and read back naive. A naive value written by
    a caller is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """The bound value as the driver takes it, the last one remembered: the rows of a batch
        mostly share their times (the receive time, and the event time of calls without one),
        and formatting a time is most of binding a row on SQLite."""
        process = super().bind_processor(dialect)
        if process is None:
            return None
        # The last time given and what it became, one tuple: replaced whole, never torn.
        last: list[tuple[Any, Any]] = [(None, None)]

        def remembered(value: Any) -> Any:
            given, processed = last[0]
            if value is not None and value is given:
                return processed
            processed = process(value)
            last[0] = (value, processed)
            return processed

        return remembered

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: datetime | None) -> datetime | None:
    """The same moment in UTC; a naive value is taken to be UTC already."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    anonymous_id: Mapped[str | None] = mapped_column(String(255), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    push_tokens: Mapped[list[Any]] = mapped_column(default=list)
    web_push: Mapped[list[Any]] = mapped_column(default=list)
    consent: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suppressed: Mapped[list[Any]] = mapped_column(default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    first_seen_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Event(Base):
    """Every accepted call (track, identify), stored once per message id before it is routed."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(16))  # track | identify | page | alias
    contact_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timestamp: Mapped[datetime]
    received_at: Mapped[datetime]
    routed_at: Mapped[datetime | None]
    # Routing bookkeeping (`cairn.events.ingest.Ingest.route_events`): who routes the event now
    # (a claim with a lease, so the API and the relay never route it at once), how often routing
    # failed, when to try next, and when it was set aside after too many failures.
    routing_claimed_by: Mapped[str | None] = mapped_column(String(64))
    routing_claimed_at: Mapped[datetime | None]
    routing_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_routing_at: Mapped[datetime | None]
    routing_error: Mapped[str | None] = mapped_column(Text)
    quarantined_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_events_contact_name_ts", "contact_id", "name", "timestamp"),
                      Index("ix_events_unrouted", "routed_at"),
                      Index("ix_events_quarantined", "quarantined_at"),
                      Index("ix_events_routing_claimed_by", "routing_claimed_by"))


class JourneyVersion(Base):
    __tablename__ = "journey_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))
    definition: Mapped[dict[str, Any]]
    checksum: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(1024))
    published_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (UniqueConstraint("key", "version", name="uq_journey_version"),)


class Entry(Base):
    """One contact's entry into one journey: entry rules read these, the workflow closes them."""

    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    journey_key: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    contact_id: Mapped[str] = mapped_column(String(255))
    entry_key: Mapped[str | None] = mapped_column(String(255))
    workflow_id: Mapped[str] = mapped_column(String(512))
    trigger_message_id: Mapped[str | None] = mapped_column(String(255))
    entered_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # converted | completed | ended:<outcome> | failed (then `reason` says why the run failed)
    outcome: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_entries_journey_contact", "journey_key", "contact_id"),
        Index("ix_entries_workflow", "workflow_id"),
    )


class StepTransitionRecord(Base):
    """One visit of a step by one entry: when it was reached and how it was left.

    Written by the activities a run calls anyway (`activities.context.record_transitions`), from
    the visits the run buffered (`cairn.journey_run.StepTransition`); a visit written again when
    it is left keeps its row (unique per entry, step and visit). The journey report reads them.
    """

    __tablename__ = "step_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    journey_key: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None]
    workflow_id: Mapped[str] = mapped_column(String(512))
    entry_id: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[str] = mapped_column(String(255), index=True)
    entered_at: Mapped[datetime | None]
    seq: Mapped[int]
    step: Mapped[str] = mapped_column(String(128))
    visit: Mapped[int]
    reached_at: Mapped[datetime]
    left_by: Mapped[str | None] = mapped_column(String(160))
    left_at: Mapped[datetime | None]
    next_step: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        UniqueConstraint("entry_id", "step", "visit", name="uq_step_transitions_visit"),
        Index("ix_step_transitions_journey_entered", "journey_key", "entered_at"),
        Index("ix_step_transitions_workflow", "workflow_id"),
    )


class Delivery(Base):
    """The ledger of every side effect toward the outside: sends, alerts, webhooks, audiences.

    The unique idempotency key is what makes a retried activity find its earlier send instead of
    sending again.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(700), unique=True)
    # send | notify | webhook | audience | start_journey
    kind: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str | None] = mapped_column(String(512), index=True)
    journey_key: Mapped[str | None] = mapped_column(String(128))
    step: Mapped[str | None] = mapped_column(String(128))
    contact_id: Mapped[str | None] = mapped_column(String(255), index=True)
    channel: Mapped[str | None] = mapped_column(String(32))
    provider: Mapped[str | None] = mapped_column(String(32))
    # the provider's id for the message: how delivery webhooks find their send
    provider_message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    template: Mapped[str | None] = mapped_column(String(128))
    # the arm of a send with `variants` (its name: the template unless named)
    variant: Mapped[str | None] = mapped_column(String(128))
    category: Mapped[str | None] = mapped_column(String(32))
    # sending | sent | unconfirmed | failed | skipped:* (the state machine: activities.ledger)
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    rendered: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    # the journey's clock: when the send was due (workflow time, which the simulator moves)
    sent_at: Mapped[datetime | None]
    planned_at: Mapped[datetime | None]
    # the wall clock when the provider accepted the message (or a lookup found it accepted)
    accepted_at: Mapped[datetime | None]

    # The journey report reads a journey's sends in a window (`cairn.reports`).
    __table_args__ = (Index("ix_deliveries_journey_kind_created", "journey_key", "kind",
                            "created_at"),)


class ExperimentAssignment(Base):
    """Which arm of a split's experiment a run got (sends record theirs in `deliveries.variant`).

    Keyed like a side effect (`<workflow id>/<entry>/<step>/<iteration>`): a retried activity
    finds its row instead of adding one."""

    __tablename__ = "experiment_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(700), unique=True)
    journey_key: Mapped[str] = mapped_column(String(128))
    journey_version: Mapped[int | None]
    step: Mapped[str] = mapped_column(String(128))
    workflow_id: Mapped[str] = mapped_column(String(512))
    contact_id: Mapped[str] = mapped_column(String(255), index=True)
    arm: Mapped[str] = mapped_column(String(128))
    assigned_at: Mapped[datetime]

    __table_args__ = (Index("ix_experiment_assignments_step", "journey_key", "step"),)


class ExperimentDecision(Base):
    """An experiment's automatic winner: when it was decided, on which figures. One per journey
    and step; later entrants of that step get `winner`."""

    __tablename__ = "experiment_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    journey_key: Mapped[str] = mapped_column(String(128))
    step: Mapped[str] = mapped_column(String(128))
    journey_version: Mapped[int | None]
    winner: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    metric: Mapped[str] = mapped_column(String(255))
    figures: Mapped[list[Any]] = mapped_column(JSON, default=list)
    decided_at: Mapped[datetime]

    # what the step's arms were when it was decided (`cairn.experiments.arms_key`): a version
    # whose arms differ starts a fresh experiment; null on decisions older than the column
    arms: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("journey_key", "step", "arms",
                                       name="uq_experiment_decision"),)


class SendHold(Base):
    """A send held by quiet hours or a frequency cap, recorded when the hold starts.

    The ledger gets the send's row only when it goes or is skipped; this says that it waited,
    why and until when. One row per send key and hold end: a retried plan writes nothing new,
    and nothing here is a send (exactly-once stays the ledger's).
    """

    __tablename__ = "send_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(700))
    workflow_id: Mapped[str | None] = mapped_column(String(512), index=True)
    journey_key: Mapped[str | None] = mapped_column(String(128))
    step: Mapped[str | None] = mapped_column(String(128))
    contact_id: Mapped[str | None] = mapped_column(String(255), index=True)
    template: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(128))
    channel: Mapped[str | None] = mapped_column(String(32))
    # quiet_hours | frequency_cap
    reason: Mapped[str] = mapped_column(String(32))
    held_at: Mapped[datetime]
    until: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("idempotency_key", "until", name="uq_send_hold"),
        Index("ix_send_holds_journey_held", "journey_key", "held_at"),
    )


class DeliveryFeedback(Base):
    """What providers reported after a send (delivered, bounced, opened, clicked, replied, ...).

    `dedupe_key` is unique: providers retry their webhooks, and one report must become one event.
    """

    __tablename__ = "delivery_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(700), unique=True)
    delivery_id: Mapped[int | None] = mapped_column(Integer, index=True)
    contact_id: Mapped[str | None] = mapped_column(String(255), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(String(320))
    permanent: Mapped[bool] = mapped_column(default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]


class DeliveryLink(Base):
    """A link of a sent message, rewritten to a signed redirect (`cairn.links`).

    The redirect's token names only the delivery and the link's position; the address and its
    label (anchor text or `data-label`) are kept here, so tokens stay short and nothing in them
    can send a browser elsewhere.
    """

    __tablename__ = "delivery_links"

    delivery_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[str | None] = mapped_column(String(255), index=True)
    url: Mapped[str] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(String(255))


class InboxMessage(Base):
    """An in-app or on-site message waiting in a contact's inbox until read or dismissed."""

    __tablename__ = "inbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_key: Mapped[str] = mapped_column(String(700), unique=True)
    contact_id: Mapped[str] = mapped_column(String(255), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    journey_key: Mapped[str | None] = mapped_column(String(128))
    template: Mapped[str | None] = mapped_column(String(128))
    parts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]
    dismissed_at: Mapped[datetime | None]


class Score(Base):
    __tablename__ = "scores"

    contact_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(128), primary_key=True)
    total: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime]


class ScoreChangeRecord(Base):
    __tablename__ = "score_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(700), unique=True)
    contact_id: Mapped[str] = mapped_column(String(255), index=True)
    dimension: Mapped[str] = mapped_column(String(128))
    delta: Mapped[int]
    total: Mapped[int]
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(512))
    workflow_id: Mapped[str | None] = mapped_column(String(512), index=True)
    at: Mapped[datetime]


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(700), unique=True)
    queue: Mapped[str] = mapped_column(String(128), index=True)
    title: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    contact_id: Mapped[str | None] = mapped_column(String(255))
    journey_key: Mapped[str | None] = mapped_column(String(128))
    workflow_id: Mapped[str | None] = mapped_column(String(512), index=True)
    step: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | claimed | done
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    assignee: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(128))


class SegmentMembership(Base):
    """Who is in which segment and since when; `exited_at` set when the contact leaves."""

    __tablename__ = "segment_memberships"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("contacts.id", ondelete="CASCADE")
    )
    entered_at: Mapped[datetime]
    exited_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_memberships_contact", "contact_id", "segment"),)


class ApiKey(Base):
    """A key the API accepts (`cairn keys`): its scope and a hash of its secret, never the
    secret itself (`cairn.store.keys`)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    scope: Mapped[str] = mapped_column(String(16))  # write | read | admin
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, hex
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class RejectedCall(Base):
    """A call of a batch the door refused while storing its neighbours: kept so nothing a
    source sent disappears unseen (`GET /v1/rejected`, `cairn rejected`)."""

    __tablename__ = "rejected_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    batch_index: Mapped[int | None]
    message_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    call: Mapped[str] = mapped_column(Text)  # the call as received, JSON text (ASCII-escaped)
    received_at: Mapped[datetime] = mapped_column(index=True)


class DataKey(Base):
    """A data key (DEK) that encrypts the Temporal payloads of one contact's runs, or of the
    runs that belong to no contact (`owner` "system"), wrapped by a master key.

    Erasure destroys the key: `wrapped` becomes NULL and `owner` no longer names the contact, so
    the payloads it encrypted can never be read again; the row stays so a decode can say why.
    """

    __tablename__ = "data_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "contact:<contact id>" | "system" | "erased:<id>" once destroyed
    owner: Mapped[str] = mapped_column(String(320), unique=True)
    master_key_id: Mapped[str | None] = mapped_column(String(64))
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    destroyed_at: Mapped[datetime | None]


class ErasureRecord(Base):
    """That an erasure happened: when, by whom, how much went; no personal data (the contact id
    only as a SHA-256 hash, which answers "was c-1 erased?" without listing who was)."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    contact_hash: Mapped[str] = mapped_column(String(64), index=True)
    erased_at: Mapped[datetime]
    erased_by: Mapped[str | None] = mapped_column(String(128))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    runs_ended: Mapped[int] = mapped_column(default=0)
    runs_terminated: Mapped[int] = mapped_column(default=0)


class ErasedSuppression(Base):
    """A suppression that outlived its erased contact: the channel (bounce, complaint, STOP) and
    the keyed hash of the address it was on, never the address itself
    (`cairn.store.suppressions.address_hash`). The same address given again to any contact is
    suppressed again."""

    __tablename__ = "erased_suppressions"
    __table_args__ = (UniqueConstraint("channel", "address_hash",
                                       name="uq_erased_suppression"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    address_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


def _utc_on_set(_target: Any, value: Any, _old: Any, _initiator: Any) -> Any:
    return as_utc(value) if isinstance(value, datetime) else value


# Rows keep what they were given until reloaded; convert on assignment too, so a row just written
# reads back in UTC like one loaded from the database.
for _mapper in Base.registry.mappers:
    for _attribute in _mapper.column_attrs:
        if any(isinstance(column.type, UTCDateTime) for column in _attribute.columns):
            event.listen(_attribute.class_attribute, "set", _utc_on_set, retval=True)
