"""What a journey run carries: its input, its state, the events it hears and what it reports.

These types cross the workflow boundary (input, signal, query, continue-as-new), so fields are only
ever added with defaults; renaming or removing one breaks running journeys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cairn.journey import Journey

WORKFLOW_NAME = "JourneyWorkflow"
EVENT_SIGNAL = "event"
EXIT_SIGNAL = "exit"
STATE_QUERY = "state"
JOURNEY_TASK_QUEUE = "cairn-journeys"
DELIVERY_TASK_QUEUE = "cairn-delivery"


def workflow_id(journey_key: str, contact_id: str, entry_key: str | None = None) -> str:
    """`journey/<journey-key>/<contact-id>[/<entry-key>]`: readable in the UI, one per entry."""
    base = f"journey/{journey_key}/{contact_id}"
    return f"{base}/{entry_key}" if entry_key else base


def contact_of_workflow(workflow_id: str | None) -> str | None:
    """The contact a journey run belongs to, read from its id (`workflow_id`'s inverse);
    None for other workflows (sweeps, schedules) and for a bare `journey/<key>` prefix.

    Journey keys never hold a `/`; a contact id that does is read up to its first `/`, since
    the id alone cannot tell it from an entry key.
    """
    if not workflow_id or not workflow_id.startswith("journey/"):
        return None
    _, _, rest = workflow_id[len("journey/"):].partition("/")
    contact, _, _ = rest.partition("/")
    return contact or None


class EventMessage(BaseModel):
    """An event as a journey hears it (trigger, signal to a wait or an exit goal)."""

    message_id: str
    event: str
    contact_id: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime

    def as_scope(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ExitRequest(BaseModel):
    """An operator (or an erasure) removes a contact from a journey: `cairn exit`."""

    reason: str = "removed by operator"


@dataclass
class PathEntry:
    """One step taken: when, and why the journey went where it went."""

    step: str
    at: datetime
    note: str
    kind: str = ""


@dataclass
class HeardEvent:
    """An event kept by the run, numbered in arrival order (waits look only at newer ones)."""

    seq: int
    message: EventMessage


@dataclass
class JourneyState:
    """Everything a run needs to go on; passed whole through continue-as-new.

    `deadline` is the absolute end of the current wait, so a run that continues as new mid-wait
    resumes the same wait instead of starting it over. `anchor` is the moment the journey's
    clock last stood on exactly (the trigger's time at entry, the end of a wait that ran its
    course): for a minute after it the journey's time stays there, so the steps that follow
    (however long they take under load) happen at that moment and a loop keeps its rhythm.
    """

    entered_at: datetime
    current: str | None
    trigger: EventMessage | None = None
    visits: dict[str, int] = field(default_factory=dict)
    path: list[PathEntry] = field(default_factory=list)
    path_dropped: int = 0
    context: dict[str, Any] = field(default_factory=dict)
    heard: list[HeardEvent] = field(default_factory=list)
    seen_message_ids: list[str] = field(default_factory=list)
    next_seq: int = 1
    step_started_seq: int = 0
    step_started_at: datetime | None = None
    deadline: datetime | None = None
    anchor: datetime | None = None
    waiting_for: str | None = None
    runs: int = 1
    outcome: str | None = None


class JourneyInput(BaseModel):
    """Input of a journey run: the definition the contact entered with, and where to resume."""

    journey: Journey
    contact_id: str
    entry_key: str | None = None
    trigger: EventMessage | None = None
    clock_offset_seconds: float = Field(
        default=0.0,
        description="added to Temporal's time; only simulations set it, to start at their `now`",
    )
    state: JourneyState | None = None
    delivery_task_queue: str | None = Field(
        default=None, description="queue of the send activities (default: paired with the run's)"
    )
    history_limit: int | None = Field(
        default=None, ge=10,
        description="continue as new once a run's history has this many events, besides when "
                    "Temporal suggests it (which needs thousands); lets tests and cautious "
                    "operators keep runs short",
    )


class JourneyResult(BaseModel):
    outcome: str
    path: list[PathEntry]
    path_dropped: int = 0


class JourneyStateView(BaseModel):
    """Answer of the `state` query: where the contact is, what it waits for, how it got there."""

    journey: str
    version: int | None
    contact: str
    current_step: str | None
    waiting_for: str | None
    until: datetime | None
    outcome: str | None
    runs: int
    path: list[PathEntry]
    path_dropped: int = 0
