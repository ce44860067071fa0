"""The step graph of a journey: its checks (missing targets, unreachable steps, loops that never
wait), its loops (the interpreter continues-as-new on each pass) and its Mermaid picture.

Pure functions over a validated `Journey`; safe to import in workflow code. Loading files and
reporting problems per file is `cairn.journey_files`' job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Protocol

from cairn.conditions import describe_condition
from cairn.durations import format_duration, parse_duration
from cairn.journey import (
    END,
    STEP_MODELS,
    Journey,
    SplitStep,
    StepBase,
    Trigger,
    successors,
)

WAITING_KINDS = tuple(model for model in STEP_MODELS if model.role == "wait")
"""Steps that hand control back to Temporal's timers; a loop needs one to not spin forever."""

GraphProblem = tuple[str, str]
"""(path such as `steps.x.next`, message)."""


def route_path(step: str, route: str) -> str:
    """Where a routing key of `successors()` is written in the file (`paths[1]` is in `split`)."""
    if route.startswith("paths["):
        return f"steps.{step}.split.{route}.next"
    if route == "on_failure":
        return f"steps.{step}.send.on_failure"
    return f"steps.{step}.{route}"


def steps_of(journey: Journey) -> dict[str, StepBase]:
    """The journey's steps by name (typed by their common base; `isinstance` narrows a kind)."""
    return dict(journey.steps)


def edges(journey: Journey) -> Iterator[tuple[str, str, str]]:
    """Every (from step, routing key, to step) of the journey, in file order; `to` may be `end`."""
    for name, step in journey.steps.items():
        for route, target in successors(step):
            yield name, route, target


def _known(journey: Journey, target: str) -> bool:
    return target == END or target in journey.steps


# --------------------------------------------------------------------------- checks


def missing_start(journey: Journey) -> list[GraphProblem]:
    if journey.start is None or journey.start in journey.steps:
        return []
    return [("start", f"unknown step '{journey.start}' (steps: {', '.join(journey.steps)})")]


def missing_targets(journey: Journey) -> list[GraphProblem]:
    return [
        (route_path(name, route),
         f"unknown step '{target}' (use one of the steps: {', '.join(journey.steps)}, or 'end')")
        for name, route, target in edges(journey)
        if not _known(journey, target)
    ]


def reachable_steps(journey: Journey) -> set[str]:
    """Steps a contact can arrive at from the first step."""
    first = journey.first_step
    if first not in journey.steps:
        return set()
    seen = {first}
    todo = [first]
    while todo:
        for _, target in successors(journey.steps[todo.pop()]):
            if target in journey.steps and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def unreachable(journey: Journey) -> list[GraphProblem]:
    if journey.first_step not in journey.steps:
        return []  # reported as a missing start; every step would look unreachable
    seen = reachable_steps(journey)
    return [
        (f"steps.{name}", f"unreachable: no route leads here from the first step "
                          f"'{journey.first_step}'")
        for name in journey.steps
        if name not in seen
    ]


def _loop_through(graph: dict[str, list[str]], members: set[str], first: str) -> list[str]:
    """One cycle inside a strongly connected set of steps, starting and ending at `first`."""
    parents: dict[str, str] = {}
    todo = [first]
    while todo:
        here = todo.pop(0)
        for target in graph[here]:
            if target == first:
                path = [here]
                while path[-1] != first:
                    path.append(parents[path[-1]])
                return [*reversed(path), first]
            if target in members and target not in parents:
                parents[target] = here
                todo.append(target)
    return [first, first]


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (a generated journey may be deep); components in file order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    order = list(graph)
    return sorted(components, key=lambda c: min(order.index(m) for m in c))


def loops_without_wait(journey: Journey) -> list[GraphProblem]:
    """A loop whose steps never wait would run forever in one workflow task.

    Waiting steps are left out of the graph: any cycle that remains has no wait in it.
    """
    graph = {
        name: [t for _, t in successors(step) if t in journey.steps
               and not isinstance(journey.steps[t], WAITING_KINDS)]
        for name, step in journey.steps.items()
        if not isinstance(step, WAITING_KINDS)
    }
    problems = []
    order = list(journey.steps)
    for component in _strongly_connected(graph):
        members = set(component)
        first = min(component, key=order.index)
        if len(component) == 1 and first not in graph[first]:
            continue
        loop = _loop_through(graph, members, first)
        problems.append((
            f"steps.{first}",
            f"loop without a wait: {' -> '.join(loop)}; add a wait, wait_until, "
            "wait_for_window or wait_for_event step to it",
        ))
    return problems


GRAPH_CHECKS = (missing_start, missing_targets, unreachable, loops_without_wait)


def check_graph(journey: Journey) -> list[GraphProblem]:
    """Every graph problem: unknown `start` or routing targets, unreachable steps, busy loops."""
    return [problem for check in GRAPH_CHECKS for problem in check(journey)]


def back_edges(journey: Journey) -> set[tuple[str, str]]:
    """Edges that return to a step already on the way from the first step: the journey's loops.

    Found by a depth-first walk in file order, so every cycle reachable from the start has exactly
    one such edge; the interpreter continues-as-new when it takes one, which keeps each run's
    history to one pass of the loop.
    """
    first = journey.first_step
    if first not in journey.steps:
        return set()
    found: set[tuple[str, str]] = set()
    on_path = {first}
    done: set[str] = set()
    work = [(first, iter(successors(journey.steps[first])))]
    while work:
        node, routes = work[-1]
        route = next(routes, None)
        if route is None:
            work.pop()
            on_path.discard(node)
            done.add(node)
            continue
        target = route[1]
        if target not in journey.steps:
            continue
        if target in on_path:
            found.add((node, target))
        elif target not in done:
            on_path.add(target)
            work.append((target, iter(successors(journey.steps[target]))))
    return found


# --------------------------------------------------------------------------- description


def describe_step(step: StepBase) -> str:
    """What a step does, in a few words, read from its definition (not its `summary`)."""
    return step.describe()


def _days(offset: timedelta) -> str:
    """`10 days`, `1 day`, or the duration as written when it is not whole days (`36h`)."""
    days, rest = divmod(abs(offset), timedelta(days=1))
    if rest:
        return format_duration(abs(offset))
    return f"{days} day" + ("" if days == 1 else "s")


def describe_trigger(trigger: Trigger) -> str:
    """What starts the journey, as a person says it: `on birthday (yearly at 10:00)`,
    `10 days before emi_due_date at 09:00`, `on event cart_item_added`."""
    spec = trigger.date_attribute
    if spec is None:
        return f"on {trigger.describe()}"
    offset = parse_duration(spec.offset)
    if not offset:
        anchor = f"on {spec.attribute}"
    else:
        side = "before" if offset < timedelta(0) else "after"
        anchor = f"{_days(offset)} {side} {spec.attribute}"
    return f"{anchor} (yearly at {spec.time})" if spec.yearly else f"{anchor} at {spec.time}"


# --------------------------------------------------------------------------- Mermaid


def _text(label: str) -> str:
    """Mermaid label text inside double quotes, with its special characters as entities."""
    return (label.replace("&", "#amp;").replace('"', "#quot;")
            .replace("<", "#lt;").replace(">", "#gt;").replace("|", "#124;"))


def _node_ids(journey: Journey) -> dict[str, str]:
    """Mermaid-safe ids; `end` is a Mermaid keyword and names may hold dashes or dots."""
    ids: dict[str, str] = {}
    for name in journey.steps:
        base = "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        node_id, n = base, 2
        while node_id in ids.values():
            node_id, n = f"{base}_{n}", n + 1
        ids[name] = node_id
    return ids


SHAPES = {"decide": ("{", "}"), "wait": ("([", "])"), "end": ("((", "))"), "act": ("[", "]")}
"""A node's Mermaid brackets by its step's role: diamond, stadium, circle, box."""


def _shape(step: StepBase, text: str) -> str:
    opening, closing = SHAPES[step.role]
    return f'{opening}"{text}"{closing}'


def _edge_label(step: StepBase, route: str) -> str:
    if route.startswith("paths[") and isinstance(step, SplitStep):
        path = step.split.paths[int(route[6:-1])]
        return f"{path.percent:g}%" + (f" {path.name}" if path.name else "")
    return {"timeout_next": "timeout", "on_failure": "on failure", "next": ""}.get(route, route)


class StepFunnel(Protocol):
    """A step's funnel figures (`cairn.reports.StepFigures` has them)."""

    reached: int
    waiting: int
    left: dict[str, int]
    exited: dict[str, int]


def _funnel_label(figures: StepFunnel | None) -> str:
    if figures is None:
        return "<br/>reached 0"
    label = f"<br/>reached {figures.reached}, waiting {figures.waiting}"
    for goal, n in figures.exited.items():
        label += f"<br/>exit {_text(goal)}: {n}"
    return label


def _with_count(label: str, figures: StepFunnel | None, route: str) -> str:
    if figures is None:
        return label
    n = figures.left.get(route, 0)
    return f"{label} ({n})" if label else str(n)


def mermaid(journey: Journey, counts: dict[str, int] | None = None,
            funnel: Mapping[str, StepFunnel] | None = None) -> str:
    """A Mermaid flowchart of the journey, top-down, with `counts` (contacts per step) if given.

    With `funnel` (per step: reached, waiting, left by each route, exit goals caught there, as
    the journey report has them), nodes say how many reached and wait in them and edges how
    many left by them. Loops (back edges) are dotted; the trigger is the entry node and `end`
    the exit node.
    """
    funnel_of = funnel.get if funnel is not None else None
    ids = _node_ids(journey)
    loops = back_edges(journey)
    lines = ["flowchart TD", f'  trigger>"{_text(describe_trigger(journey.trigger))}"]']
    for name, step in steps_of(journey).items():
        label = f"<b>{_text(name)}</b><br/>{_text(describe_step(step))}"
        if step.summary:
            label += f"<br/><i>{_text(step.summary)}</i>"
        if counts is not None:
            count = counts.get(name, 0)
            label += f"<br/>{count} contact{'' if count == 1 else 's'}"
        if funnel_of is not None:
            label += _funnel_label(funnel_of(name))
        lines.append(f"  {ids[name]}{_shape(step, label)}")
    lines.append('  finish(("end"))')
    if journey.first_step in ids:
        lines.append(f"  trigger --> {ids[journey.first_step]}")
    for name, route, target in edges(journey):
        if target != END and target not in ids:
            continue
        label = _edge_label(steps_of(journey)[name], route)
        if funnel_of is not None:
            label = _with_count(label, funnel_of(name), route)
        arrow = "-.->" if (name, target) in loops else "-->"
        to = "finish" if target == END else ids[target]
        lines.append(f"  {ids[name]} {arrow}{f'|{_text(label)}|' if label else ''} {to}")
    for name, step in steps_of(journey).items():
        figures = funnel_of(name) if funnel_of is not None else None
        if isinstance(step, SplitStep) and step.split.holdout:
            label = _with_count(f"{step.split.holdout:g}% holdout", figures, "holdout")
            lines.append(f"  {ids[name]} -->|{_text(label)}| finish")
        if step.role == "end":
            label = _with_count("", figures, "end")
            lines.append(f"  {ids[name]} -->{f'|{label}|' if label else ''} finish")
    for goal in journey.exit:
        lines.append(f"  %% exit goal: {goal.event} -> {goal.goal}")
    return "\n".join(lines) + "\n"


__all__ = [
    "GRAPH_CHECKS", "WAITING_KINDS", "StepFunnel", "back_edges", "check_graph",
    "describe_condition", "describe_step", "describe_trigger", "edges", "loops_without_wait",
    "mermaid", "missing_start", "missing_targets", "reachable_steps", "route_path",
    "unreachable",
]
