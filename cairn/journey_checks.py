"""The checks of a journey that its schema alone cannot make.

Each check is a small function over a loaded journey returning (path, message) pairs, listed once
in `JOURNEY_CHECKS`: the step graph, template parts per channel, Liquid in webhook bodies and
`update.set`, time zones, schedule crons, conditions placed where they cannot work, and
comparisons that can never hold. Checks read nothing from disk and never raise for a bad
journey; `cairn.journey_files` runs them and turns their findings into problems with the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from cairn.conditions import (
    AttributeCondition,
    Comparison,
    HasDoneCondition,
    PropertyCondition,
    ScoreCondition,
    filter_problems,
    leaves,
)
from cairn.graph import check_graph, steps_of
from cairn.journey import (
    IfStep,
    Journey,
    SendStep,
    UpdateStep,
    WaitForEventStep,
    WebhookStep,
)
from cairn.local_time import is_timezone
from cairn.schedule_times import ALIASES as CRON_ALIASES
from cairn.schedule_times import Cron, CronError
from cairn.templates import TemplateRenderError, parse_part, part_problems
from cairn.update_values import set_problems

JourneyCheck = Callable[[Journey], list[tuple[str, str]]]
"""A check: (path in the file, message) for each thing it finds wrong."""


def channel_parts(journey: Journey) -> list[tuple[str, str]]:
    """A send may use every channel it lists; its template needs a part for each."""
    problems = []
    for name, step in steps_of(journey).items():
        if not isinstance(step, SendStep):
            continue
        for template in step.send.templates():
            if template not in journey.templates:
                continue
            parts = journey.templates[template]
            for channel in step.send.candidates():
                if channel not in parts:
                    where = "channel" if step.send.channel else "channels"
                    problems.append((
                        f"steps.{name}.send.{where}",
                        f"template '{template}' has no '{channel}' part "
                        f"(it has: {', '.join(parts) or 'none'})",
                    ))
    return problems


def experiment_metrics(journey: Journey) -> list[tuple[str, str]]:
    """An experiment measuring a goal needs that exit goal in the journey."""
    goals = {goal.goal for goal in journey.exit}
    problems = []
    for name, step in steps_of(journey).items():
        body = step.send if isinstance(step, SendStep) else getattr(step, "split", None)
        experiment = getattr(body, "experiment", None)
        if experiment is None or experiment.metric.kind != "goal":
            continue
        if experiment.metric.name not in goals:
            problems.append((
                f"steps.{name}.{step.kind}.experiment.metric",
                f"unknown goal '{experiment.metric.name}' (the journey's exit goals: "
                f"{', '.join(sorted(goals)) or 'none'})",
            ))
    return problems


def inline_templates(journey: Journey) -> list[tuple[str, str]]:
    """Templates written in the journey file itself get the same checks as template files."""
    return [
        (f"templates.{name}.{where}" if where else f"templates.{name}", message)
        for name, parts in journey.templates.items()
        for where, message in part_problems(name, parts)
    ] if journey.templates else []


def webhook_bodies(journey: Journey) -> list[tuple[str, str]]:
    """A webhook body is a Liquid template too; a syntax error there would fail at send time."""
    problems = []
    for name, step in steps_of(journey).items():
        if isinstance(step, WebhookStep) and step.webhook.body is not None:
            try:
                parse_part(f"steps.{name}", "webhook.body", step.webhook.body)
            except TemplateRenderError as error:
                problems.append((f"steps.{name}.webhook.body", str(error)))
    return problems


def timezone(journey: Journey) -> list[tuple[str, str]]:
    if is_timezone(journey.settings.timezone):
        return []
    return [("settings.timezone", f"unknown time zone '{journey.settings.timezone}': use an "
                                  "IANA name such as 'Europe/Bucharest'")]


# --------------------------------------------------------------------------- schedule triggers


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def cron_problem(expression: str) -> str | None:
    """What is wrong with a `schedule` trigger's cron, or None when Temporal will take it.

    Cairn takes the five classic fields (minute, hour, day of month, month, day of week) with
    lists, ranges, steps and month and weekday names, and the aliases `@hourly` to `@yearly`:
    the part of Temporal Schedules' cron syntax whose meaning no one misreads. Temporal would
    take a sixth field as the year (not seconds, as some cron dialects do), so six or seven fields
    are refused; the time zone belongs in `timezone`, not in a `CRON_TZ=` prefix.
    """
    text = " ".join(expression.split())
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "put the time zone in trigger.schedule.timezone, not in the cron"
    if text.startswith("@"):
        if text not in CRON_ALIASES:
            return (f"unknown cron shortcut '{text}': use five fields (minute hour day-of-month "
                    f"month day-of-week) or one of {', '.join(CRON_ALIASES)}")
        text = CRON_ALIASES[text]
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        extra = (" (Temporal would read a sixth field as the year, not as seconds)"
                 if len(fields) > 5 else "")
        return (f"'{expression}' has {len(fields)} field(s); a cron has five: minute hour "
                f"day-of-month month day-of-week, e.g. '0 9 * * mon'{extra}")
    try:
        cron = Cron.parse(text)
    except CronError as error:
        return f"'{expression}': {error}"
    if min(cron.days) > max(_DAYS_IN_MONTH[m - 1] for m in cron.months):
        return f"'{expression}' never fires: no chosen month has day {min(cron.days)}"
    return None


def schedule_trigger(journey: Journey) -> list[tuple[str, str]]:
    """A schedule's cron and time zone are checked here, not first by Temporal at publish time."""
    schedule = journey.trigger.schedule
    if schedule is None:
        return []
    problems = []
    found = cron_problem(schedule.cron)
    if found is not None:
        problems.append(("trigger.schedule.cron", found))
    if not is_timezone(schedule.timezone):
        problems.append(("trigger.schedule.timezone",
                         f"unknown time zone '{schedule.timezone}': use an IANA name such as "
                         "'Europe/Bucharest'"))
    return problems


# --------------------------------------------------------------------------- conditions in place

_FILTER_ADVICE = {
    "trigger": "the trigger filter sees only the event (its name, properties and timestamp), "
               "not the contact; move it into an `if` step at the start of the journey",
    "exit": "an exit goal's filter sees only the event as it arrives, not the contact; test the "
            "contact in an `if` step instead",
    "wait": "a wait's filter sees only the event it waits for, not the contact; test the contact "
            "in an `if` step after the wait",
    "has_done": "has_done's `where` sees only each stored event, not the contact; put the "
                "contact's conditions beside the has_done in an `all`",
}


def _filter_messages(condition: Any, path: str, place: str) -> list[tuple[str, str]]:
    problems = []
    for where, kind in filter_problems(condition, path):
        if kind == "property with event":
            problems.append((where, "`event:` reads an event caught by a wait_for_event step and "
                                    "works only in `if` steps; a filter reads the event it "
                                    "filters, so remove `event:` here"))
        else:
            problems.append((where, f"`{kind}` conditions cannot work here: "
                                    f"{_FILTER_ADVICE[place]}"))
    return problems


def _if_conditions(journey: Journey) -> list[tuple[str, Any]]:
    """Every leaf condition of the journey's `if` steps, with its path (`steps.x.if.all[0]`)."""
    return [
        (where, leaf)
        for name, step in steps_of(journey).items() if isinstance(step, IfStep)
        for where, leaf in leaves(step.if_, f"steps.{name}.if")
    ]


def event_filters(journey: Journey) -> list[tuple[str, str]]:
    """Filters (`where`) are decided on an event alone: a condition on the contact, its history
    or its channels there would never see them, so it is refused before it silently fails."""
    problems = []
    if journey.trigger.where is not None:
        problems += _filter_messages(journey.trigger.where, "trigger.where", "trigger")
    for index, goal in enumerate(journey.exit):
        if goal.where is not None:
            problems += _filter_messages(goal.where, f"exit[{index}].where", "exit")
    for name, step in steps_of(journey).items():
        if isinstance(step, WaitForEventStep) and step.wait_for_event.where is not None:
            problems += _filter_messages(step.wait_for_event.where,
                                         f"steps.{name}.wait_for_event.where", "wait")
    for where, leaf in _if_conditions(journey):
        if isinstance(leaf, HasDoneCondition) and leaf.has_done.where is not None:
            problems += _filter_messages(leaf.has_done.where, f"{where}.has_done.where",
                                         "has_done")
    return problems


def caught_event_conditions(journey: Journey) -> list[tuple[str, str]]:
    """`{property: ..., event: x}` reads the event `x` a wait caught: some wait must catch it."""
    caught = list(dict.fromkeys(
        step.wait_for_event.event for step in steps_of(journey).values()
        if isinstance(step, WaitForEventStep)
    ))
    problems = []
    for where, leaf in _if_conditions(journey):
        if isinstance(leaf, PropertyCondition) and leaf.event and leaf.event not in caught:
            found = (f"its waits catch: {', '.join(caught)}" if caught
                     else "it has no wait_for_event step")
            problems.append((f"{where}.event", f"no wait_for_event step of this journey catches "
                                               f"'{leaf.event}' ({found})"))
    return problems


def update_values(journey: Journey) -> list[tuple[str, str]]:
    """Liquid in `update.set` values is checked like message templates (syntax, filters)."""
    return [
        (f"steps.{name}.update.set.{where}", message)
        for name, step in steps_of(journey).items() if isinstance(step, UpdateStep)
        for where, message in set_problems(name, step.update.set)
    ]


# --------------------------------------------------------------------------- comparisons

ORDERING = ("gt", "gte", "lt", "lte")
"""Operators that put two values in order; they compare numbers, or dates, with each other."""


def _conditions(journey: Journey) -> Iterator[tuple[str, Any]]:
    """Every condition tree of the journey with its path: filters, exit goals, `if` steps."""
    if journey.trigger.where is not None:
        yield "trigger.where", journey.trigger.where
    for index, goal in enumerate(journey.exit):
        if goal.where is not None:
            yield f"exit[{index}].where", goal.where
    for name, step in steps_of(journey).items():
        if isinstance(step, WaitForEventStep) and step.wait_for_event.where is not None:
            yield f"steps.{name}.wait_for_event.where", step.wait_for_event.where
        elif isinstance(step, IfStep):
            yield f"steps.{name}.if", step.if_


def _comparisons(condition: Any, path: str) -> Iterator[tuple[str, Comparison, str, bool]]:
    """Each comparison in a condition tree: (path, comparison, what it compares, whether that is
    always a number). Scores and has_done's count and total are numbers; attributes and event
    properties may be numbers, dates or text.
    """
    for where, leaf in leaves(condition, path):
        if isinstance(leaf, HasDoneCondition):
            spec = leaf.has_done
            yield f"{where}.has_done.count", spec.count, f"the number of {spec.event} events", True
            if spec.total is not None:
                yield f"{where}.has_done.total", spec.total, f"the sum of {spec.sum}", True
            if spec.where is not None:
                yield from _comparisons(spec.where, f"{where}.has_done.where")
        elif isinstance(leaf, ScoreCondition):
            yield where, leaf, f"the score {leaf.score}", True
        elif isinstance(leaf, AttributeCondition):
            yield where, leaf, f"attribute {leaf.attribute}", False
        elif isinstance(leaf, PropertyCondition):
            yield where, leaf, leaf.property, False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def ordering_comparisons(journey: Journey) -> list[tuple[str, str]]:
    """`gte: "abc"` never holds against a number: ordering needs a number (or, for attributes and
    properties, a date) on both sides, so quoted text there is a mistake caught before it runs."""
    problems = []
    for path, condition in _conditions(journey):
        for where, comparison, subject, numeric in _comparisons(condition, path):
            for op in ORDERING:
                value = getattr(comparison, op)
                if not isinstance(value, str) or _is_number(value):
                    continue
                if numeric:
                    problems.append((f"{where}.{op}", f"{subject} is a number, and comparing it "
                                                      f"with the text {value!r} never holds; "
                                                      f"write a number, e.g. {op}: 10"))
                elif not _is_date(value):
                    problems.append((f"{where}.{op}", f"{subject}: `{op}` compares numbers or "
                                                      f"dates, and {value!r} is neither (against "
                                                      f"a number it never holds); write e.g. "
                                                      f"{op}: 10 or {op}: 2024-01-31"))
    return problems


JOURNEY_CHECKS: tuple[JourneyCheck, ...] = (
    check_graph, channel_parts, webhook_bodies, timezone, schedule_trigger, event_filters,
    caught_event_conditions, update_values, ordering_comparisons, experiment_metrics,
)

