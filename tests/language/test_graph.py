"""The step graph: checks, loops the interpreter continues-as-new on, the Mermaid picture, and
the words it uses for steps and triggers (`describe_step`, `describe_trigger`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import starter.cli.journeys  # noqa: F401  (registers validate and graph on the app)
from cairn.graph import back_edges, check_graph, describe_step, describe_trigger, mermaid
from cairn.journey import Journey, Trigger
from starter.cli.app import app

REPO = Path(__file__).resolve().parents[2]


def journey(steps: dict[str, Any], **extra: Any) -> Journey:
    return Journey.model_validate(
        {"key": "g", "name": "Graph", "trigger": {"event": "go"}, "steps": steps, **extra}
    )


MONTHLY = {
    "remind": {"wait_until": {"attribute": "due_on", "offset": "-10d", "time": "10:00"},
               "next": "send", "missing": "end"},
    "send": {"send": {"channel": "email", "template": "emi"}, "next": "paid"},
    "paid": {"wait_for_event": {"event": "paid", "timeout": "10d"}, "then": "next_month",
             "timeout_next": "escalate"},
    "escalate": {"task": {"queue": "collections", "title": "Call"}, "next": "next_month"},
    "next_month": {"update": {"set": {"due_on": "later"}}, "next": "remind"},
}


def test_valid_loop_has_one_back_edge_and_no_problems() -> None:
    monthly = journey(MONTHLY)

    assert check_graph(monthly) == []
    assert back_edges(monthly) == {("next_month", "remind")}


def test_back_edges_of_nested_loops_and_straight_lines() -> None:
    nested = journey({
        "a": {"wait": "1d", "next": "b"},
        "b": {"if": {"in_segment": "x"}, "then": "a", "else": "c"},
        "c": {"wait": "1h", "next": "d"},
        "d": {"if": {"in_segment": "y"}, "then": "c", "else": "b"},
    })
    assert back_edges(nested) == {("b", "a"), ("d", "c"), ("d", "b")}
    assert back_edges(journey({"a": {"wait": "1d", "next": "b"}, "b": {"end": None}})) == set()


def test_check_graph_reports_each_problem_with_its_path() -> None:
    broken = journey({
        "a": {"if": {"in_segment": "x"}, "then": "b", "else": "ghost"},
        "b": {"score": {"add": 1}, "next": "c"},
        "c": {"split": {"paths": [{"percent": 50, "next": "b"}, {"percent": 50, "next": "d"}]}},
        "d": {"wait": "1d", "next": "a"},
        "island": {"end": "lost"},
    })
    assert check_graph(broken) == [
        ("steps.a.else", "unknown step 'ghost' (use one of the steps: a, b, c, d, island, or "
                         "'end')"),
        ("steps.island", "unreachable: no route leads here from the first step 'a'"),
        ("steps.b", "loop without a wait: b -> c -> b; add a wait, wait_until, "
                    "wait_for_window or wait_for_event step to it"),
    ]


def test_self_loop_without_wait() -> None:
    spin = journey({"a": {"score": {"add": 1}, "next": "a"}})
    assert check_graph(spin) == [
        ("steps.a", "loop without a wait: a -> a; add a wait, wait_until, wait_for_window or "
                    "wait_for_event step to it"),
    ]


def test_two_loops_one_without_wait_is_still_reported() -> None:
    """A wait on one loop through a step does not excuse another loop through the same step."""
    mixed = journey({
        "a": {"if": {"in_segment": "x"}, "then": "b", "else": "c"},
        "b": {"wait": "1d", "next": "a"},
        "c": {"score": {"add": 1}, "next": "a"},
    })
    assert [path for path, _ in check_graph(mixed)] == ["steps.a"]
    assert "a -> c -> a" in check_graph(mixed)[0][1]


def test_missing_start_is_reported_once() -> None:
    assert check_graph(journey({"a": {"wait": "1d", "next": "end"}}, start="b")) == [
        ("start", "unknown step 'b' (steps: a)"),
    ]


def test_mermaid_draws_every_step_and_labelled_edge() -> None:
    ab = journey({
        "wait_1d": {"wait": "1d", "next": "vip"},
        "vip": {"if": {"score": "global", "gte": 40}, "then": "ab", "else": "opened"},
        "ab": {"split": {"paths": [{"percent": 45, "next": "mail", "name": "short"},
                                   {"percent": 45, "next": "end"}], "holdout": 10}},
        "opened": {"wait_for_event": {"event": "email_opened", "timeout": "2d"},
                   "then": "mail", "timeout_next": "wait_1d"},
        "mail": {"send": {"channel": "email", "template": "t", "on_failure": "done"},
                 "next": "end", "summary": 'say "hi"'},
        "done": {"end": "bounced"},
    })

    chart = mermaid(ab)

    assert chart.startswith("flowchart TD\n")
    lines = chart.splitlines()
    assert '  s_vip{"<b>vip</b><br/>if score global ≥ 40"}' in lines
    assert ('  s_mail["<b>mail</b><br/>send email: t<br/><i>say #quot;hi#quot;</i>"]'
            in lines)
    assert "  trigger --> s_wait_1d" in lines
    assert "  s_wait_1d --> s_vip" in lines
    assert "  s_vip -->|then| s_ab" in lines
    assert "  s_vip -->|else| s_opened" in lines
    assert "  s_ab -->|45% short| s_mail" in lines
    assert "  s_ab -->|45%| finish" in lines
    assert "  s_ab -->|10% holdout| finish" in lines
    assert "  s_opened -->|then| s_mail" in lines
    assert "  s_opened -.->|timeout| s_wait_1d" in lines  # a loop back: dotted
    assert "  s_mail -->|on failure| s_done" in lines
    assert "  s_done --> finish" in lines
    assert "contacts" not in chart


def test_mermaid_with_counts() -> None:
    chart = mermaid(journey(MONTHLY), counts={"remind": 120, "send": 118})
    assert "<br/>120 contacts" in chart
    assert "<br/>118 contacts" in chart
    assert "s_paid([\"<b>paid</b><br/>wait for paid up to 10d<br/>0 contacts\"])" in chart


def test_cli_graph_of_a_file() -> None:
    result = CliRunner().invoke(app, ["graph", str(REPO / "journeys" / "cart-abandonment.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart TD\n")
    assert "  s_still_in_cart -->|else| finish" in result.stdout.splitlines()
    assert "  s_push_or_email -->|then| s_push_reminder" in result.stdout.splitlines()


def test_cli_graph_of_a_key_in_the_journeys_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, ["graph", "cart-abandonment"])
    assert result.exit_code == 0, result.output
    assert "  s_email_reminder --> finish" in result.stdout.splitlines()


def test_cli_graph_finds_a_key_by_content(tmp_path: Path) -> None:
    (tmp_path / "renamed.yaml").write_text(
        "key: welcome\nname: W\ntrigger: {event: signed_up}\nsteps:\n  hi: {end: null}\n"
    )
    result = CliRunner().invoke(app, ["graph", "welcome", "--journeys-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "  s_hi --> finish" in result.stdout.splitlines()


def test_cli_graph_unknown_key_or_broken_file_fails(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["graph", "nope", "--journeys-dir", str(tmp_path)])
    assert missing.exit_code == 1
    assert f"{tmp_path}: no journey with key 'nope' here" in missing.stderr

    (tmp_path / "bad.yaml").write_text(
        "key: bad\nname: B\ntrigger: {event: x}\nsteps:\n  a: {wait: 1d, next: b}\n"
    )
    broken = CliRunner().invoke(app, ["graph", str(tmp_path / "bad.yaml")])
    assert broken.exit_code == 1
    assert f"{tmp_path / 'bad.yaml'}: steps.a.next: unknown step 'b'" in broken.stderr
    assert broken.stdout == ""


# --------------------------------------------------------------------------- wording


def test_graph_says_remove_from_an_audience() -> None:
    steps = journey({
        "join": {"audience": {"sync": "facebook", "audience": "buyers"}, "next": "leave"},
        "leave": {"audience": {"sync": "google", "audience": "buyers", "action": "remove"},
                  "next": "end"},
    })
    assert describe_step(steps.steps["join"]) == "add to facebook audience buyers"
    assert describe_step(steps.steps["leave"]) == "remove from google audience buyers"
    assert "remove from google audience buyers" in mermaid(steps)


@pytest.mark.parametrize(("spec", "label"), [
    ({"attribute": "birthday", "yearly": True, "time": "10:00"}, "on birthday (yearly at 10:00)"),
    ({"attribute": "emi_due_date", "offset": "-10d"}, "10 days before emi_due_date at 09:00"),
    ({"attribute": "signup_date", "offset": "1d", "time": "08:30"},
     "1 day after signup_date at 08:30"),
    ({"attribute": "renewal", "offset": "-2w", "yearly": True},
     "14 days before renewal (yearly at 09:00)"),
    ({"attribute": "starts_at", "offset": "-36h"}, "1d12h before starts_at at 09:00"),
])
def test_graph_words_date_attribute_triggers(spec: dict[str, Any], label: str) -> None:
    trigger = Trigger.model_validate({"date_attribute": spec})
    assert describe_trigger(trigger) == label
    chart = mermaid(journey({"hello": {"score": {"add": 1}, "next": "end"}},
                            trigger={"date_attribute": spec}))
    assert f'  trigger>"{label}"]' in chart.splitlines()


FORM = {
    "ask": {"wait_for_event": {"event": "form_submitted", "timeout": "2d"}, "then": "check",
            "timeout_next": "check"},
    "check": {"if": {"property": "answer", "event": "form_submitted", "eq": "yes"},
              "then": "said_yes", "else": "said_no"},
    "said_yes": {"end": "said_yes"},
    "said_no": {"end": "said_no"},
}
"""A form answer that a `wait_for_event` catches and an `if` reads."""


def test_graph_keeps_other_triggers_and_names_caught_events() -> None:
    assert describe_trigger(Trigger(event="cart_item_added")) == "on event cart_item_added"
    assert describe_trigger(Trigger(segment_entered="vip")) == "on segment_entered vip"
    chart = mermaid(journey(FORM))
    assert "if caught form_submitted answer = yes" in chart
