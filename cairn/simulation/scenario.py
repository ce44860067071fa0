"""Scenarios: the script a simulation plays (docs/simulation.md, "The scenario file").

A scenario says when the clock starts (`now`), who the contact is as stored before the first event,
which calls their backend makes and when (`events`), where the clock stops (`until`), and, when it
carries one, the delivery policy to apply instead of the one beside the journey (`policy`). Here
they are parsed and validated: every problem names its field, so a user can fix the file.

This module does not run anything; `cairn.simulation.engine` plays a `Scenario`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cairn.contact import ContactSnapshot, WebPushSubscription
from cairn.delivery_policy import DeliveryPolicy
from cairn.durations import DurationError, parse_duration
from cairn.local_time import TimezoneError, zone
from cairn.simulation.errors import ScenarioError
from cairn.simulation.report import utc_text

DEFAULT_UNTIL = "+30d"
"""Where the clock stops when a scenario does not say (`until`)."""


def _moment(value: Any) -> Any:
    """Accept an offset from `now` (`+3h`, `+0s`, `90m`) or an absolute ISO-8601 time."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{value.isoformat()} has no UTC offset; write e.g. 2026-03-02T09:00:00Z"
            )
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an offset such as '+3h' or an ISO time, got {value!r}")
    text = value.strip()
    if text[:1] in "+-" or (text[:1].isdigit() and not _looks_like_date(text)):
        try:
            delta = parse_duration(text)
        except DurationError as error:
            raise ValueError(str(error)) from error
        if delta < timedelta(0):
            raise ValueError(f"offset {text!r} is before `now`; the clock only moves forward")
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(
            f"{text!r} is neither an offset ('+3h', '+0s', '+30d') nor an ISO time "
            "('2026-03-02T09:00:00Z')"
        ) from error
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; write e.g. 2026-03-02T09:00:00Z")
    return moment


def _looks_like_date(text: str) -> bool:
    return len(text) >= 10 and text[4] == "-" and text[7] == "-"


Moment = Annotated[str | datetime, BeforeValidator(_moment)]
"""An offset from the scenario's `now` (kept as written) or an absolute aware datetime."""


def resolve_moment(moment: str | datetime, now: datetime) -> datetime:
    """The absolute UTC instant a `Moment` names, given the scenario's `now`."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return (now + parse_duration(moment)).astimezone(UTC)


class ScenarioModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioContact(ScenarioModel):
    """The contact as it is when the clock starts; written to the store before any event."""

    id: str = Field(min_length=1, max_length=255)
    timezone: str | None = None
    email: str | None = None
    phone: str | None = None
    push_tokens: list[str] = Field(default_factory=list)
    web_push: list[WebPushSubscription] = Field(default_factory=list)
    consent: dict[str, Any] = Field(default_factory=dict)
    suppressed: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, int] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zone(value)
            except TimezoneError as error:
                raise ValueError(str(error)) from error
        return value

    def snapshot(self, now: datetime) -> ContactSnapshot:
        return ContactSnapshot(
            id=self.id,
            timezone=self.timezone,
            email=self.email,
            phone=self.phone,
            push_tokens=self.push_tokens,
            web_push=self.web_push,
            consent=self.consent,
            suppressed=self.suppressed,
            attributes=self.attributes,
            tags=self.tags,
            scores=self.scores,
            segments=self.segments,
            first_seen_at=now,
            last_seen_at=now,
        )


class ScenarioEvent(ScenarioModel):
    """One call the contact's backend makes: a `track` (default) or an `identify` with traits;
    or the contact clicking a link of a message they got (`click: <label>`, `type: click`)."""

    at: Moment = "+0s"
    type: Literal["track", "identify", "click"] = "track"
    event: str | None = Field(default=None, min_length=1, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    message_id: str | None = Field(default=None, min_length=1, max_length=255)
    click: str | None = Field(
        default=None, min_length=1,
        description="the link clicked: its label (anchor text or data-label) or its address")
    step: str | None = Field(
        default=None, min_length=1,
        description="the send step whose message is clicked; default: the latest message "
                    "sent with such a link")

    @model_validator(mode="before")
    @classmethod
    def _click_form(cls, data: Any) -> Any:
        """`{click: "View cart"}` is a click without saying `type: click`."""
        if isinstance(data, Mapping) and "click" in data and "type" not in data:
            return {**data, "type": "click"}
        return data

    @model_validator(mode="after")
    def _fits_type(self) -> ScenarioEvent:
        if self.type == "click":
            if self.click is None:
                raise ValueError("a click needs `click` (the link's label or address)")
            if self.event is not None or self.properties or self.traits:
                raise ValueError("a click records `link_clicked` itself; give only `click` "
                                 "and optionally `step`")
            return self
        if self.click is not None or self.step is not None:
            raise ValueError("`click` and `step` belong to a click (`type: click`)")
        if self.type == "track":
            if self.event is None:
                raise ValueError("a track event needs `event` (its name)")
            if self.traits:
                raise ValueError("`traits` belong to `type: identify`; track takes `properties`")
        else:
            if self.properties:
                raise ValueError("`properties` belong to track events; identify takes `traits`")
            if self.event is not None:
                raise ValueError("an identify call has no `event` name; give `traits`")
        return self

    @property
    def label(self) -> str:
        if self.type == "click":
            return "link_clicked"
        return self.event if self.type == "track" and self.event else "identify"


class Scenario(ScenarioModel):
    """The clock's start, the contact, the events, where the clock stops, and the scenario's
    own delivery policy (same schema as `policies/delivery.yaml`) when it has one."""

    now: AwareDatetime
    contact: ScenarioContact
    events: list[ScenarioEvent] = Field(default_factory=list)
    until: Moment = DEFAULT_UNTIL
    policy: DeliveryPolicy | None = Field(
        default=None,
        description="replaces the delivery policy beside the journey for this scenario",
    )

    @model_validator(mode="after")
    def _in_order_of_time(self) -> Scenario:
        stop = self.stop_at
        if stop < self.now:
            raise ValueError(f"until ({utc_text(stop)}) is before now ({utc_text(self.now)})")
        for index, event in enumerate(self.events):
            at = resolve_moment(event.at, self.now)
            if at < self.now:
                raise ValueError(
                    f"events[{index}].at ({utc_text(at)}) is before now ({utc_text(self.now)})"
                )
            if at > stop:
                raise ValueError(
                    f"events[{index}].at ({utc_text(at)}) is after until ({utc_text(stop)}); "
                    "move `until` later"
                )
        return self

    @property
    def stop_at(self) -> datetime:
        return resolve_moment(self.until, self.now)

    def timeline(self) -> list[tuple[datetime, str, ScenarioEvent]]:
        """Events in time order (ties keep file order), with their instant and message id."""
        numbered = [
            (resolve_moment(event.at, self.now), event.message_id or f"sim-{index + 1:03d}", event)
            for index, event in enumerate(self.events)
        ]
        return sorted(numbered, key=lambda item: item[0])


def _field_path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the path already names it
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_scenario(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate a scenario mapping; every problem is reported with its field path."""
    if isinstance(data, Scenario):
        return data
    if not isinstance(data, Mapping):
        raise ScenarioError(source, [f"expected a mapping with now, contact, events, until; got "
                                     f"{type(data).__name__}"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{_field_path(item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        ]
        raise ScenarioError(source, problems) from None


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file (YAML or JSON)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, ["file not found"]) from None
    except OSError as error:
        raise ScenarioError(source, [f"cannot read it: {error.strerror}"]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ScenarioError(source, [f"line {error.lineno}: bad JSON: {error.msg}"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ScenarioError(source, [f"{where}bad YAML: {problem}"]) from None
    return parse_scenario(data, source=source)
