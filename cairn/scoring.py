"""Lead scoring rules: which events add (or take) points, in which dimension, and the thresholds
whose crossing the sales team wants to hear about. Kept in `scoring/*.yaml` beside the journeys.

```yaml
key: engagement
rules:
  - {event: form_submitted, add: 10, reason: submitted a form}
  - {event: purchase, where: {total: {gte: 100}}, add: 20, dimension: "stage:negotiation"}
decay:
  - {segment_entered: inactive_30d, add: -50}
  - {without: login, after: 7d, add: -10}
thresholds:
  global: [50]
```

A dimension is `global`, `stage:<sales stage>` or `tag:<tag>`, as in SALESmanago's multi-level
scoring. A decay rule on entering a segment is an ordinary rule on the `segment_entered` event;
a decay "after N days without an event" (an inactivity decay) is time-based: only a sweep can notice
an absence, so the hourly segment sweep applies it (`activities.sweeps`), once per inactivity
period (see `InactivityDecay`). This module parses and validates definitions and says which rules
an event matches; reading the files is `cairn.catalog_folder`, applying the rules is
`cairn.events.profile_rules` and the sweep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from cairn.conditions import Condition, Spec, evaluate_event_filter, parse_condition
from cairn.durations import PositiveDuration, parse_duration
from cairn.journey_run import EventMessage
from cairn.problems import DefinitionFileError, Problem, model_problems

SEGMENT_ENTERED = "segment_entered"
SEGMENT_EXITED = "segment_exited"
SCORE_CROSSED = "score_crossed"

_SYSTEM_EVENTS = (SEGMENT_ENTERED, SEGMENT_EXITED, SCORE_CROSSED)
"""Events Cairn stores itself: their absence says nothing about the contact."""

DIMENSION_PATTERN = r"^(global|stage:[A-Za-z0-9_.-]+|tag:[A-Za-z0-9_.-]+)$"
_DIMENSION_HELP = "use global, stage:<sales stage> or tag:<tag>"


class ScoringFileError(DefinitionFileError):
    """Scoring files that cannot be used; `.problems` lists every fix, with file and field."""

    holds = "scoring rules"


def _dimension(value: str) -> str:
    if not re.match(DIMENSION_PATTERN, value):
        raise ValueError(f"unknown dimension {value!r}: {_DIMENSION_HELP}")
    return value


class ScoringRule(Spec):
    """`event` (matching `where`) adds `add` points (negative to take) to `dimension`."""

    event: str = Field(min_length=1)
    where: Condition | None = None
    add: int
    dimension: str = "global"
    reason: str | None = None

    _check_dimension = field_validator("dimension")(_dimension)

    @field_validator("add")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("a rule that adds 0 points does nothing; give a positive or "
                             "negative number")
        return value

    def says(self) -> str:
        """The reason written in the score history."""
        return self.reason or f"{self.event} {self.add:+d}"


class DecayRule(Spec):
    """Points taken (or given) on entering a segment, or after a time without an event.

    `{segment_entered: inactive_30d, add: -50}` scores the contact's entry into the segment;
    `{without: login, after: 7d, add: -10}` scores an inactivity period: `after` has passed since
    the contact's last `login` (or since first seen, for a contact who never logged in).
    """

    segment_entered: str | None = Field(default=None, min_length=1)
    without: str | None = Field(default=None, min_length=1,
                                description="event whose absence decays the score")
    after: PositiveDuration | None = Field(
        default=None, description="how long without the event before the decay applies")
    add: int
    dimension: str = "global"
    reason: str | None = None

    _check_dimension = field_validator("dimension")(_dimension)

    @field_validator("add")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("a decay that adds 0 points does nothing; give a negative (or "
                             "positive) number")
        return value

    @model_validator(mode="before")
    @classmethod
    def _after_not_for(cls, data: Any) -> Any:
        if isinstance(data, dict) and "for" in data:
            raise ValueError(f"unknown field 'for': how long without the event is `after` "
                             f"(after: {data['for']})")
        return data

    @model_validator(mode="after")
    def _one_trigger(self) -> DecayRule:
        if (self.segment_entered is None) == (self.without is None):
            raise ValueError("a decay rule needs exactly one of: segment_entered (a segment "
                             "key) or without (an event name, with after: a duration)")
        if self.without is not None and self.after is None:
            raise ValueError("`without` needs `after`: how long without the event (e.g. 7d)")
        if self.segment_entered is not None and self.after is not None:
            raise ValueError("`after` goes with `without`, not with `segment_entered`")
        if self.without in _SYSTEM_EVENTS:
            raise ValueError(f"`without: {self.without}`: Cairn emits {self.without} itself; "
                             "name an event contacts do (e.g. login)")
        return self

    @property
    def time_based(self) -> bool:
        """True for "after N days without an event": only a sweep can notice an absence."""
        return self.without is not None

    def as_rule(self) -> ScoringRule | None:
        """A decay on entering a segment is a rule on the `segment_entered` event."""
        if self.segment_entered is None:
            return None
        return ScoringRule.model_validate({
            "event": SEGMENT_ENTERED,
            "where": parse_condition({"properties.segment": self.segment_entered}),
            "add": self.add,
            "dimension": self.dimension,
            "reason": self.reason or f"entered {self.segment_entered} {self.add:+d}",
        })


@dataclass(frozen=True)
class InactivityDecay:
    """A `without`/`after` decay with its stable id (`<file key>.decay<index>`), ready to apply.

    An inactivity period starts at the contact's last `without` event at or before the moment
    judged (first seen, or created, for a contact who never did it) and is due once `after` has
    passed. It is applied once per period: the change is keyed by rule, contact and the period's
    start (`decay_key`), so every later sweep finds it recorded until the contact does the event
    again, which starts a new period.
    """

    id: str
    rule: DecayRule

    @property
    def event(self) -> str:
        assert self.rule.without is not None
        return self.rule.without

    @property
    def after(self) -> timedelta:
        assert self.rule.after is not None
        return parse_duration(self.rule.after)

    def due(self, since: datetime, now: datetime) -> bool:
        """Whether a period that started at `since` has lasted `after` at `now`."""
        return now - since >= self.after

    def key(self, contact_id: str, since: datetime) -> str:
        """The score history's idempotency key of this decay for one period of one contact."""
        return decay_key(self.id, contact_id, since)

    def says(self) -> str:
        """The reason written in the score history."""
        return self.rule.reason or f"no {self.event} for {self.rule.after} {self.rule.add:+d}"


def decay_key(rule_id: str, contact_id: str, since: datetime) -> str:
    """`decay/<rule id>/<contact>/<period start, ISO UTC>`: one change per inactivity period."""
    return f"decay/{rule_id}/{contact_id}/{since.isoformat()}"


class ScoringRules(Spec):
    """One scoring file: its rules, decay rules and the thresholds per dimension."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,127}$")
    name: str | None = None
    description: str | None = None
    rules: list[ScoringRule] = Field(default_factory=list)
    decay: list[DecayRule] = Field(default_factory=list)
    thresholds: dict[str, list[int]] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _known_dimensions(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for dimension, levels in value.items():
            _dimension(dimension)
            if len(set(levels)) != len(levels):
                raise ValueError(f"{dimension}: a threshold is listed twice")
        return {dimension: sorted(levels) for dimension, levels in value.items()}

    @model_validator(mode="after")
    def _something(self) -> ScoringRules:
        if not self.rules and not self.decay and not self.thresholds:
            raise ValueError("a scoring file needs rules, decay or thresholds")
        return self


@dataclass(frozen=True)
class RuleRef:
    """A rule with its stable id (`<file key>.<index>` or `<file key>.decay<index>`)."""

    id: str
    rule: ScoringRule


@dataclass
class Scoring:
    """Every scoring file, ready to apply: event rules (decays included) and thresholds."""

    files: list[ScoringRules]

    def rules(self) -> list[RuleRef]:
        found = []
        for file in self.files:
            found += [RuleRef(f"{file.key}.{i}", rule) for i, rule in enumerate(file.rules)]
            for i, decay in enumerate(file.decay):
                rule = decay.as_rule()
                if rule is not None:
                    found.append(RuleRef(f"{file.key}.decay{i}", rule))
        return found

    def inactivity_decays(self) -> list[InactivityDecay]:
        """The `without`/`after` decays, in file order, with the ids `rules()` would give them."""
        return [
            InactivityDecay(f"{file.key}.decay{i}", decay)
            for file in self.files for i, decay in enumerate(file.decay) if decay.time_based
        ]

    def matching(self, event: EventMessage, now: datetime) -> list[RuleRef]:
        """The rules this event triggers, in file order."""
        scope = event.as_scope()
        return [
            ref for ref in self.rules()
            if ref.rule.event == event.event
            and (ref.rule.where is None or evaluate_event_filter(ref.rule.where, scope, now).result)
        ]

    def thresholds(self, dimension: str) -> list[int]:
        levels: set[int] = set()
        for file in self.files:
            levels.update(file.thresholds.get(dimension, []))
        return sorted(levels)


@dataclass(frozen=True)
class Crossing:
    """A score passed a threshold: `up` when it reached it, `down` when it fell below it."""

    dimension: str
    threshold: int
    direction: str
    total: int


def crossings(dimension: str, before: int, after: int, thresholds: list[int]) -> list[Crossing]:
    """Thresholds passed by going from `before` to `after` (reaching a threshold counts as up)."""
    found = []
    for level in thresholds:
        if before < level <= after:
            found.append(Crossing(dimension, level, "up", after))
        elif after < level <= before:
            found.append(Crossing(dimension, level, "down", after))
    return found


_RULES: TypeAdapter[ScoringRules] = TypeAdapter(ScoringRules)


def _prepared(data: dict[str, Any]) -> dict[str, Any]:
    """Expand `where` filter shorthands, as journeys do."""
    rules = data.get("rules")
    if isinstance(rules, list):
        data = {**data, "rules": [
            {**r, "where": parse_condition(r["where"])} if isinstance(r, dict) and "where" in r
            else r for r in rules
        ]}
    return data


def parse_scoring(file: str, data: Any) -> tuple[ScoringRules | None, list[Problem]]:
    """One scoring file's content, or the problems (with file and field) that stop it."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return None, [Problem(file, "", "a scoring file holds one mapping (key, rules, decay, "
                                        f"thresholds); this one is {kind}")]
    try:
        return _RULES.validate_python(_prepared(data)), []
    except ValidationError as error:
        return None, model_problems(file, error, data)


__all__ = [
    "SCORE_CROSSED",
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "Crossing",
    "DecayRule",
    "InactivityDecay",
    "RuleRef",
    "Scoring",
    "ScoringFileError",
    "ScoringRule",
    "ScoringRules",
    "crossings",
    "decay_key",
    "parse_scoring",
]
