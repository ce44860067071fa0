"""A journey's step graph as a picture: laid out here, drawn as inline SVG, with figures on it.

The console (`starter.console`) shows a journey with it; nothing is fetched by the browser, no
JavaScript draws it. The layout is the classic layered one for a directed graph:

1. loops are cut at their back edges (`cairn.graph.back_edges`, the edges the interpreter
   continues-as-new on), which leaves a DAG;
2. each node's layer is its longest path from the trigger, so every forward edge points down;
3. within a layer, nodes are ordered by the barycentre of their neighbours in the layer above,
   then below, a few sweeps (fewer crossings), starting from file order (deterministic);
4. forward edges are curves from a node's bottom to the next node's top; back edges go round the
   right side, dashed.

Figures come from the journey report (`cairn.reports.JourneyReport`): `report_figures` maps it
onto nodes and edges (entries on the trigger, reached and waiting per step, sent and skipped per
send step, per-branch counts on edges, conversions per exit goal). Pure functions: no store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from html import escape
from itertools import pairwise
from typing import Any

from cairn.graph import back_edges, describe_step, describe_trigger, edges
from cairn.journey import END, Journey, SplitStep

TRIGGER = "__trigger__"
FINISH = "__end__"
NODE_WIDTH = 230
LINE_HEIGHT = 15
H_GAP = 40
V_GAP = 58
MARGIN = 24
LOOP_MARGIN = 60
SWEEPS = 4
DUMMY_WIDTH = 24
TEXT_LIMIT = 34
"""Characters of a line of a node's text; the whole text is in the node's `<title>` tooltip."""


@dataclass
class GraphFigures:
    """Lines of figures under each node (by step name, `TRIGGER`, `FINISH` or `goal:<name>`)
    and a figure on each edge (by (from step, routing key))."""

    nodes: dict[str, list[str]] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Figures the picture has no place for (steps only an older version had)."""


@dataclass
class _Node:
    id: str
    title: str
    lines: list[str]
    role: str
    figures: list[str]
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    width: float = NODE_WIDTH
    row_height: float = 0.0

    @property
    def dummy(self) -> bool:
        return self.role == "dummy"

    @property
    def height(self) -> float:
        if self.dummy:
            return self.row_height
        return LINE_HEIGHT * (len(self.lines) + len(self.figures)) + 14


@dataclass
class _Edge:
    source: str
    target: str
    route: str
    label: str
    back: bool = False
    via: list[str] = field(default_factory=list)
    """Dummy nodes a long forward edge passes through, one per layer it crosses."""


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT - 1] + "…"


def edge_label(journey: Journey, step: str, route: str) -> str:
    """What a routing key reads as on the picture: `then`, `else`, `timeout`, `50% a`."""
    model = journey.steps[step]
    if route.startswith("paths[") and isinstance(model, SplitStep):
        path = model.split.paths[int(route[6:-1])]
        return f"{path.percent:g}%" + (f" {path.name}" if path.name else "")
    return {"timeout_next": "timeout", "on_failure": "on failure", "next": ""}.get(route, route)


def _edges(journey: Journey) -> list[_Edge]:
    """Every edge the picture draws: the trigger's to the first step, each routing key whose
    target exists, a split's holdout and an `end` step's way out (both to `end`)."""
    loops = back_edges(journey)
    found: list[_Edge] = []
    if journey.first_step in journey.steps:
        found.append(_Edge(TRIGGER, journey.first_step, "start", ""))
    for name, route, target in edges(journey):
        if target != END and target not in journey.steps:
            continue
        found.append(_Edge(name, FINISH if target == END else target, route,
                           edge_label(journey, name, route), back=(name, target) in loops))
    for name, step in journey.steps.items():
        if isinstance(step, SplitStep) and step.split.holdout:
            found.append(_Edge(name, FINISH, "holdout", f"{step.split.holdout:g}% holdout"))
        if step.role == "end":
            found.append(_Edge(name, FINISH, "end", ""))
    return found


def _graph(journey: Journey, figures: GraphFigures) -> tuple[dict[str, _Node], list[_Edge]]:
    nodes = {TRIGGER: _Node(TRIGGER, "trigger", ["trigger", _short(describe_trigger(
        journey.trigger))], "trigger", figures.nodes.get(TRIGGER, []))}
    for name, step in journey.steps.items():
        described = describe_step(step)
        kind = described if described.split(" ", 1)[0] == step.kind else (
            f"{step.kind}: {described}")
        lines = [_short(name), _short(kind)]
        if step.summary:
            lines.append(_short(step.summary))
        title = f"{name} ({step.kind}): {describe_step(step)}" + (
            f" — {step.summary}" if step.summary else "")
        nodes[name] = _Node(name, title, lines, step.role, figures.nodes.get(name, []))
    nodes[FINISH] = _Node(FINISH, "end", ["end"], "finish", figures.nodes.get(FINISH, []))
    for goal in dict.fromkeys(g.goal for g in journey.exit):
        on = ", ".join(g.event for g in journey.exit if g.goal == goal)
        node_id = f"goal:{goal}"
        nodes[node_id] = _Node(node_id, f"exit goal {goal} on {on}",
                               [_short(f"goal {goal}"), _short(f"exit on {on}")], "goal",
                               figures.nodes.get(node_id, []))
    found = _edges(journey)
    for edge in found:
        figure = figures.edges.get((edge.source, edge.route))
        if figure:
            edge.label = f"{edge.label} · {figure}" if edge.label else figure
    return nodes, found


def _layers(nodes: dict[str, _Node], found: list[_Edge]) -> list[list[str]]:
    """Longest-path layers over the forward edges; `end` and the goals at the bottom."""
    forward = [e for e in found if not e.back]
    incoming: dict[str, list[str]] = {n: [] for n in nodes}
    for e in forward:
        incoming[e.target].append(e.source)
    bottom = {FINISH} | {n for n in nodes if n.startswith("goal:")}
    layer: dict[str, int] = {TRIGGER: 0}
    order = [n for n in nodes if n not in bottom]
    # Relaxation in file order until stable; bounded, since a step that no route reaches may
    # still sit on a loop of its own (the journey checks report it, the picture still shows it).
    for _ in range(len(order) + 1):
        changed = False
        for n in order:
            if n == TRIGGER:
                continue
            best = max((layer.get(p, 0) + 1 for p in incoming[n] if p not in bottom),
                       default=1)
            if layer.get(n) != best and best <= len(order):
                layer[n] = best
                changed = True
        if not changed:
            break
    last = max(layer.values(), default=0) + 1
    for n in bottom:
        layer[n] = last
    rows: list[list[str]] = [[] for _ in range(last + 1)]
    for n in nodes:
        rows[layer[n]].append(n)
        nodes[n].layer = layer[n]
    return [row for row in rows if row]


def _add_dummies(nodes: dict[str, _Node], rows: list[list[str]], found: list[_Edge]) -> None:
    """Split each forward edge longer than one layer with a dummy node per layer crossed, so
    that ordering keeps it out of the way of the nodes it passes (the classic Sugiyama step)."""
    index = {n: i for i, row in enumerate(rows) for n in row}
    for number, e in enumerate(found):
        if e.back:
            continue
        for layer in range(index[e.source] + 1, index[e.target]):
            dummy = f"~{number}.{layer}"
            nodes[dummy] = _Node(dummy, "", [], "dummy", [], layer=layer, width=DUMMY_WIDTH)
            rows[layer].append(dummy)
            e.via.append(dummy)


def _segments(found: list[_Edge]) -> list[tuple[str, str]]:
    pairs = []
    for e in found:
        if not e.back:
            chain = [e.source, *e.via, e.target]
            pairs += list(pairwise(chain))
    return pairs


def _order(rows: list[list[str]], found: list[_Edge]) -> None:
    """Barycentre ordering, downward then upward sweeps; ties keep the current order."""
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    for source, target in _segments(found):
        up.setdefault(target, []).append(source)
        down.setdefault(source, []).append(target)
    for sweep in range(SWEEPS):
        indices = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        neighbours = up if sweep % 2 == 0 else down
        for i in indices:
            position = {n: k for row in rows for k, n in enumerate(row)}
            rows[i] = sorted(rows[i], key=partial(_sort_key, neighbours=neighbours,
                                                  position=position))


def _sort_key(node: str, *, neighbours: dict[str, list[str]],
              position: dict[str, int]) -> tuple[float, int]:
    """The barycentre: the mean position of a node's neighbours in the layer swept from (its
    own position when it has none there); ties keep the current order."""
    near = [position[m] for m in neighbours.get(node, []) if m in position]
    return (sum(near) / len(near) if near else float(position[node]), position[node])


def _place(nodes: dict[str, _Node], rows: list[list[str]]) -> tuple[float, float]:
    def used(row: list[str]) -> float:
        return sum(nodes[n].width for n in row) + (len(row) - 1) * H_GAP

    width = max(used(row) for row in rows)
    y = float(MARGIN)
    for row in rows:
        x = MARGIN + (width - used(row)) / 2
        tallest = max(nodes[n].height for n in row if not nodes[n].dummy) if any(
            not nodes[n].dummy for n in row) else LINE_HEIGHT
        for n in row:
            nodes[n].x, nodes[n].y = x, y
            if nodes[n].dummy:
                nodes[n].row_height = tallest
            x += nodes[n].width + H_GAP
        y += tallest + V_GAP
    return MARGIN * 2 + width + LOOP_MARGIN, y - V_GAP + MARGIN


def _edge_svg(nodes: dict[str, _Node], e: _Edge, right: float) -> str:
    a, b = nodes[e.source], nodes[e.target]
    attributes = (f'class="edge{" loop" if e.back else ""}" data-from="{escape(e.source)}" '
                  f'data-to="{escape(e.target)}" data-route="{escape(e.route)}"')
    if e.back:
        x1, y1 = a.x + NODE_WIDTH, a.y + a.height / 2
        x2, y2 = b.x + NODE_WIDTH, b.y + b.height / 2
        bend = right - LOOP_MARGIN / 3
        path = f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        lx, ly = bend - 4, (y1 + y2) / 2
        anchor = "end"
    else:
        points = [(a.x + a.width / 2, a.y + a.height)]
        for dummy in (nodes[d] for d in e.via):
            centre = dummy.x + dummy.width / 2
            points += [(centre, dummy.y), (centre, dummy.y + dummy.height)]
        points.append((b.x + b.width / 2, b.y))
        path = f"M{points[0][0]:.0f},{points[0][1]:.0f}"
        for i in range(0, len(points) - 1, 2):
            (x1, y1), (x2, y2) = points[i], points[i + 1]
            mid = (y1 + y2) / 2
            path += f" C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"
            if i + 2 < len(points):
                path += f" L{points[i + 2][0]:.0f},{points[i + 2][1]:.0f}"
        (x1, y1), (x2, y2) = points[0], points[1]
        # A label beside its curve, on the side it bends to: two ways out of one step (`then`
        # to the left, `else` to the right) keep their figures apart.
        left = x2 < x1 - 1
        lx, ly = (x1 + x2) / 2 + (-4 if left else 4), (y1 + y2) / 2 + 4
        anchor = "end" if left else "start"
    label = (f'<text class="edge-label" x="{lx:.0f}" y="{ly:.0f}" text-anchor="{anchor}">'
             f"{escape(e.label)}</text>") if e.label else ""
    return f'<g {attributes}><path d="{path}" marker-end="url(#arrow)"/>{label}</g>'


def _node_svg(n: _Node) -> str:
    parts = [f'<g class="node role-{n.role}" data-node="{escape(n.id)}" '
             f'transform="translate({n.x:.0f},{n.y:.0f})">',
             f"<title>{escape(n.title)}</title>",
             f'<rect width="{NODE_WIDTH}" height="{n.height:.0f}" rx="8"/>']
    y = 4 + LINE_HEIGHT
    for i, line in enumerate(n.lines):
        kind = "name" if i == 0 else "text"
        parts.append(f'<text class="{kind}" x="10" y="{y}">{escape(line)}</text>')
        y += LINE_HEIGHT
    for figure in n.figures:
        parts.append(f'<text class="figure" x="10" y="{y}">{escape(figure)}</text>')
        y += LINE_HEIGHT
    parts.append("</g>")
    return "".join(parts)


def journey_svg(journey: Journey, figures: GraphFigures | None = None) -> str:
    """The journey as an `<svg>` element: nodes with kind, description, summary and figures;
    labelled edges, loops dashed. Style it with the classes `node`, `role-<role>`, `edge`,
    `loop`, `edge-label`, `figure`."""
    nodes, found = _graph(journey, figures or GraphFigures())
    rows = _layers(nodes, found)
    _add_dummies(nodes, rows, found)
    _order(rows, found)
    width, height = _place(nodes, rows)
    body = [_edge_svg(nodes, e, width) for e in found]
    body += [_node_svg(nodes[n]) for row in rows for n in row if not nodes[n].dummy]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="journey-graph" role="img" '
            f'aria-label="{escape(journey.key)} step graph" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/>'
            "</marker></defs>" + "".join(body) + "</svg>")


def layout(journey: Journey) -> dict[str, tuple[int, int]]:
    """(layer, position in layer) of every node: what the tests check of the layout."""
    nodes, found = _graph(journey, GraphFigures())
    rows = _layers(nodes, found)
    _add_dummies(nodes, rows, found)
    _order(rows, found)
    return {n: (i, k) for i, row in enumerate(rows)
            for k, n in enumerate(r for r in row if not nodes[r].dummy)}


def _count(n: int, word: str) -> str:
    return f"{n} {word}"


def report_figures(journey: Journey, report: Any) -> GraphFigures:
    """The figures of a `JourneyReport` placed on the picture of `journey`.

    Per step (the report's `steps`): `reached` and `waiting` on the node, with the exit goals
    caught there and the entries that left by no drawn edge (`removed`, `failed`); on each of
    its edges the entries that left by that route (`0 left` too, once anyone reached the step).
    The trigger's edge carries the entries.
    """
    figures = GraphFigures()
    funnel = report.funnel
    figures.nodes[TRIGGER] = [f"{funnel.entries} entered · {funnel.active} active"]
    figures.nodes[FINISH] = [f"{funnel.completed} completed"
                             + "".join(f" · {n} {name}" for name, n in funnel.ended.items())]
    for goal in funnel.goals:
        rate = f" ({goal.rate:.1%})" if goal.rate is not None else ""
        figures.nodes[f"goal:{goal.goal}"] = [f"{goal.conversions} converted{rate}"]
    figures.edges[(TRIGGER, "start")] = _count(funnel.entries, "entered")
    drawn: dict[str, set[str]] = {}
    for edge in _edges(journey):
        drawn.setdefault(edge.source, set()).add(edge.route)
    elsewhere: list[str] = []
    for row in getattr(report, "steps", None) or []:
        if row.step not in journey.steps:
            if row.reached:
                elsewhere.append(f"{row.step} ({row.reached} reached, {row.waiting} waiting)")
            continue
        lines = figures.nodes.setdefault(row.step, [])
        lines.append(f"{row.reached} reached · {row.waiting} waiting")
        exited = getattr(row, "exited", None) or {}
        if exited:
            lines.append("exited: " + ", ".join(f"{g} {n}" for g, n in exited.items()))
        left = getattr(row, "left", None) or {}
        if not row.reached and not left:
            continue  # nobody came here: no "0 left" on every way out
        routes = {route: target for name, route, target in edges(journey) if name == row.step}
        by_route: dict[str, int] = {}
        off_picture: dict[str, int] = {}
        for branch, n in left.items():
            route = _route_named(journey, row.step, branch, routes)
            if route in drawn.get(row.step, set()):
                by_route[route] = by_route.get(route, 0) + n
            else:  # `removed`, `failed`, or a route of an older version: no edge to put it on
                off_picture[branch] = off_picture.get(branch, 0) + n
        for route in drawn.get(row.step, set()):
            figures.edges[(row.step, route)] = _count(by_route.get(route, 0), "left")
        if off_picture:
            lines.append(", ".join(f"{n} {branch}" for branch, n in off_picture.items()))
    if elsewhere:
        figures.notes.append("steps this version of the definition does not have: "
                             + "; ".join(elsewhere))
    for message in report.messages:
        if message.step not in journey.steps:
            continue
        skipped = sum(message.skipped.values())
        line = f"{message.channel or 'sent'}: {message.sent} sent"
        if message.delivered:
            line += f", {message.delivered} delivered"
        if message.opened:
            line += f", {message.opened} opened"
        if message.clicked:
            line += f", {message.clicked} clicked"
        if skipped:
            line += f", {skipped} skipped"
        figures.nodes.setdefault(message.step, []).append(line)
    return figures


def _route_named(journey: Journey, step: str, branch: str, routes: dict[str, str]) -> str:
    """The routing key a report's branch name means: the key itself (`then`, `paths[0]`), its
    label (`timeout`, a split path's name) or the step it leads to."""
    if branch in routes:
        return branch
    for route, target in routes.items():
        label = edge_label(journey, step, route)
        if branch in (label, target) or label.endswith(f" {branch}"):
            return route
    return branch


__all__ = ["FINISH", "TRIGGER", "GraphFigures", "edge_label", "journey_svg", "layout",
           "report_figures"]
