"""What a journey run carries: its input, its state, the events it hears and what it reports.

These types cross the workflow boundary (input, signal, query, continue-as-new), so fields are only
ever added with defaults; renaming or removing one breaks running journeys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cairn.conditions import evaluate_event_filter
from cairn.journey import Journey, WaitForEventStep

WORKFLOW_NAME = "JourneyWorkflow"
EVENT_SIGNAL = "event"
EXIT_SIGNAL = "exit"
STATE_QUERY = "state"
CAUGHT_EVENTS = "events"
"""Where a caught event is kept in the journey context, by name: templates read it as
`journey.events.<name>`, `if` conditions as `{property: ..., event: <name>}`. Kept by reference
(no properties); activities read it back from the store."""
COMPLETED = "completed"
"""The outcome of a run that reached `end` (or a step whose `next` is `end`)."""
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
    """An event as a journey hears it (trigger, signal to a wait or an exit goal): by reference.

    What travels to a journey is the stored event's identity (`message_id`, unique in the store;
    `event_id`, its row), its name and time, never its properties: Temporal histories keep what
    they carry, and properties hold names, addresses and free text. Activities read the
    properties from the store where they need them (`activities.context.journey_scope`). What the
    workflow itself decides on an event's properties (a `wait_for_event` or exit goal `where`)
    the router decides when it sends the reference, and says so in `matches`.

    `properties` stays for the messages of runs started before: a message that carries them (and
    no `matches`) is decided on them, as it was. The router's own messages (`route`) carry them
    too; `reference()` is what leaves the router.
    """

    message_id: str
    event: str
    contact_id: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    event_id: int | None = Field(default=None, description="the stored event's row id")
    matches: list[str] | None = Field(
        default=None,
        description="keys of the run's filtered waits and exit goals this event meets "
                    "(`match_key`); None on a message sent before references",
    )
    attributes: list[str] = Field(
        default_factory=list, description="names of the traits an `attribute_changed` changed"
    )

    def as_scope(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"event_id", "matches", "attributes"})

    @property
    def by_reference(self) -> bool:
        """Sent without properties: filters were decided by the router (see `matches`)."""
        return self.matches is not None

    def reference(self, matches: list[str]) -> EventMessage:
        """The message a journey gets: identity, name, time, the filters it meets; no values."""
        changed = self.properties.get("attribute") if self.event == "attribute_changed" else None
        return EventMessage(
            message_id=self.message_id, event=self.event, contact_id=self.contact_id,
            timestamp=self.timestamp, event_id=self.event_id, matches=sorted(set(matches)),
            attributes=[changed] if isinstance(changed, str) else [],
        )

    def meets(self, key: str, where: Any) -> bool:
        """Whether the event meets a filter of the run: decided by the router for a reference,
        on the carried properties for a message of an older run."""
        if self.by_reference:
            return key in (self.matches or [])
        return evaluate_event_filter(where, self.as_scope(), self.timestamp).result


def goal_key(version: int | None, index: int) -> str:
    """`matches` key of a journey version's exit goal (by its place in `exit`)."""
    return f"v{version}/exit/{index}"


def wait_key(version: int | None, step: str) -> str:
    """`matches` key of a journey version's `wait_for_event` step."""
    return f"v{version}/wait/{step}"


def event_matches(journey: Journey, event: EventMessage) -> list[str]:
    """The keys of the journey's filtered waits and exit goals that the (full) event meets.

    Filters are decided as the workflow decided them before references: on the event's own
    scope at the event's own time, so the answer is the same wherever it is computed.
    """
    scope = event.as_scope()
    keys = []
    for index, goal in enumerate(journey.exit):
        if goal.event == event.event and goal.where is not None and \
                evaluate_event_filter(goal.where, scope, event.timestamp).result:
            keys.append(goal_key(journey.version, index))
    for name, step in journey.steps.items():
        if isinstance(step, WaitForEventStep) and step.wait_for_event.event == event.event:
            where = step.wait_for_event.where
            if where is not None and evaluate_event_filter(where, scope, event.timestamp).result:
                keys.append(wait_key(journey.version, name))
    return keys


class StepTransition(BaseModel):
    """One visit of a step, as the run buffers it for the store (`step_transitions`).

    Ids, step names and routing keys only (no personal data): `left_by` is the routing key the
    contact left by, as the journey's graph names it (`next`, `then`, `else`, `timeout_next`,
    `missing`, `paths[1]`, `on_failure`), or `holdout`, `end` (an `end` step), `exit:<goal>` (an
    exit goal caught there; `exit:removed` for an operator's exit) or `failed`; null while the
    contact is there. A visit is written once reached and again when left: the store keeps the
    last (`step`, `visit`) record of an entry.
    """

    seq: int = Field(description="the visit's order in the entry (1: the first step)")
    step: str
    visit: int = Field(description="which visit of this step (a loop passes again)")
    reached_at: datetime
    left_by: str | None = None
    left_at: datetime | None = None
    next_step: str | None = Field(default=None, description="where it went (`end`: finished)")


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
class StepSummary:
    """Path entries no longer kept one by one: how often a step was taken, first and last time."""

    step: str
    count: int
    first_at: datetime
    last_at: datetime


def summarise(earlier: list[StepSummary], entries: list[PathEntry]) -> list[StepSummary]:
    """`earlier` with `entries` folded in: one summary per step, in order of first visit."""
    by_step = {item.step: StepSummary(item.step, item.count, item.first_at, item.last_at)
               for item in earlier}
    for entry in entries:
        item = by_step.get(entry.step)
        if item is None:
            by_step[entry.step] = StepSummary(entry.step, 1, entry.at, entry.at)
        else:
            item.count += 1
            item.first_at = min(item.first_at, entry.at)
            item.last_at = max(item.last_at, entry.at)
    return list(by_step.values())


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
    earlier: list[StepSummary] = field(default_factory=list)
    """The path entries before `path`, summarised per step (`path_dropped` of them)."""
    transitions: list[StepTransition] = field(default_factory=list)
    """Step visits not yet written to the store: the next activity the run calls takes them
    (in its `StepContext`, or `EntryFinish` at the end) and writes them with its own work."""
    transition_seq: int = 0


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
    lean: bool = Field(
        default=False,
        description="run the lean sequence of commands (`workflows.run.LEAN_RUN_PATCH`); set for "
                    "every new run, absent from the inputs of runs recorded before it, which "
                    "replay as they were recorded",
    )
    entry_by_send: bool = Field(
        default=False,
        description="a run whose last step is a send lets the send close its entry "
                    "(`SendRequest.closes_entry`); set for every new run, absent from the inputs "
                    "of runs recorded before it, which replay as they were recorded",
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
    earlier: list[StepSummary] = Field(default_factory=list)


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
    earlier: list[StepSummary] = Field(
        default_factory=list,
        description="the `path_dropped` entries before `path`: per step, how often, first, last")
