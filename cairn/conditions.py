"""The condition language shared by `if` steps, trigger and goal filters (`where`) and segments.

A condition is one of: a comparison on a contact `attribute`, a `score` dimension or a `property` of
the event in scope; `in_segment`; `has_done`; `reachable`; or `all` / `any` / `not` of conditions.
Filters may also use the shorthand `{properties.value: {gte: 20}}` (a field path mapped to
comparisons or to a literal that must be equal), which loads as `all` of `property` comparisons.

Evaluation is pure except for `has_done`, whose counts come from a caller-supplied function (the
store in activities), so the same code decides in activities, in the router and in tests.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from cairn.durations import Duration, PositiveDuration, parse_duration

OPERATORS = (
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "starts_with", "exists",
    "older_than", "newer_than", "matches",
)


class Spec(BaseModel):
    """Base of every journey-language model.

    Unknown fields are errors (a typo must not be silently ignored), and a model dumps without the
    fields its author left out, so a definition carried in a workflow reads like its YAML file.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    @model_serializer(mode="wrap")
    def _drop_unset_none(self, handler: SerializerFunctionWrapHandler) -> Any:
        dumped = handler(self)
        if isinstance(dumped, dict):
            return {k: v for k, v in dumped.items() if v is not None}
        return dumped


class Comparison(Spec):
    """Operators applied to one value; every operator given must hold."""

    eq: Any = None
    ne: Any = None
    gt: int | float | str | None = None
    gte: int | float | str | None = None
    lt: int | float | str | None = None
    lte: int | float | str | None = None
    in_: list[Any] | None = Field(default=None, alias="in")
    contains: Any = None
    starts_with: str | None = None
    exists: bool | None = None
    older_than: Duration | None = Field(
        default=None, description="the value is a date/time more than this long before now"
    )
    newer_than: Duration | None = Field(
        default=None, description="the value is a date/time less than this long before now"
    )
    matches: str | None = Field(
        default=None, description="the value is text in which this regular expression is found"
    )

    @field_validator("matches", mode="after")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression ({error}): {value!r}") from error
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> Comparison:
        if not self.given():
            raise ValueError(f"give at least one comparison: {', '.join(OPERATORS)}")
        return self

    def given(self) -> dict[str, Any]:
        """The operators the author wrote, by their language name (`in`, not `in_`).

        A null operand means "not given": test for absence with `exists: false`.
        """
        found = {}
        for op in OPERATORS:
            value = getattr(self, "in_" if op == "in" else op)
            if value is not None:
                found[op] = value
        return found


class AttributeCondition(Comparison):
    """Compare a contact attribute (dotted path into the profile, e.g. `cart.items`)."""

    attribute: str


class ScoreCondition(Comparison):
    """Compare the contact's score in one dimension (`global` unless named)."""

    score: str = "global"


class PropertyCondition(Comparison):
    """Compare a field of the event in scope: the trigger in `if`, the filtered event in `where`.

    The path is read from the event (`event`, `timestamp`, `properties.total`); a path whose first
    part is not an event field is read under `properties` (`total` means `properties.total`).

    With `event: <name>` (only in `if` steps) the field is read from the last `<name>` event a
    `wait_for_event` step of the entry caught instead: the answer to a form the journey waited
    for, rather than the event that started the journey.
    """

    property: str
    event: str | None = Field(
        default=None,
        description="read the last event of this name caught by a wait_for_event step (if only)",
    )


class InSegmentCondition(Spec):
    in_segment: str


class HasDone(Spec):
    """The contact did `event` (matching `where`) `count` times, in a window or since entry.

    With `sum` (a property path such as `total`), the values of that property over the same
    events are added up and `total` compares the sum: "spent more than 50 on purchases".
    """

    event: str
    where: Condition | None = None
    within: PositiveDuration | None = None
    since: Literal["entry"] | None = None
    count: Comparison = Field(default_factory=lambda: Comparison(gte=1))
    sum: str | None = Field(default=None, description="event property whose values are added up")
    total: Comparison | None = Field(default=None, description="comparison applied to the sum")

    @model_validator(mode="after")
    def _one_window(self) -> HasDone:
        if self.within and self.since:
            raise ValueError("give either `within` or `since: entry`, not both")
        if (self.sum is None) != (self.total is None):
            raise ValueError("`sum` (the property to add up) and `total` (how the sum compares) "
                             "go together: give both or neither")
        return self


class HasDoneCondition(Spec):
    has_done: HasDone


class ReachableSpec(Spec):
    channel: str
    category: Literal["transactional", "marketing"] = "marketing"


class ReachableCondition(Spec):
    """The contact can be reached on a channel (address or token, consent, not suppressed)."""

    reachable: ReachableSpec

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("reachable"), str):
            return {**data, "reachable": {"channel": data["reachable"]}}
        return data


class AllCondition(Spec):
    all: list[Condition] = Field(min_length=1)


class AnyCondition(Spec):
    any: list[Condition] = Field(min_length=1)


class NotCondition(Spec):
    not_: Condition = Field(alias="not")


_KIND_KEYS = (
    "attribute", "score", "property", "in_segment", "has_done", "reachable", "all", "any", "not",
)


def condition_kind(data: Any) -> str | None:
    """Which condition a mapping is, by its one kind key (the discriminator of `Condition`)."""
    if isinstance(data, Spec):
        return {
            AttributeCondition: "attribute", ScoreCondition: "score",
            PropertyCondition: "property", InSegmentCondition: "in_segment",
            HasDoneCondition: "has_done", ReachableCondition: "reachable",
            AllCondition: "all", AnyCondition: "any", NotCondition: "not",
        }.get(type(data))
    if not isinstance(data, dict):
        return None
    kinds = [k for k in _KIND_KEYS if k in data]
    if len(kinds) == 1:
        return kinds[0]
    if not kinds and data:
        return "all"  # shorthand {path: comparison}; rewritten by expand_shorthand
    return None


def expand_shorthand(data: Any) -> Any:
    """Rewrite `{properties.value: {gte: 20}, event: x}` into `{all: [property comparisons]}`."""
    if not isinstance(data, dict) or not data or any(k in data for k in _KIND_KEYS):
        return data
    parts = []
    for path, rule in data.items():
        if isinstance(rule, dict):
            parts.append({"property": path, **rule})
        else:
            parts.append({"property": path, "eq": rule})
    return {"all": parts}


Condition = Annotated[
    Annotated[AttributeCondition, Tag("attribute")]
    | Annotated[ScoreCondition, Tag("score")]
    | Annotated[PropertyCondition, Tag("property")]
    | Annotated[InSegmentCondition, Tag("in_segment")]
    | Annotated[HasDoneCondition, Tag("has_done")]
    | Annotated[ReachableCondition, Tag("reachable")]
    | Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[NotCondition, Tag("not")],
    Discriminator(
        condition_kind,
        custom_error_type="condition_kind",
        custom_error_message=(
            "a condition needs exactly one of: " + ", ".join(_KIND_KEYS)
            + " (or a {field.path: comparison} filter)"
        ),
    ),
]
"""Any condition; a mapping is told apart by its one kind key."""


def parse_condition(data: Any) -> Any:
    """Prepare raw data for `Condition` validation (expands the filter shorthand, recursively)."""
    data = expand_shorthand(data)
    if isinstance(data, dict):
        if "all" in data and isinstance(data["all"], list):
            return {**data, "all": [parse_condition(c) for c in data["all"]]}
        if "any" in data and isinstance(data["any"], list):
            return {**data, "any": [parse_condition(c) for c in data["any"]]}
        if "not" in data:
            return {**data, "not": parse_condition(data["not"])}
        if isinstance(data.get("has_done"), dict) and "where" in data["has_done"]:
            inner = data["has_done"]
            return {**data, "has_done": {**inner, "where": parse_condition(inner["where"])}}
    return data


for _model in (HasDone, AllCondition, AnyCondition, NotCondition):
    _model.model_rebuild()


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Verdict:
    """A decision and the reason a person reads in the journey's path."""

    result: bool
    reason: str


HasDoneCounter = Callable[[HasDone], Awaitable[int]]
HasDoneSummer = Callable[[HasDone], Awaitable[float]]


@dataclass
class ConditionScope:
    """What a condition is evaluated against.

    `contact` is the contact snapshot as a plain mapping (attributes, scores, segments, ...),
    `event` the event in scope (trigger or filtered event) as a mapping, `caught` the events the
    journey's waits caught (read by `property` conditions that name an `event`), `now` the
    journey's time (never the wall clock: in simulations the two differ).
    """

    now: datetime
    contact: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    count_events: HasDoneCounter | None = None
    reachable: Callable[[ReachableSpec], Verdict] | None = None
    sum_events: HasDoneSummer | None = None
    caught: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Events caught by `wait_for_event` steps, by event name (the last of each), as mappings."""
    show_values: bool = True
    """Whether a reason may quote the value that failed a comparison (`eq 'pro' failed
    ('basic')`); off where the reason enters a run's Temporal history (a journey's path)."""


_MISSING = object()


def read_path(value: Any, path: str) -> Any:
    """Follow a dotted path through mappings (and list indexes); `_MISSING` when absent."""
    current = value
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def event_field(event: dict[str, Any] | None, path: str) -> Any:
    if event is None:
        return _MISSING
    head = path.split(".", 1)[0]
    if (head in event and head != "properties") or path.startswith("properties."):
        return read_path(event, path)
    return read_path(event.get("properties") or {}, path)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed
    return None


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Make two values comparable: numbers as floats, dates as datetimes, else same-type values."""
    if isinstance(left, bool) or isinstance(right, bool):
        return (left, right) if type(left) is type(right) else None
    if isinstance(left, int | float) and isinstance(right, int | float):
        return float(left), float(right)
    try:
        return float(left), float(right)
    except (TypeError, ValueError):
        pass
    ld, rd = _as_datetime(left), _as_datetime(right)
    if ld is not None and rd is not None and (ld.tzinfo is None) == (rd.tzinfo is None):
        return ld, rd
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    return None


def compare(
    value: Any, comparison: Comparison, now: datetime, *, show_value: bool = True,
) -> tuple[bool, str]:
    """Apply every operator; return whether all hold and the first one that failed (quoting the
    value that failed it unless `show_value` is off)."""
    present = value is not _MISSING and value is not None
    for op, expected in comparison.given().items():
        if op == "exists":
            ok = present == bool(expected)
        elif not present:
            ok = op == "ne"
        elif op == "eq":
            pair = _ordered(value, expected)
            ok = value == expected or (pair is not None and pair[0] == pair[1])
        elif op == "ne":
            ok = value != expected
        elif op == "in":
            ok = value in expected
        elif op == "contains":
            ok = expected in value if isinstance(value, list | str | dict) else False
        elif op == "starts_with":
            ok = isinstance(value, str) and value.startswith(expected)
        elif op == "matches":
            ok = isinstance(value, str) and re.search(expected, value) is not None
        elif op in ("older_than", "newer_than"):
            moment = _as_datetime(value)
            if moment is None:
                ok = False
            else:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=now.tzinfo)
                age = now - moment
                limit = parse_duration(expected)
                ok = age > limit if op == "older_than" else age < limit
        else:
            pair = _ordered(value, expected)
            if pair is None:
                ok = False
            else:
                a, b = pair
                ok = {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
        if not ok:
            shown = ("missing" if not present
                     else repr(value) if show_value else "value not shown")
            return False, f"{op} {expected!r} failed ({shown})"
    return True, "holds"


async def evaluate(condition: Any, scope: ConditionScope) -> Verdict:
    """Decide a condition in a scope; the reason names what decided it."""
    if isinstance(condition, AttributeCondition):
        value = read_path(scope.contact.get("attributes") or {}, condition.attribute)
        ok, why = compare(value, condition, scope.now, show_value=scope.show_values)
        return Verdict(ok, f"attribute {condition.attribute}: {why}")
    if isinstance(condition, ScoreCondition):
        scores = scope.contact.get("scores") or {}
        value = scores.get(condition.score, 0)
        ok, why = compare(value, condition, scope.now)
        return Verdict(ok, f"score {condition.score}={value}: {why}")
    if isinstance(condition, PropertyCondition):
        if condition.event is not None:
            caught = scope.caught.get(condition.event)
            value = event_field(caught, condition.property)
            ok, why = compare(value, condition, scope.now, show_value=scope.show_values)
            status = "" if caught is not None else " (none caught)"
            return Verdict(ok, f"caught {condition.event}{status} {condition.property}: {why}")
        value = event_field(scope.event, condition.property)
        ok, why = compare(value, condition, scope.now, show_value=scope.show_values)
        return Verdict(ok, f"event {condition.property}: {why}")
    if isinstance(condition, InSegmentCondition):
        member = condition.in_segment in (scope.contact.get("segments") or [])
        return Verdict(member, f"{'in' if member else 'not in'} segment {condition.in_segment}")
    if isinstance(condition, HasDoneCondition):
        if scope.count_events is None:
            raise ValueError("has_done needs the event store; it cannot be decided here")
        spec = condition.has_done
        count = await scope.count_events(spec)
        ok, why = compare(count, spec.count, scope.now)
        window = f" within {spec.within}" if spec.within else (" since entry" if spec.since else "")
        if not ok or spec.sum is None or spec.total is None:
            return Verdict(ok, f"has_done {spec.event} {count}x{window}: {why}")
        if scope.sum_events is None:
            raise ValueError("has_done with `sum` needs the event store's sums; it cannot be "
                             "decided here")
        total = await scope.sum_events(spec)
        ok, why = compare(total, spec.total, scope.now)
        return Verdict(ok, f"has_done {spec.event} {count}x{window}, {spec.sum} summing to "
                           f"{total:g}: {why}")
    if isinstance(condition, ReachableCondition):
        if scope.reachable is None:
            raise ValueError("reachable needs the contact's channels; it cannot be decided here")
        return scope.reachable(condition.reachable)
    if isinstance(condition, AllCondition):
        reasons = []
        for part in condition.all:
            verdict = await evaluate(part, scope)
            if not verdict.result:
                return Verdict(False, verdict.reason)
            reasons.append(verdict.reason)
        return Verdict(True, "; ".join(reasons))
    if isinstance(condition, AnyCondition):
        reasons = []
        for part in condition.any:
            verdict = await evaluate(part, scope)
            if verdict.result:
                return Verdict(True, verdict.reason)
            reasons.append(verdict.reason)
        return Verdict(False, "none held: " + "; ".join(reasons))
    if isinstance(condition, NotCondition):
        verdict = await evaluate(condition.not_, scope)
        return Verdict(not verdict.result, f"not ({verdict.reason})")
    raise TypeError(f"not a condition: {condition!r}")


def evaluate_event_filter(condition: Any, event: dict[str, Any], now: datetime) -> Verdict:
    """Decide a `where` filter on an event without I/O (no has_done/reachable inside filters).

    Workflows call this on signalled events, the router on incoming events, so it must stay pure
    and synchronous.
    """
    coroutine = evaluate(condition, ConditionScope(now=now, event=event))
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: Verdict = done.value
        return result
    coroutine.close()
    raise ValueError("event filters may only compare event fields")


def leaves(condition: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every condition that is not `all`/`any`/`not`, with its path as written (`if.all[0]`).

    `has_done`'s own `where` is not entered: it filters stored events, a scope of its own.
    """
    if isinstance(condition, AllCondition | AnyCondition):
        key = "all" if isinstance(condition, AllCondition) else "any"
        parts = condition.all if isinstance(condition, AllCondition) else condition.any
        for index, part in enumerate(parts):
            yield from leaves(part, f"{path}.{key}[{index}]")
    elif isinstance(condition, NotCondition):
        yield from leaves(condition.not_, f"{path}.not")
    else:
        yield path, condition


def caught_events(condition: Any) -> list[str]:
    """Names of the caught events a condition reads (`property` with `event`), once each."""
    names: list[str] = []
    for _, leaf in leaves(condition, ""):
        if isinstance(leaf, PropertyCondition) and leaf.event and leaf.event not in names:
            names.append(leaf.event)
    return names


EVENT_ONLY_KINDS = ("property",)
"""What an event filter (`where`) can decide: it sees the event alone, no contact or store."""


def filter_problems(condition: Any, path: str) -> list[tuple[str, str]]:
    """Conditions in an event filter that cannot work there, as (path of the offending key, kind
    found) pairs: `(trigger.where.all[1].score, score)`.

    A filter is decided on the event alone (in the router, or in the workflow on a signalled
    event), so a contact's attributes, scores, segments, history and channels are not there, nor
    are the events a wait caught. `has_done`'s own `where` is such a filter too.
    """
    found: list[tuple[str, str]] = []
    for where, leaf in leaves(condition, path):
        kind = condition_kind(leaf) or type(leaf).__name__
        if kind not in EVENT_ONLY_KINDS:
            found.append((f"{where}.{kind}", kind))
        elif isinstance(leaf, PropertyCondition) and leaf.event is not None:
            found.append((f"{where}.event", "property with event"))
    return found


def _comparison(subject: str, comparison: Comparison) -> str:
    signs = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}
    parts = []
    for op, value in comparison.given().items():
        if op == "exists":
            parts.append(f"{subject} {'exists' if value else 'is missing'}")
        else:
            parts.append(f"{subject} {signs.get(op, op.replace('_', ' '))} {value}")
    return " and ".join(parts)


def describe_condition(condition: object) -> str:
    """A one-line reading of a condition (`cart.items > 0`), for graphs and summaries."""
    if isinstance(condition, AttributeCondition):
        return _comparison(condition.attribute, condition)
    if isinstance(condition, ScoreCondition):
        return _comparison(f"score {condition.score}", condition)
    if isinstance(condition, PropertyCondition):
        source = f"caught {condition.event}" if condition.event else "event"
        return _comparison(f"{source} {condition.property}", condition)
    if isinstance(condition, InSegmentCondition):
        return f"in segment {condition.in_segment}"
    if isinstance(condition, HasDoneCondition):
        spec = condition.has_done
        window = f" within {spec.within}" if spec.within else (" since entry" if spec.since else "")
        return f"did {spec.event} ({_comparison('count', spec.count)}){window}"
    if isinstance(condition, ReachableCondition):
        return f"reachable by {condition.reachable.channel}"
    if isinstance(condition, AllCondition):
        return " and ".join(f"({describe_condition(c)})" for c in condition.all)
    if isinstance(condition, AnyCondition):
        return " or ".join(f"({describe_condition(c)})" for c in condition.any)
    if isinstance(condition, NotCondition):
        return f"not ({describe_condition(condition.not_)})"
    return str(condition)


def window_start(spec: HasDone, now: datetime, entered_at: datetime | None) -> datetime | None:
    """Where a has_done count starts: `within` back from now, `since: entry`, or all history."""
    if spec.within:
        return now - parse_duration(spec.within)
    if spec.since == "entry":
        return entered_at
    return None


__all__ = [
    "AllCondition",
    "AnyCondition",
    "AttributeCondition",
    "Comparison",
    "Condition",
    "ConditionScope",
    "HasDone",
    "HasDoneCondition",
    "InSegmentCondition",
    "NotCondition",
    "PropertyCondition",
    "ReachableCondition",
    "ReachableSpec",
    "ScoreCondition",
    "Spec",
    "Verdict",
    "caught_events",
    "compare",
    "condition_kind",
    "describe_condition",
    "evaluate",
    "evaluate_event_filter",
    "event_field",
    "filter_problems",
    "leaves",
    "parse_condition",
    "read_path",
    "timedelta",
    "window_start",
]
