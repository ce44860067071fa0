"""Requests and results of the activities the journey interpreter calls.

The interpreter refers to activities by these names (not by importing them), so workflow code never
imports the store or the channel adapters. Every request carries `now`, the journey's time: in a
simulation the activity's wall clock is not the journey's clock, and time windows must agree.
Every side effect carries an idempotency key `<workflow id>/<entry>/<step>/<iteration>` (the entry
is the first run id of the entry, so a contact who re-enters gets new keys), so a retried activity
finds its earlier effect in the ledger instead of repeating it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cairn.conditions import Condition
from cairn.journey import (
    AudienceSync,
    HeldChoice,
    Notify,
    ProfileUpdate,
    QuietHours,
    ScoreChange,
    Send,
    Split,
    StartJourney,
    TaskSpec,
    TemplateParts,
    WaitUntil,
    Webhook,
    Window,
)
from cairn.journey_run import EventMessage, StepTransition

LOAD_CONTACT = "load_contact"
PLAN_WAIT = "plan_wait"
EVALUATE_CONDITION = "evaluate_condition"
PREPARE_SEND = "prepare_send"
DELIVER_MESSAGE = "deliver_message"
CHANGE_SCORE = "change_score"
UPDATE_PROFILE = "update_profile"
CREATE_TASK = "create_task"
RECORD_ACTION = "record_action"
FINISH_ENTRY = "finish_entry"
CLOSE_FAILED_ENTRIES = "close_failed_entries"
SETTLE_UNCONFIRMED = "settle_unconfirmed"
CHOOSE_ARM = "choose_arm"


class StepContext(BaseModel):
    """Who is acting, where in which journey, and when (journey time)."""

    workflow_id: str
    journey_key: str
    journey_version: int | None = None
    contact_id: str
    step: str
    iteration: int = 1
    now: datetime
    entry_id: str = Field(
        default="",
        description="the entry's first run id: a contact re-entering reuses the workflow id",
    )
    entered_at: datetime | None = Field(default=None, description="when the run's entry began")
    transitions: list[StepTransition] = Field(
        default_factory=list,
        description="step visits the run buffered since its last activity: written by this one")

    @property
    def idempotency_key(self) -> str:
        """`<workflow id>[/<entry>]/<step>/<iteration>`: one side effect per visit of a step."""
        entry = f"/{self.entry_id}" if self.entry_id else ""
        return f"{self.workflow_id}{entry}/{self.step}/{self.iteration}"


class LoadContactRequest(BaseModel):
    contact_id: str


class WaitPlanRequest(BaseModel):
    """A wait on the contact's own date or hours (`wait_until` an attribute, `wait_for_window`):
    the activity reads the date and the time zone, the run gets only the deadline."""

    context: StepContext
    wait_until: WaitUntil | None = None
    window: Window | None = None
    default_timezone: str = "UTC"


class WaitPlan(BaseModel):
    deadline: datetime | None = Field(
        default=None, description="None: the date attribute is missing or not a date"
    )


class ConditionRequest(BaseModel):
    context: StepContext
    condition: Condition
    trigger: EventMessage | None = None
    entered_at: datetime | None = None
    caught_events: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="the events named by the condition's `property`+`event` parts, as the "
                    "journey's wait_for_event steps last caught them (event name -> event)",
    )


class VerdictResult(BaseModel):
    result: bool
    reason: str


SendStatus = Literal[
    "ready", "sent", "skipped:unreachable", "skipped:consent", "skipped:quiet_hours",
    "skipped:frequency_cap", "deferred:quiet_hours", "deferred:frequency_cap", "failed",
    "unconfirmed",
]
SEND_STATUSES: tuple[SendStatus, ...] = (
    "ready", "sent", "skipped:unreachable", "skipped:consent", "skipped:quiet_hours",
    "skipped:frequency_cap", "deferred:quiet_hours", "deferred:frequency_cap", "failed",
    "unconfirmed",
)
PROVIDER_UNAVAILABLE = "ProviderUnavailable"
"""Error type of a provider failure that may pass: Temporal retries (after Retry-After)."""
PROVIDER_REJECTED = "ProviderRejected"
"""Error type of a send the provider refused for good: the step tries its next channel."""


class SendRequest(BaseModel):
    """A `send` step: which channels to try, the template (carried in the definition), the scope."""

    context: StepContext
    send: Send
    template: TemplateParts
    trigger: EventMessage | None = None
    journey_context: dict[str, Any] = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    default_timezone: str = "UTC"
    channel: str | None = Field(
        default=None,
        description="the channel prepare_send chose; none: deliver_message plans the send itself",
    )
    when_held: HeldChoice = "wait"
    track_links: bool | None = Field(default=None,
                                     description="the journey's settings.track_links")
    track_opens: bool | None = Field(default=None,
                                     description="the journey's settings.track_opens")
    exclude: list[str] = Field(
        default_factory=list, description="channels a provider refused for good on this visit"
    )
    attempt: int = Field(default=0, description="0, then 1, 2... for each fallback channel")
    closes_entry: bool = Field(
        default=False,
        description="the run ends `completed` right after this send (`next: end`, no "
                    "`on_failure`): a send settled `sent` closes the run's entry in the "
                    "transaction that records it, and says so (`SendOutcome.entry_closed`), so "
                    "the run needs no `finish_entry` of its own")
    variant: str | None = Field(
        default=None, description="the arm the run chose (a send with variants); `template` "
                                  "holds its parts")
    variant_templates: dict[str, TemplateParts] = Field(
        default_factory=dict, description="every arm's parts, for an automatic experiment: the "
                                          "delivery switches to a decided winner")
    goal_events: list[str] = Field(
        default_factory=list, description="the events of the exit goal an automatic "
                                          "experiment measures")

    @property
    def template_name(self) -> str:
        """The template this send renders: its variant's, else the send's."""
        chosen = self.send.variant(self.variant) if self.variant else None
        return chosen.template if chosen is not None else self.send.template

    @property
    def ledger_key(self) -> str:
        """The step's idempotency key; a fallback channel after a refusal gets its own row."""
        key = self.context.idempotency_key
        return key if self.attempt == 0 else f"{key}/fallback-{self.attempt}"

    def candidates(self) -> list[str]:
        return [c for c in self.send.candidates() if c not in self.exclude]


class SendPlan(BaseModel):
    """Whether and where a send can go now: `ready`, held until `hold_until`, or skipped."""

    status: SendStatus
    channel: str | None = None
    hold_until: datetime | None = None
    reason: str = ""


class SendOutcome(BaseModel):
    """What `deliver_message` did; when it planned the send itself (no channel in the request),
    possibly that it holds it (`deferred:*`) until `hold_until`."""

    status: SendStatus
    channel: str | None = None
    delivery_id: int | None = None
    reason: str = ""
    hold_until: datetime | None = None
    variant: str | None = Field(default=None, description="the variant sent (a send with "
                                "variants; an experiment's winner once decided)")
    entry_closed: bool = Field(default=False, description="the send closed the run's entry "
                               "`completed` with its ledger row (`SendRequest.closes_entry`)")


class ArmRequest(BaseModel):
    """A split with an `experiment:`: record the contact's arm, or give it the decided winner."""

    context: StepContext
    split: Split
    hashed: str = Field(description="the arm the contact's bucket gives")
    goal_events: list[str] = Field(default_factory=list)


class ArmChoice(BaseModel):
    arm: str
    reason: str


class ScoreRequest(BaseModel):
    context: StepContext
    change: ScoreChange


class ScoreResult(BaseModel):
    dimension: str
    total: int


class ProfileUpdateRequest(BaseModel):
    context: StepContext
    update: ProfileUpdate
    trigger: EventMessage | None = Field(
        default=None, description="the trigger, in scope of Liquid `set` values (else unused)"
    )
    journey_context: dict[str, Any] = Field(
        default_factory=dict, description="the journey's context, in scope of Liquid `set` values"
    )


class TaskRequest(BaseModel):
    context: StepContext
    task: TaskSpec
    trigger: EventMessage | None = None


class TaskResult(BaseModel):
    task_id: int
    title: str | None = Field(
        default=None,
        description="no longer set: the rendered title names the contact (it is in the store)",
    )


class ActionRequest(BaseModel):
    """`notify`, `webhook`, `audience` and `start_journey`, recorded in the deliveries ledger."""

    context: StepContext
    kind: Literal["notify", "webhook", "audience", "start_journey"]
    notify: Notify | None = None
    webhook: Webhook | None = None
    audience: AudienceSync | None = None
    start_journey: StartJourney | None = None
    template: TemplateParts | None = None
    trigger: EventMessage | None = None
    journey_context: dict[str, Any] = Field(default_factory=dict)


class ActionResult(BaseModel):
    delivery_id: int
    status: str
    response: Any = Field(
        default=None,
        description="a webhook's answer by reference (`saved_response`); the answer itself stays "
                    "in the ledger row. Runs recorded before this held the answer here.",
    )


SAVED_RESPONSE = "saved_response"
"""The key of a reference to a webhook's answer kept in the deliveries ledger."""


def saved_response(delivery_id: int, status: str) -> dict[str, Any]:
    """What a run keeps of a webhook's answer (`save_as`): the ledger row's id and its status.

    The answer is whatever the receiver knows of the contact (names, addresses, orders), so it
    stays in the store, and a template that reads `journey.<save_as>` reads it from there
    (`activities.context.journey_scope`)."""
    return {SAVED_RESPONSE: delivery_id, "status": status}


def saved_response_id(value: Any) -> int | None:
    """The ledger row a kept value refers to, or None when the value is not a reference."""
    if isinstance(value, dict) and set(value) == {SAVED_RESPONSE, "status"} \
            and isinstance(value[SAVED_RESPONSE], int):
        return value[SAVED_RESPONSE]
    return None


class EntryFinish(BaseModel):
    workflow_id: str
    journey_key: str
    contact_id: str
    outcome: str
    now: datetime
    reason: str | None = Field(default=None, description="why a `failed` run failed")
    context: StepContext | None = Field(
        default=None, description="the run's last step and its buffered step transitions")


class UnconfirmedSweep(BaseModel):
    """Ask the providers that can tell about the unconfirmed sends, oldest first."""

    limit: int = 200


class FailedEntrySweep(BaseModel):
    """Close the open entries whose run ended without closing them (`cairn.failed_runs`)."""

    now: datetime
    limit: int = 500
