"""Segment definitions: named conditions over a contact, kept in `segments/*.yaml` beside journeys.

A segment file holds one segment:

```yaml
key: buyers
name: Buyers
description: Spent more than 50 on purchases
rule:
  has_done: {event: purchase, sum: total, total: {gt: 50}}
```

The rule is an ordinary condition (`cairn.conditions`) plus two conveniences a marketer expects:
profile fields such as `last_seen_at` are readable as attributes (`{attribute: last_seen_at,
older_than: 30d}`), and `visited` is a page-visit test over `page_viewed` events (exact URL,
URL containing words, regular expression). A segment is `time`-based when its rule measures age
(`older_than`, `newer_than`, `within`): those also change while nothing happens, so a sweep must
re-evaluate them. This module parses and validates definitions and decides membership for one
contact; finding and reading the files is `cairn.catalog_folder`, recording memberships and
emitting events is `cairn.events.profile_rules`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, computed_field

from cairn.conditions import (
    AllCondition,
    AnyCondition,
    AttributeCondition,
    Comparison,
    Condition,
    ConditionScope,
    HasDone,
    HasDoneCondition,
    InSegmentCondition,
    NotCondition,
    PropertyCondition,
    ReachableCondition,
    ScoreCondition,
    Spec,
    Verdict,
    compare,
    evaluate,
    event_field,
    parse_condition,
    read_path,
)
from cairn.contact import ContactSnapshot
from cairn.problems import DefinitionFileError, Problem, model_problems

PAGE_VIEWED = "page_viewed"
"""The event name a Segment `page` call is stored under; its `properties.url` is the page."""

SEGMENT_KEY = r"^[a-z0-9][a-z0-9_-]{0,127}$"

PROFILE_FIELDS = ("last_seen_at", "first_seen_at", "timezone", "email", "phone", "tags")
"""Profile columns a segment rule may read as if they were attributes (an attribute of the same
name, if a contact has one, wins)."""


class SegmentFileError(DefinitionFileError):
    """Segment files that cannot be used; `.problems` lists every fix, with file and field."""

    holds = "segment definitions"


class Segment(Spec):
    """A named condition over a contact; `kind` tells whether time alone can change membership."""

    key: str = Field(pattern=SEGMENT_KEY, description="stable identity, used by `in_segment`")
    name: str | None = None
    description: str | None = None
    rule: Condition

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> Literal["event", "time"]:
        """`time` when the rule measures age: members can leave (or join) while nothing happens."""
        return "time" if _measures_age(self.rule) else "event"

    def segments_used(self) -> set[str]:
        """Other segments this one's rule reads (`in_segment`)."""
        return set(_segments_in(self.rule))


_SEGMENT: TypeAdapter[Segment] = TypeAdapter(Segment)


def _children(condition: Any) -> list[Any]:
    if isinstance(condition, AllCondition):
        return list(condition.all)
    if isinstance(condition, AnyCondition):
        return list(condition.any)
    if isinstance(condition, NotCondition):
        return [condition.not_]
    if isinstance(condition, HasDoneCondition) and condition.has_done.where is not None:
        return [condition.has_done.where]
    return []


def _walk(condition: Any) -> Iterable[Any]:
    yield condition
    for child in _children(condition):
        yield from _walk(child)


def _measures_age(condition: Any) -> bool:
    for part in _walk(condition):
        if isinstance(part, HasDoneCondition) and part.has_done.within is not None:
            return True
        if isinstance(part, Comparison) and (
            part.older_than is not None or part.newer_than is not None
        ):
            return True
    return False


def has_done_specs(segments: Iterable[Segment]) -> list[HasDone]:
    """Every `has_done` the rules of `segments` may ask about, in rule order: what a sweep
    batch fetches for all its contacts at once."""
    return [part.has_done for segment in segments for part in _walk(segment.rule)
            if isinstance(part, HasDoneCondition)]


def _segments_in(condition: Any) -> Iterable[str]:
    for part in _walk(condition):
        if isinstance(part, InSegmentCondition):
            yield part.in_segment


# --------------------------------------------------------------------------- page visits


def expand_visited(data: Any) -> Any:
    """Rewrite `visited` page-visit tests into `has_done` over `page_viewed` events, recursively.

    `{visited: {url: https://shop.example/pricing}}` is that exact page;
    `{visited: {url_contains: [pricing, enterprise]}}` a URL containing every word;
    `{visited: {url_matches: "/courses/[0-9]+"}}` a regular expression; `within` and `count`
    mean what they mean in `has_done`.
    """
    if isinstance(data, list):
        return [expand_visited(item) for item in data]
    if not isinstance(data, dict):
        return data
    if "visited" in data and len(data) == 1 and isinstance(data["visited"], dict):
        spec = dict(data["visited"])
        tests: list[dict[str, Any]] = []
        if "url" in spec:
            tests.append({"property": "url", "eq": spec.pop("url")})
        if "url_contains" in spec:
            words = spec.pop("url_contains")
            for word in [words] if isinstance(words, str) else list(words or []):
                tests.append({"property": "url", "contains": word})
        if "url_matches" in spec:
            tests.append({"property": "url", "matches": spec.pop("url_matches")})
        has_done: dict[str, Any] = {"event": PAGE_VIEWED, **spec}
        if tests:
            has_done["where"] = {"all": tests}
        return {"has_done": has_done}
    return {key: expand_visited(value) for key, value in data.items()}


def _visited_problems(file: str, data: Any, path: str) -> list[Problem]:
    """`visited` needs one of its URL tests; anything else it holds is checked as `has_done`."""
    problems: list[Problem] = []
    if isinstance(data, list):
        for index, item in enumerate(data):
            problems += _visited_problems(file, item, f"{path}[{index}]")
    elif isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "visited":
                if not isinstance(value, dict) or not {"url", "url_contains", "url_matches"} & set(
                    value
                ):
                    problems.append(Problem(file, where, "give the page: url (exact), "
                                                         "url_contains (words) or url_matches "
                                                         "(regular expression)"))
                elif "url_matches" in value:
                    try:
                        re.compile(str(value["url_matches"]))
                    except re.error as error:
                        problems.append(Problem(file, f"{where}.url_matches",
                                                f"not a regular expression: {error}"))
            else:
                problems += _visited_problems(file, value, where)
    return problems


# --------------------------------------------------------------------------- loading


def parse_segment(file: str, data: Any) -> tuple[Segment | None, list[Problem]]:
    """One segment from a file's content, or the problems (with file and field) that stop it."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return None, [Problem(file, "", "a segment file holds one mapping (key, name, rule); "
                                        f"this one is {kind}")]
    problems = _visited_problems(file, data.get("rule"), "rule")
    if problems:
        return None, problems
    rule = expand_visited(data.get("rule"))
    if "rule" in data:
        try:
            _RULE.validate_python({"if": _parse_nested(parse_condition(rule))})
        except ValidationError as error:
            # Validated under `if` so problems get the condition paths journeys get.
            return None, [
                Problem(p.file, "rule" + p.where.removeprefix("if"), p.message)
                for p in model_problems(file, error, {"if": rule})
            ]
    prepared = {**data}
    if "rule" in prepared:
        prepared["rule"] = _parse_nested(parse_condition(rule))
    try:
        return _SEGMENT.validate_python(prepared), []
    except ValidationError as error:
        return None, model_problems(file, error, data)


class _Rule(Spec):
    if_: Condition = Field(alias="if")


_RULE: TypeAdapter[_Rule] = TypeAdapter(_Rule)


def _parse_nested(data: Any) -> Any:
    """`parse_condition` expands filter shorthands; a `visited` may have added new `where`s."""
    if isinstance(data, dict):
        return {k: _parse_nested(parse_condition(v) if k in ("where", "not") else v)
                for k, v in data.items()}
    if isinstance(data, list):
        return [_parse_nested(item) for item in data]
    return data


def segment_problems(segments: list[tuple[str, Segment]]) -> list[Problem]:
    """Checks across files: unique keys, known `in_segment` names, no segment defined by itself."""
    problems: list[Problem] = []
    by_key: dict[str, str] = {}
    for file, segment in segments:
        if segment.key in by_key:
            problems.append(Problem(file, "key", f"segment '{segment.key}' is also defined in "
                                                 f"{by_key[segment.key]}; keys must be unique"))
        else:
            by_key[segment.key] = file
    for file, segment in segments:
        for used in sorted(segment.segments_used()):
            if used not in by_key:
                problems.append(Problem(file, "rule", f"in_segment '{used}': no such segment "
                                                      f"(known: {', '.join(sorted(by_key))})"))
    if not problems:
        try:
            evaluation_order([s for _, s in segments])
        except SegmentCycleError as error:
            problems.append(Problem(by_key[error.key], "rule", str(error)))
    return problems


class SegmentCycleError(ValueError):
    """Segments that are defined through each other, so no order decides them."""

    def __init__(self, key: str, cycle: list[str]) -> None:
        self.key = key
        super().__init__("segments defined through each other: " + " -> ".join(cycle)
                         + "; break the loop")


def evaluation_order(segments: list[Segment]) -> list[Segment]:
    """Segments ordered so that each comes after the segments its rule reads."""
    by_key = {segment.key: segment for segment in segments}
    ordered: list[Segment] = []
    state: dict[str, str] = {}

    def visit(key: str, trail: list[str]) -> None:
        if state.get(key) == "done" or key not in by_key:
            return
        if state.get(key) == "visiting":
            start = trail.index(key)
            raise SegmentCycleError(key, [*trail[start:], key])
        state[key] = "visiting"
        for used in sorted(by_key[key].segments_used()):
            visit(used, [*trail, key])
        state[key] = "done"
        ordered.append(by_key[key])

    for segment in segments:
        visit(segment.key, [])
    return ordered


def time_based(segments: list[Segment]) -> set[str]:
    """Keys of segments time can change: their own rule measures age, or a segment they read does.

    `vip` reading the time-based `frequent_buyers` changes when `frequent_buyers` does.
    """
    found: set[str] = set()
    for segment in evaluation_order(segments):
        if segment.kind == "time" or segment.segments_used() & found:
            found.add(segment.key)
    return found


# --------------------------------------------------------------------------- deciding


def contact_scope(contact: ContactSnapshot) -> dict[str, Any]:
    """The contact as a segment rule reads it: profile fields readable as attributes."""
    scope = contact.as_scope()
    attributes = dict(scope.get("attributes") or {})
    for name in PROFILE_FIELDS:
        if name not in attributes and scope.get(name) is not None:
            attributes[name] = scope[name]
    scope["attributes"] = attributes
    return scope


@dataclass(frozen=True)
class Membership:
    """What a rule decided for one contact, and why (the reason is logged with the change)."""

    segment: str
    member: bool
    reason: str


async def decide(
    segments: list[Segment],
    contact: ContactSnapshot,
    scope: ConditionScope,
) -> list[Membership]:
    """Decide every segment for one contact, in order, each seeing the decisions before it.

    `scope` supplies the time and the event store (`count_events`, `sum_events`); its `contact`
    is replaced by the contact's segment view, whose `segments` list is updated as decisions are
    made so that `in_segment` reads the new membership, not the stale one.
    """
    view = contact_scope(contact)
    current = set(view.get("segments") or [])
    scope.contact = view
    decided: list[Membership] = []
    for segment in segments:
        view["segments"] = sorted(current)
        verdict: Verdict = await evaluate(segment.rule, scope)
        if verdict.result:
            current.add(segment.key)
        else:
            current.discard(segment.key)
        decided.append(Membership(segment.key, verdict.result, verdict.reason))
    return decided


Memo = dict[tuple[int, type, Any], bool]
"""Leaf verdicts of one moment: (comparison, type and value compared) -> whether it held."""

_MEMO_TYPES = frozenset({str, int, float, bool, type(None), object})
"""Values whose verdicts are memoized: JSON scalars, and `object` for the missing-value marker
(lists and mappings are compared every time)."""


async def members(
    segments: list[Segment],
    contact: ContactSnapshot,
    scope: ConditionScope,
    memo: Memo | None = None,
) -> dict[str, bool]:
    """What `decide` decides, membership only: no reasons, and comparisons memoized in `memo`.

    The segment sweep decides every contact every hour and only needs to know who changes
    (those it decides again with `decide`, reasons and all). Building a reason for every condition
    of every contact, and comparing the same count with the same operators thousands of times,
    was most of a sweep's time: here a comparison is made once per distinct value in `memo`
    (shared by the contacts of one batch, all judged at the same `scope.now`), and `all`/`any`/
    `not` combine booleans. The tests hold this to `decide`'s decisions.
    """
    view = contact_scope(contact)
    current = set(view.get("segments") or [])
    scope.contact = view
    found: dict[str, bool] = {}
    for segment in segments:
        result = await _holds(segment.rule, scope, current, memo)
        if result:
            current.add(segment.key)
        else:
            current.discard(segment.key)
        found[segment.key] = result
    return found


async def _holds(condition: Any, scope: ConditionScope, current: set[str],
                 memo: Memo | None) -> bool:
    """`evaluate(condition, scope).result`, with `current` as the contact's segments."""
    if isinstance(condition, AttributeCondition):
        value = read_path(scope.contact.get("attributes") or {}, condition.attribute)
        return _compared(condition, value, scope, memo)
    if isinstance(condition, ScoreCondition):
        value = (scope.contact.get("scores") or {}).get(condition.score, 0)
        return _compared(condition, value, scope, memo)
    if isinstance(condition, PropertyCondition):
        return compare(event_field(scope.event, condition.property), condition, scope.now)[0]
    if isinstance(condition, InSegmentCondition):
        return condition.in_segment in current
    if isinstance(condition, HasDoneCondition):
        if scope.count_events is None:
            raise ValueError("has_done needs the event store; it cannot be decided here")
        spec = condition.has_done
        if not _compared(spec.count, await scope.count_events(spec), scope, memo):
            return False
        if spec.sum is None or spec.total is None:
            return True
        if scope.sum_events is None:
            raise ValueError("has_done with `sum` needs the event store's sums; it cannot be "
                             "decided here")
        return _compared(spec.total, await scope.sum_events(spec), scope, memo)
    if isinstance(condition, ReachableCondition):
        if scope.reachable is None:
            raise ValueError("reachable needs the contact's channels; it cannot be decided here")
        return scope.reachable(condition.reachable).result
    if isinstance(condition, AllCondition):
        for part in condition.all:
            if not await _holds(part, scope, current, memo):
                return False
        return True
    if isinstance(condition, AnyCondition):
        for part in condition.any:
            if await _holds(part, scope, current, memo):
                return True
        return False
    if isinstance(condition, NotCondition):
        return not await _holds(condition.not_, scope, current, memo)
    raise TypeError(f"not a condition: {condition!r}")


def _compared(comparison: Comparison, value: Any, scope: ConditionScope,
              memo: Memo | None) -> bool:
    if memo is None or type(value) not in _MEMO_TYPES:
        return compare(value, comparison, scope.now)[0]
    key = (id(comparison), type(value), value)
    held = memo.get(key)
    if held is None:
        held = memo[key] = compare(value, comparison, scope.now)[0]
    return held


__all__ = [
    "PAGE_VIEWED",
    "Membership",
    "Memo",
    "Segment",
    "SegmentCycleError",
    "SegmentFileError",
    "contact_scope",
    "decide",
    "evaluation_order",
    "expand_visited",
    "has_done_specs",
    "members",
    "parse_segment",
    "segment_problems",
    "time_based",
]
