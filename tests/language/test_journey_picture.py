"""The journey drawn as SVG: layers by longest path, barycentre order, loops as back edges,
figures from the report on nodes and edges, text escaped, every catalog journey drawable."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cairn.catalog import load_catalog
from cairn.journey import Journey
from cairn.journey_picture import (
    FINISH,
    TRIGGER,
    GraphFigures,
    journey_svg,
    layout,
    report_figures,
)

SVG = "{http://www.w3.org/2000/svg}"
CATALOG = Path(__file__).resolve().parents[2] / "journeys"


def journey(steps: dict[str, Any], **extra: Any) -> Journey:
    return Journey.model_validate({"key": "j", "name": "J", "trigger": {"event": "go"},
                                   "steps": steps, **extra})


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_layers_follow_the_longest_path_and_end_is_at_the_bottom() -> None:
    # a -> b -> c and a -> c: c sits below b (longest path), not beside it.
    j = journey({"a": {"if": {"attribute": "x", "eq": 1}, "then": "b", "else": "c"},
                 "b": {"wait": "1h", "next": "c"},
                 "c": {"score": {"add": 1}, "next": "end"}})
    places = layout(j)
    assert places[TRIGGER][0] == 0
    assert [places[n][0] for n in ("a", "b", "c")] == [1, 2, 3]
    assert places[FINISH][0] == 4


def test_barycentre_order_keeps_children_under_their_parents() -> None:
    # Written in an order that would cross: left's child is listed last.
    j = journey({
        "split": {"if": {"attribute": "x", "eq": 1}, "then": "left", "else": "right"},
        "left": {"wait": "1h", "next": "left_child"},
        "right": {"wait": "2h", "next": "right_child"},
        "right_child": {"score": {"add": 2}, "next": "end"},
        "left_child": {"score": {"add": 1}, "next": "end"},
    }, start="split")
    places = layout(j)
    assert places["left"][1] < places["right"][1]
    assert places["left_child"][1] < places["right_child"][1]


def test_a_loop_is_drawn_as_a_dashed_back_edge_and_does_not_push_layers_down() -> None:
    j = journey({"remind": {"score": {"add": 1}, "next": "pause"},
                 "pause": {"wait": "7d", "next": "again"},
                 "again": {"if": {"attribute": "paid", "eq": False}, "then": "remind",
                           "else": "end"}})
    places = layout(j)
    assert [places[n][0] for n in ("remind", "pause", "again")] == [1, 2, 3]
    root = parsed(journey_svg(j))
    loops = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge loop"]
    assert [(g.get("data-from"), g.get("data-to"), g.get("data-route")) for g in loops] == [
        ("again", "remind", "then")]
    forward = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert ("again", FINISH) in {(g.get("data-from"), g.get("data-to")) for g in forward}


def test_nodes_carry_kind_summary_and_figures_and_edges_their_labels() -> None:
    j = journey({"pick": {"split": {"paths": [{"percent": 50, "next": "a", "name": "copy_a"},
                                              {"percent": 50, "next": "b"}]}},
                 "a": {"score": {"add": 1}, "next": "end", "summary": "Tom & <Jerry>"},
                 "b": {"score": {"add": 2}, "next": "end"}})
    figures = GraphFigures(nodes={"a": ["4 reached"]}, edges={("pick", "paths[0]"): "4 left"})
    svg = journey_svg(j, figures)
    root = parsed(svg)  # well-formed: the summary's & and < are escaped
    assert "Tom &amp; &lt;Jerry&gt;" in svg
    node = next(g for g in root.iter(f"{SVG}g") if g.get("data-node") == "a")
    texts = [(t.get("class"), t.text) for t in node.iter(f"{SVG}text")]
    assert texts == [("name", "a"), ("text", "score global +1"), ("text", "Tom & <Jerry>"),
                     ("figure", "4 reached")]
    labels = {(g.get("data-from"), g.get("data-route")): [t.text for t in g.iter(f"{SVG}text")]
              for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "")}
    assert labels[("pick", "paths[0]")] == ["50% copy_a · 4 left"]
    assert labels[("pick", "paths[1]")] == ["50%"]


def test_the_report_figures_go_on_trigger_steps_goals_end_and_branches() -> None:
    j = journey({"check": {"if": {"attribute": "x", "eq": 1}, "then": "mail", "else": "end"},
                 "mail": {"send": {"channel": "email", "template": "t"}, "next": "end"}},
                exit=[{"event": "bought", "goal": "converted"}])
    funnel = SimpleNamespace(entries=10, active=1, completed=6, ended={"holdout": 1},
                             goals=[SimpleNamespace(goal="converted", conversions=3, rate=0.3)])
    message = SimpleNamespace(step="mail", channel="email", sent=5, delivered=4, opened=2,
                              clicked=0, skipped={"consent": 1, "unreachable": 0})
    steps = [SimpleNamespace(step="check", reached=9, waiting=0, left={"then": 6, "else": 3},
                             exited={"converted": 1})]
    report = SimpleNamespace(funnel=funnel, messages=[message], steps=steps)
    figures = report_figures(j, report)
    assert figures.nodes[TRIGGER] == ["10 entered · 1 active"]
    assert figures.nodes[FINISH] == ["6 completed · 1 holdout"]
    assert figures.nodes["goal:converted"] == ["3 converted (30.0%)"]
    assert figures.nodes["check"] == ["9 reached · 0 waiting", "exited: converted 1"]
    assert figures.nodes["mail"] == ["email: 5 sent, 4 delivered, 2 opened, 1 skipped"]
    assert figures.edges == {(TRIGGER, "start"): "10 entered", ("check", "then"): "6 left",
                             ("check", "else"): "3 left"}


def test_every_way_out_of_a_step_gets_its_count_and_the_rest_stays_on_the_node() -> None:
    from cairn.reports import StepFigures

    j = journey({"pick": {"split": {"paths": [{"percent": 45, "next": "listen", "name": "a"},
                                              {"percent": 45, "next": "end"}],
                                    "holdout": 10}},
                 "listen": {"wait_for_event": {"event": "login", "timeout": "1d"},
                            "then": "end", "timeout_next": "pick"}})
    funnel = SimpleNamespace(entries=12, active=2, completed=9, ended={}, goals=[])
    steps = [StepFigures(step="pick", kind="split", reached=12, waiting=0,
                         left={"paths[0]": 5, "paths[1]": 5, "holdout": 1, "failed": 1},
                         exited={}),
             StepFigures(step="listen", kind="wait_for_event", reached=5, waiting=2,
                         left={"then": 2, "removed": 1}, exited={}),
             StepFigures(step="gone", kind=None, reached=3, waiting=0, left={"next": 3},
                         exited={})]
    figures = report_figures(j, SimpleNamespace(funnel=funnel, messages=[], steps=steps))
    assert figures.edges == {
        (TRIGGER, "start"): "12 entered", ("pick", "paths[0]"): "5 left",
        ("pick", "paths[1]"): "5 left", ("pick", "holdout"): "1 left",
        ("listen", "then"): "2 left", ("listen", "timeout_next"): "0 left"}
    assert figures.nodes["pick"] == ["12 reached · 0 waiting", "1 failed"]
    assert figures.nodes["listen"] == ["5 reached · 2 waiting", "1 removed"]
    assert figures.notes == ["steps this version of the definition does not have: "
                             "gone (3 reached, 0 waiting)"]
    root = parsed(journey_svg(j, figures))
    labels = {(g.get("data-from"), g.get("data-route")): [t.text for t in g.iter(f"{SVG}text")]
              for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "")}
    assert labels[("pick", "holdout")] == ["10% holdout · 1 left"]
    assert labels[("listen", "timeout_next")] == ["timeout · 0 left"]  # the loop back, dashed
    assert labels[("pick", "paths[0]")] == ["45% a · 5 left"]


def test_every_catalog_journey_draws_as_well_formed_svg_with_every_step() -> None:
    for j in load_catalog(CATALOG):
        root = parsed(journey_svg(j))
        drawn = {g.get("data-node") for g in root.iter(f"{SVG}g") if g.get("data-node")}
        assert set(j.steps) | {TRIGGER, FINISH} <= drawn, j.key
        width, height = float(root.get("width", 0)), float(root.get("height", 0))
        assert 0 < width < 5000 and 0 < height < 8000, j.key
