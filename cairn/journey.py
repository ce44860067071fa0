"""The journey language: trigger, entry rules, exit goals and a graph of steps, as pydantic models.

A journey file is YAML or JSON; `cairn.journey_files` loads it (with its templates) and checks the
graph. Each step is a mapping with exactly one kind key (`wait`, `if`, `send`, ...) plus routing
keys beside it (`next`, `then`/`else`, `then`/`timeout_next`, `paths`). Each kind of step is one
model (its `kind`, `role`, `describe` and routes), listed once in `STEP_MODELS`. A model dumps back
to the same shape, so the definition a contact entered with travels in its workflow as written.
"""

from __future__ import annotations

from datetime import datetime
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from cairn.conditions import Condition, Spec, describe_condition, parse_condition
from cairn.durations import Duration, PositiveDuration, TimeOfDay

END = "end"
"""`next: end` finishes the journey (outcome `completed`)."""

Channel = Literal["email", "sms", "whatsapp", "push", "web_push", "in_app", "on_site"]
CHANNELS: tuple[str, ...] = get_args(Channel)
Category = Literal["transactional", "marketing"]
HeldChoice = Literal["wait", "skip"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _where(value: Any) -> Any:
    return parse_condition(value) if value is not None else None


# --------------------------------------------------------------------------- step bodies


class WaitUntil(Spec):
    """An absolute moment, or a date attribute shifted by `offset` at a local `time` of day."""

    at: datetime | None = None
    attribute: str | None = None
    offset: Duration = "0s"
    time: TimeOfDay | None = None

    @model_validator(mode="after")
    def _one_anchor(self) -> WaitUntil:
        if (self.at is None) == (self.attribute is None):
            raise ValueError("give either `at` (ISO date-time) or `attribute` (a date attribute)")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("`at` needs a UTC offset, e.g. 2026-12-24T10:00:00Z")
        return self


class Window(Spec):
    """Allowed days and hours in the contact's time zone (`from` inclusive, `to` exclusive)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    from_: TimeOfDay = Field(alias="from")
    to: TimeOfDay


class WaitForEvent(Spec):
    event: str
    where: Condition | None = None
    timeout: PositiveDuration
    since: Literal["step", "entry"] = "step"

    _prepare_where = field_validator("where", mode="before")(classmethod(lambda cls, v: _where(v)))


class SplitPath(Spec):
    percent: float = Field(gt=0, le=100)
    next: str
    name: str | None = None


MetricKind = Literal["clicks", "opens", "goal", "event"]
HOLDOUT_ARM = "holdout"
"""The arm name of a split's holdout (the control of the experiment when there is one)."""


class ExperimentMetric(Spec):
    """What an experiment measures per contact: `clicks` or `opens` of the send's message (from
    the providers' feedback), an exit `goal` of the journey, or any `event`, within the window."""

    kind: MetricKind
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            kind, _, name = data.partition(":")
            return {"kind": kind.strip(), **({"name": name.strip()} if name else {})}
        if isinstance(data, dict) and "kind" not in data:
            named = [k for k in ("goal", "event") if k in data]
            if len(named) == 1 and len(data) == 1:
                return {"kind": named[0], "name": data[named[0]]}
            raise ValueError("metric: write clicks, opens, {goal: <exit goal>} or "
                             "{event: <event name>}")
        return data

    @model_validator(mode="after")
    def _named(self) -> ExperimentMetric:
        if self.kind in ("goal", "event") and not self.name:
            raise ValueError(f"metric {self.kind} needs a name: {{{self.kind}: <name>}}")
        if self.kind in ("clicks", "opens") and self.name:
            raise ValueError(f"metric {self.kind} takes no name")
        return self

    def describe(self) -> str:
        return f"{self.kind} {self.name}" if self.name else self.kind


class Experiment(Spec):
    """Measure the arms of a send's `variants` or a split's paths (and holdout), and optionally
    pick a winner: `then: winner` gives every later entrant the winning arm once `min_per_arm`
    contacts per arm show one arm better at `confidence`."""

    metric: ExperimentMetric
    within: PositiveDuration = Field(default="7d", description="how long after the contact got "
                                     "its arm the metric counts")
    min_per_arm: int = Field(default=100, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    method: Literal["z_test", "probability"] = Field(
        default="z_test", description="two-proportion z-test, or the probability to be best")
    control: str | None = Field(default=None, description="the arm others are compared with "
                                "(default: the holdout, else the first arm)")
    then: Literal["winner", "report"] = Field(
        default="report", description="winner: new entrants get the winning arm once decided")

    @property
    def automatic(self) -> bool:
        return self.then == "winner"


class Split(Spec):
    """Deterministic per contact: the same contact always takes the same path."""

    paths: list[SplitPath] = Field(min_length=1)
    holdout: float = Field(default=0, ge=0, lt=100)
    experiment: Experiment | None = None

    @model_validator(mode="after")
    def _adds_up(self) -> Split:
        total = sum(p.percent for p in self.paths) + self.holdout
        if abs(total - 100) > 1e-6:
            raise ValueError(f"paths and holdout must add up to 100 percent, not {total}")
        if self.experiment is not None:
            names = self.arm_names()
            if len(set(names)) != len(names):
                raise ValueError("an experiment's split paths need distinct names (`name:`)")
            if len(names) < 2:
                raise ValueError("an experiment needs at least two arms (paths or a holdout)")
            if self.experiment.metric.kind in ("clicks", "opens"):
                raise ValueError(f"a split's experiment cannot measure "
                                 f"{self.experiment.metric.kind} (no message of its own): "
                                 "use {goal: ...} or {event: ...}")
            control = self.experiment.control
            if control is not None and control not in names:
                raise ValueError(f"experiment.control: unknown arm {control!r} "
                                 f"(arms: {', '.join(names)})")
        return self

    def path_name(self, index: int) -> str:
        return self.paths[index].name or f"path {index + 1}"

    def arm_names(self) -> list[str]:
        names = [self.path_name(i) for i in range(len(self.paths))]
        return [HOLDOUT_ARM, *names] if self.holdout else names

    def control_arm(self) -> str:
        if self.experiment is not None and self.experiment.control:
            return self.experiment.control
        return self.arm_names()[0]


class Variant(Spec):
    """One version of a send's message: its template and share of contacts."""

    template: str
    weight: float = Field(default=1, gt=0, description="relative share of contacts")
    name: str | None = Field(default=None, description="arm name (default: the template)")

    @property
    def arm(self) -> str:
        return self.name or self.template


class Send(Spec):
    channel: Channel | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1)
    template: str = Field(description="the message; with `variants`, the first variant's "
                                      "template (filled in when left out)")
    variants: list[Variant] | None = Field(
        default=None, min_length=2,
        description="an A/B test: each contact gets one variant, deterministically, by weight")
    experiment: Experiment | None = None
    category: Category = "marketing"
    topic: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="subscription topic (newsletter, product_updates): unsubscribing from it stops "
                    "only these messages",
    )
    when_held: HeldChoice | None = Field(
        default=None,
        description="wait (default) or skip when quiet hours or a frequency cap hold the message; "
                    "overrides the journey's settings.when_held",
    )
    track_links: bool | None = Field(
        default=None,
        description="rewrite the message's links to tracked redirects (`link_clicked`); "
                    "overrides the journey's settings.track_links",
    )
    track_opens: bool | None = Field(
        default=None,
        description="add an open pixel to an email's HTML part; overrides the journey's "
                    "settings.track_opens",
    )
    on_failure: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _template_of_variants(cls, data: Any) -> Any:
        variants = data.get("variants") if isinstance(data, dict) else None
        if isinstance(variants, list) and variants and "template" not in data:
            first = variants[0]
            template = first.get("template") if isinstance(first, dict) else getattr(
                first, "template", None)
            if isinstance(template, str):
                return {**data, "template": template}
        return data

    @model_validator(mode="after")
    def _one_channel_form(self) -> Send:
        if (self.channel is None) == (self.channels is None):
            raise ValueError("give either `channel` or `channels` (first reachable wins)")
        if self.variants is None:
            if self.experiment is not None:
                raise ValueError("an experiment on a send needs `variants` to compare")
            return self
        names = [v.arm for v in self.variants]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"variant names must differ: {', '.join(doubles)} more than once "
                             "(give each a `name`)")
        if self.template != self.variants[0].template:
            raise ValueError("give either `template` or `variants`, not both")
        control = self.experiment.control if self.experiment else None
        if control is not None and control not in names:
            raise ValueError(f"experiment.control: unknown variant {control!r} "
                             f"(variants: {', '.join(names)})")
        return self

    def templates(self) -> list[str]:
        """Every template the send may use (each variant's)."""
        if self.variants:
            return list(dict.fromkeys(v.template for v in self.variants))
        return [self.template]

    def variant(self, arm: str) -> Variant | None:
        return next((v for v in self.variants or [] if v.arm == arm), None)

    def candidates(self) -> list[str]:
        return [self.channel] if self.channel else list(self.channels or [])


class ScoreChange(Spec):
    dimension: str = "global"
    add: int
    reason: str | None = None


class ProfileUpdate(Spec):
    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> ProfileUpdate:
        if not (self.set or self.unset or self.add_tags or self.remove_tags):
            raise ValueError("give at least one of set, unset, add_tags, remove_tags")
        return self


class Webhook(Spec):
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    save_as: str | None = None


class Notify(Spec):
    to: str
    template: str


class TaskSpec(Spec):
    queue: str
    title: str
    due: PositiveDuration | None = None
    note: str | None = None


class AudienceSync(Spec):
    sync: Literal["facebook", "google"]
    audience: str
    action: Literal["add", "remove"] = "add"


class StartJourney(Spec):
    journey: str


class EndBody(Spec):
    outcome: str | None = None


# --------------------------------------------------------------------------- steps

StepRole = Literal["wait", "decide", "act", "end"]
"""What a step does: wait (on a durable timer or for an event), decide where the contact goes,
act on the world (through an activity), or end. Graphs draw each role in its own shape, and the
interpreter's handlers are grouped by it (`workflows/steps/waiting.py`, `deciding.py`,
`acting.py`, `ending.py`)."""


class StepBase(Spec):
    """What every step has. A kind of step is a subclass that names its `kind` (its one kind key,
    also its field holding the body), its `role`, and says in `describe` what it does."""

    kind: ClassVar[str]
    role: ClassVar[StepRole]
    summary: str | None = Field(default=None, description="shown in the Temporal UI and graphs")

    def describe(self) -> str:
        """What the step does, in a few words, read from its definition (not its `summary`):
        the label of its node in graphs."""
        return self.kind

    def routes(self) -> list[tuple[str, str]]:
        """Where the step can go next, as (routing key, step name) pairs, in the order written."""
        found: list[tuple[str, str]] = []
        for key in ("next", "then", "else_", "timeout_next", "missing"):
            target = getattr(self, key, None)
            if isinstance(target, str):
                found.append((key.rstrip("_"), target))
        return found


class WaitStep(StepBase):
    kind = "wait"
    role = "wait"
    wait: PositiveDuration
    next: str

    def describe(self) -> str:
        return f"wait {self.wait}"


class WaitUntilStep(StepBase):
    kind = "wait_until"
    role = "wait"
    wait_until: WaitUntil
    next: str
    missing: str | None = Field(
        default=None, description="where to go when the date attribute is missing (default: next)"
    )

    def describe(self) -> str:
        spec = self.wait_until
        if spec.at is not None:
            return f"wait until {spec.at.isoformat()}"
        offset = "" if spec.offset in ("0s", "0") else f" {spec.offset}"
        clock = f" at {spec.time}" if spec.time else ""
        return f"wait until {spec.attribute}{offset}{clock}"


class WaitForWindowStep(StepBase):
    kind = "wait_for_window"
    role = "wait"
    wait_for_window: Window
    next: str

    def describe(self) -> str:
        window = self.wait_for_window
        return f"wait for {','.join(window.days)} {window.from_}-{window.to}"


class WaitForEventStep(StepBase):
    kind = "wait_for_event"
    role = "wait"
    wait_for_event: WaitForEvent
    then: str
    timeout_next: str

    def describe(self) -> str:
        return f"wait for {self.wait_for_event.event} up to {self.wait_for_event.timeout}"


class IfStep(StepBase):
    kind = "if"
    role = "decide"
    if_: Condition = Field(alias="if")
    then: str
    else_: str = Field(alias="else")

    _prepare_if = field_validator("if_", mode="before")(classmethod(lambda cls, v: _where(v)))

    def describe(self) -> str:
        return f"if {describe_condition(self.if_)}"


class SplitStep(StepBase):
    kind = "split"
    role = "decide"
    split: Split

    @model_validator(mode="before")
    @classmethod
    def _paths_beside(cls, data: Any) -> Any:
        """Accept `paths` (and `holdout`) beside `split:` as well as inside it."""
        if isinstance(data, dict) and ("paths" in data or "holdout" in data):
            data = dict(data)
            body = dict(data.get("split") or {})
            for key in ("paths", "holdout"):
                if key in data:
                    body[key] = data.pop(key)
            data["split"] = body
        return data

    def describe(self) -> str:
        return "split" + (f" ({self.split.holdout:g}% holdout)" if self.split.holdout else "")

    def routes(self) -> list[tuple[str, str]]:
        return [*super().routes(),
                *((f"paths[{i}]", p.next) for i, p in enumerate(self.split.paths))]


class SendStep(StepBase):
    kind = "send"
    role = "act"
    send: Send
    next: str

    def describe(self) -> str:
        return f"send {' or '.join(self.send.candidates())}: {' | '.join(self.send.templates())}"

    def routes(self) -> list[tuple[str, str]]:
        failure = [("on_failure", self.send.on_failure)] if self.send.on_failure else []
        return [*super().routes(), *failure]


class ScoreStep(StepBase):
    kind = "score"
    role = "act"
    score: ScoreChange
    next: str

    def describe(self) -> str:
        return f"score {self.score.dimension} {self.score.add:+d}"


class UpdateStep(StepBase):
    kind = "update"
    role = "act"
    update: ProfileUpdate
    next: str

    def describe(self) -> str:
        return "update profile"


class WebhookStep(StepBase):
    kind = "webhook"
    role = "act"
    webhook: Webhook
    next: str

    def describe(self) -> str:
        return f"{self.webhook.method} {self.webhook.url}"


class NotifyStep(StepBase):
    kind = "notify"
    role = "act"
    notify: Notify
    next: str

    def describe(self) -> str:
        return f"notify {self.notify.to}: {self.notify.template}"


class TaskStep(StepBase):
    kind = "task"
    role = "act"
    task: TaskSpec
    next: str

    def describe(self) -> str:
        return f"task for {self.task.queue}: {self.task.title}"


class AudienceStep(StepBase):
    kind = "audience"
    role = "act"
    audience: AudienceSync
    next: str

    def describe(self) -> str:
        sync = self.audience
        direction = "to" if sync.action == "add" else "from"
        return f"{sync.action} {direction} {sync.sync} audience {sync.audience}"


class StartJourneyStep(StepBase):
    kind = "start_journey"
    role = "act"
    start_journey: StartJourney
    next: str

    def describe(self) -> str:
        return f"start journey {self.start_journey.journey}"


class EndStep(StepBase):
    kind = "end"
    role = "end"
    end: EndBody = Field(default_factory=EndBody)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, dict) and "end" in data:
            body = data["end"]
            if body is None:
                return {**data, "end": {}}
            if isinstance(body, str):
                return {**data, "end": {"outcome": body}}
        return data

    def describe(self) -> str:
        return f"end: {self.end.outcome}" if self.end.outcome else "end"


STEP_MODELS: tuple[type[StepBase], ...] = (
    WaitStep, WaitUntilStep, WaitForWindowStep, WaitForEventStep,
    IfStep, SplitStep,
    SendStep, ScoreStep, UpdateStep, WebhookStep, NotifyStep, TaskStep, AudienceStep,
    StartJourneyStep,
    EndStep,
)
"""Every kind of step, in the order the language lists them: the one registry of step kinds."""

STEP_KINDS: dict[str, type[StepBase]] = {model.kind: model for model in STEP_MODELS}


def step_kind(data: Any) -> str | None:
    """The kind of a step: its one kind key (discriminator of `Step`)."""
    if isinstance(data, StepBase):
        return data.kind if STEP_KINDS.get(data.kind) is type(data) else None
    if not isinstance(data, dict):
        return None
    kinds = [k for k in STEP_KINDS if k in data]
    if not kinds and "paths" in data:
        return "split"  # `paths:` written beside the step, the routing-key form
    return kinds[0] if len(kinds) == 1 else None


if TYPE_CHECKING:
    Step = StepBase
else:
    Step = Annotated[
        reduce(or_, (Annotated[model, Tag(model.kind)] for model in STEP_MODELS)),
        Discriminator(
            step_kind,
            custom_error_type="step_kind",
            custom_error_message="a step needs exactly one kind key: " + ", ".join(STEP_KINDS),
        ),
    ]
"""Any step; told apart by its one kind key. (Built from `STEP_MODELS`, so type checkers see
the common base, and `isinstance` narrows a step to its kind.)"""


def successors(step: StepBase) -> list[tuple[str, str]]:
    """Where a step can go next, as (routing key, step name) pairs, in the order written."""
    return step.routes()


# --------------------------------------------------------------------------- journey


class DateAttributeTrigger(Spec):
    """N days before or after a date attribute, at a local time (`yearly` for birthdays)."""

    attribute: str
    offset: Duration = "0s"
    time: TimeOfDay = "09:00"
    yearly: bool = False


class ScheduleTrigger(Spec):
    """A cron schedule; every member of `segment` (or every contact) enters at each occurrence."""

    cron: str
    segment: str | None = None
    timezone: str = "UTC"


TRIGGER_KINDS = (
    "event", "segment_entered", "segment_exited", "attribute_changed", "date_attribute",
    "schedule", "geofence_entered", "geofence_exited", "imported", "api",
)

TRIGGER_EVENTS = {
    "segment_entered": "segment_entered",
    "segment_exited": "segment_exited",
    "attribute_changed": "attribute_changed",
    "date_attribute": "date_attribute_reached",
    "schedule": "schedule_fired",
    "geofence_entered": "geofence_entered",
    "geofence_exited": "geofence_exited",
    "imported": "journey_imported",
    "api": "journey_entry_requested",
}
"""The event each non-event trigger listens to; sweeps, imports and the API emit these."""


class Trigger(Spec):
    """What starts the journey for a contact: exactly one kind, optionally filtered by `where`.

    Every kind is an event underneath (`segment_entered: buyers` listens to `segment_entered`
    events whose `properties.segment` is `buyers`), so one router and one simulator serve all.
    """

    event: str | None = None
    segment_entered: str | None = None
    segment_exited: str | None = None
    attribute_changed: str | None = None
    from_: Any = Field(default=None, alias="from", description="attribute_changed: old value")
    to: Any = Field(default=None, description="attribute_changed: new value")
    date_attribute: DateAttributeTrigger | None = None
    schedule: ScheduleTrigger | None = None
    geofence_entered: str | None = None
    geofence_exited: str | None = None
    imported: bool | None = None
    api: bool | None = None
    where: Condition | None = None

    _prepare_where = field_validator("where", mode="before")(classmethod(lambda cls, v: _where(v)))

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        kinds = [k for k in TRIGGER_KINDS if getattr(self, k) not in (None, False)]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a trigger needs exactly one of {', '.join(TRIGGER_KINDS)} (found: {found})"
            )
        if (self.from_ is not None or self.to is not None) and kinds[0] != "attribute_changed":
            raise ValueError("`from` and `to` only apply to attribute_changed")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in TRIGGER_KINDS if getattr(self, k) not in (None, False))

    @property
    def event_name(self) -> str:
        """The name of the events that can start the journey."""
        return self.event if self.event is not None else TRIGGER_EVENTS[self.kind]

    def describe(self) -> str:
        kind = self.kind
        value = getattr(self, kind)
        if kind == "event":
            return f"event {value}"
        if kind == "date_attribute" and self.date_attribute is not None:
            return f"date_attribute {self.date_attribute.attribute} {self.date_attribute.offset}"
        if kind == "schedule" and self.schedule is not None:
            return f"schedule {self.schedule.cron}"
        return kind if isinstance(value, bool) else f"{kind} {value}"

    def admits(self, journey_key: str, properties: dict[str, Any]) -> tuple[bool, str]:
        """Whether an event named `event_name` is meant for this trigger, and why not."""
        kind = self.kind
        wanted: dict[str, Any] = {}
        if kind in ("segment_entered", "segment_exited"):
            wanted["segment"] = getattr(self, kind)
        elif kind in ("geofence_entered", "geofence_exited"):
            wanted["fence"] = getattr(self, kind)
        elif kind == "attribute_changed":
            wanted["attribute"] = self.attribute_changed
            if self.from_ is not None:
                wanted["from"] = self.from_
            if self.to is not None:
                wanted["to"] = self.to
        elif kind == "date_attribute" and self.date_attribute is not None:
            wanted = {"attribute": self.date_attribute.attribute, "journey": journey_key}
        elif kind in ("schedule", "imported", "api"):
            wanted["journey"] = journey_key
        for name, value in wanted.items():
            if properties.get(name) != value:
                return False, f"{self.describe()}: properties.{name} is {properties.get(name)!r}"
        return True, self.describe()


class EntryRules(Spec):
    reentry: Literal["never", "after_exit", "concurrent"] = "after_exit"
    key_by: str | None = Field(
        default=None, description="event field naming the entry (e.g. properties.order_id)"
    )
    min_interval: PositiveDuration | None = None

    @model_validator(mode="after")
    def _key_for_concurrent(self) -> EntryRules:
        if self.reentry == "concurrent" and not self.key_by:
            raise ValueError("reentry: concurrent needs key_by (the event field naming an entry)")
        if self.key_by and self.reentry != "concurrent":
            raise ValueError("key_by only applies to reentry: concurrent")
        return self


class ExitGoal(Spec):
    event: str
    where: Condition | None = None
    goal: str

    _prepare_where = field_validator("where", mode="before")(classmethod(lambda cls, v: _where(v)))


class QuietHours(Spec):
    from_: TimeOfDay = Field(alias="from")
    to: TimeOfDay


class JourneySettings(Spec):
    quiet_hours: QuietHours | None = None
    timezone: str = Field(default="UTC", description="used for contacts without a time zone")
    when_held: HeldChoice | None = Field(
        default=None,
        description="what a marketing send does when quiet hours or a frequency cap hold it: wait "
                    "on a durable timer until allowed (the default), or skip the message",
    )
    track_links: bool | None = Field(
        default=None,
        description="rewrite links in messages to signed redirects that record `link_clicked` "
                    "(docs/analytics.md, Click tracking); unset: true; false leaves every link "
                    "as written",
    )
    track_opens: bool | None = Field(
        default=None,
        description="add an open pixel to the HTML part of emails (`email_opened`); unset: off, "
                    "as mail clients that fetch images ahead of the reader count opens "
                    "nobody made",
    )


class Attribution(Spec):
    """Which messages a conversion counts for: those of the entry sent within `window` before
    the exit goal (the journey report's conversions per message, last touch and any touch)."""

    window: PositiveDuration = Field(
        default="7d", description="how long before a conversion a message still counts for it")


TemplateParts = dict[str, dict[str, str]]
"""A template: a part per channel (`email: {subject, body}`, `sms: {body}`, ...)."""


class Journey(Spec):
    key: str = Field(pattern=_KEY_PATTERN)
    name: str
    description: str | None = None
    version: int | None = Field(default=None, description="set when published")
    trigger: Trigger
    entry: EntryRules = Field(default_factory=EntryRules)
    exit: list[ExitGoal] = Field(default_factory=list)
    settings: JourneySettings = Field(default_factory=JourneySettings)
    attribution: Attribution = Field(default_factory=Attribution)
    start: str | None = Field(default=None, description="first step (default: the first listed)")
    steps: dict[str, Step] = Field(min_length=1)
    templates: dict[str, TemplateParts] = Field(
        default_factory=dict, description="filled from templates/ when loaded from a file"
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _step_names(cls, steps: Any) -> Any:
        if isinstance(steps, dict):
            for name in steps:
                if name == END:
                    raise ValueError("'end' is reserved (it means: finish the journey)")
        return steps

    @property
    def first_step(self) -> str:
        return self.start or next(iter(self.steps))

    def listens_to(self) -> set[str]:
        """Event names a running entry wants to hear about (waits and exit goals)."""
        names = {goal.event for goal in self.exit}
        for step in self.steps.values():
            if isinstance(step, WaitForEventStep):
                names.add(step.wait_for_event.event)
        return names
