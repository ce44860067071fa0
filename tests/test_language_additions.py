"""Four additions the catalog authors asked for, end to end.

1. `if` conditions read events a `wait_for_event` step caught (`{property, event}`).
2. `update.set` values may be Liquid, with date filters (`add_months`) for "due date + 1 month".
3. `cairn validate` refuses contact conditions in event filters (`trigger.where`, ...).
4. A task step's path note shows the rendered title; `cairn graph` words audience removals and
   date_attribute triggers as people say them.

Journeys run on the time-skipping server through the simulator (real router, interpreter and
activities on a throwaway store); activities also run alone against a real SQLite store, where
what they left in it is asserted.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from pydantic import TypeAdapter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from typer.testing import CliRunner

import starter.cli.journeys  # noqa: F401  (registers validate and graph on the app)
from activities import ContactActivities, ProfileActivities
from activities.update import change_source
from cairn.conditions import Condition, ConditionScope, evaluate, parse_condition
from cairn.contact import ContactSnapshot
from cairn.contracts import ConditionRequest, ProfileUpdateRequest, StepContext
from cairn.events.attribute_changes import change_message_id
from cairn.graph import describe_step, describe_trigger, mermaid
from cairn.journey import Journey, ProfileUpdate, Trigger
from cairn.journey_files import validate_paths
from cairn.journey_run import EventMessage
from cairn.store import contacts, events
from cairn.store.db import Store
from cairn.update_values import render_values, set_problems
from starter.cli.app import app
from starter.testing import SimulationReport, Simulator, parse_scenario

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module")
async def simulator(temporal_env: WorkflowEnvironment) -> AsyncIterator[Simulator]:
    async with Simulator.start(temporal_env) as sim:
        yield sim


def journey(steps: str, *, key: str = "additions", trigger: str = "{event: go}") -> Journey:
    data = yaml.safe_load(f"key: {key}\nname: Additions\ntrigger: {trigger}\nsteps:\n{steps}")
    return Journey.model_validate(data)


async def play(sim: Simulator, definition: Journey, *, now: str = "2026-03-02T09:00:00Z",
               events_: list[dict[str, Any]] | None = None,
               contact: dict[str, Any] | None = None, until: str = "+30d") -> SimulationReport:
    scenario = parse_scenario({
        "now": now,
        "contact": {"id": "c-1", "timezone": "Europe/Bucharest", "email": "ana@example.com",
                    "consent": {"marketing": True}, **(contact or {})},
        "events": events_ if events_ is not None else [{"at": "+0s", "event": "go"}],
        "until": until,
    })
    return await sim.run(definition, scenario)


def note(report: SimulationReport, step: str) -> str:
    return next(item.note for item in report.path if item.step == step)


def at(report: SimulationReport, step: str) -> list[str]:
    dumped = report.model_dump(mode="json")["path"]
    return [item["at"] for item in dumped if item["step"] == step]


def condition(data: Any) -> Any:
    return TypeAdapter(Condition).validate_python(parse_condition(data))


# --------------------------------------------------------------------------- 1. caught events


async def test_a_property_condition_reads_the_caught_event_not_the_trigger() -> None:
    answer = condition({"property": "properties.answer", "event": "form_submitted", "eq": "yes"})
    trigger = {"event": "go", "properties": {"answer": "no"}}
    caught = {"form_submitted": {"event": "form_submitted", "properties": {"answer": "yes"}}}

    held = await evaluate(answer, ConditionScope(now=NOW, event=trigger, caught=caught))
    assert held.result and held.reason == "caught form_submitted properties.answer: holds"

    none = await evaluate(answer, ConditionScope(now=NOW, event=trigger))
    assert not none.result
    assert none.reason == "caught form_submitted (none caught) properties.answer: eq 'yes' " \
                          "failed (missing)"
    short = condition({"property": "answer", "event": "form_submitted", "eq": "yes"})
    assert (await evaluate(short, ConditionScope(now=NOW, caught=caught))).result
    # the trigger is still what a plain property condition reads
    plain = condition({"property": "answer", "eq": "yes"})
    assert not (await evaluate(plain, ConditionScope(now=NOW, event=trigger, caught=caught))).result


async def test_the_condition_activity_decides_on_the_caught_event_in_the_request(
    db_url: str,
) -> None:
    store = await Store.open(db_url)
    try:
        async with store.session() as s, s.begin():
            await contacts.create_contact(s, ContactSnapshot(id="c-1"), NOW)
        activities = ContactActivities(store)
        context = StepContext(workflow_id="journey/x/c-1", journey_key="x", contact_id="c-1",
                              step="check", now=NOW)
        rule = condition({"all": [{"property": "answer", "event": "form_submitted", "eq": "yes"},
                                  {"property": "value", "gte": 20}]})
        request = ConditionRequest(
            context=context, condition=rule,
            trigger=EventMessage(message_id="m-1", event="go", contact_id="c-1",
                                 properties={"value": 25}, timestamp=NOW),
            caught_events={"form_submitted": {"event": "form_submitted",
                                              "properties": {"answer": "yes"}}},
        )
        verdict = await ActivityEnvironment().run(activities.evaluate_condition, request)
        assert verdict.result, verdict.reason
        without = request.model_copy(update={"caught_events": {}})
        verdict = await ActivityEnvironment().run(activities.evaluate_condition, without)
        assert not verdict.result and "none caught" in verdict.reason
    finally:
        await store.close()


FORM = """
  ask: {wait_for_event: {event: form_submitted, timeout: 2d}, then: check, timeout_next: check}
  check:
    if: {property: answer, event: form_submitted, eq: "yes"}
    then: said_yes
    else: said_no
  said_yes: {end: said_yes}
  said_no: {end: said_no}
"""


@pytest.mark.parametrize(("answer", "outcome"), [("yes", "ended:said_yes"),
                                                  ("no", "ended:said_no")])
async def test_an_if_branches_on_the_answer_a_wait_caught(
    simulator: Simulator, answer: str, outcome: str,
) -> None:
    report = await play(simulator, journey(FORM), events_=[
        {"at": "+0s", "event": "go", "properties": {"answer": "no"}},  # the trigger says no
        {"at": "+3h", "event": "form_submitted", "properties": {"answer": answer}},
    ])
    assert report.outcome == outcome, report.path
    assert report.steps == ["ask", "check", outcome.removeprefix("ended:")]
    assert at(report, "check") == ["2026-03-02T12:00:00Z"]
    assert note(report, "check").startswith("then" if answer == "yes" else "else")
    assert "caught form_submitted answer" in note(report, "check")


async def test_without_a_caught_answer_the_if_takes_else(simulator: Simulator) -> None:
    report = await play(simulator, journey(FORM), events_=[
        {"at": "+0s", "event": "go", "properties": {"answer": "yes"}},
    ])
    assert report.outcome == "ended:said_no"
    assert at(report, "check") == ["2026-03-04T09:00:00Z"]  # after the 2d timeout
    assert "none caught" in note(report, "check")


# --------------------------------------------------------------------------- 2. Liquid set values


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ contact.due | add_months: 1 }}", "2026-02-28"),
    ("{{ contact.leap | add_months: 1 }}", "2028-02-29"),
    ("{{ contact.due | add_months: -2 }}", "2025-11-30"),
    ("{{ contact.due | add_months: 13 }}", "2027-02-28"),
    ("{{ contact.due | add_days: 1 }}", "2026-02-01"),
    ("{{ contact.due | add_days: -31 }}", "2025-12-31"),
    ("{{ contact.moment | add_months: 1 }}", "2026-02-28T10:30:00Z"),
    ("{{ contact.local | add_days: 2 }}", "2026-02-02T10:30:00+02:00"),
    ("{{ '2028-02-29' | add_years: 1 }}", "2029-02-28"),
    ("{{ contact.missing | add_months: 1 }}", ""),
    ("  {{ contact.due | add_months: '1' }}\n", "2026-02-28"),
    ("Due {{ contact.due | add_months: 1 | date: '%d %b' }}", "Due 28 Feb"),
])
def test_date_filters(template: str, expected: str) -> None:
    scope = {"contact": {"due": "2026-01-31", "leap": "2028-01-31",
                         "moment": "2026-01-31T10:30:00Z",
                         "local": "2026-01-31T10:30:00+02:00"}}
    assert render_values("move", {"value": template}, scope) == {"value": expected}


def test_set_values_render_nested_and_leave_plain_values_alone() -> None:
    scope = {"contact": {"plan": "pro"}, "event": {"properties": {"sku": "mug"}},
             "journey": {"offer": {"code": "CART10"}}, "now": "2026-03-02T09:00:00Z"}
    values = {"count": 3, "flag": True, "text": "no braces", "tier": "{{ contact.plan }}",
              "last": {"sku": "{{ event.properties.sku }}", "codes": ["{{ journey.offer.code }}"]},
              "trial_ends": "{{ now | add_days: 14 }}"}
    assert render_values("mark", values, scope) == {
        "count": 3, "flag": True, "text": "no braces", "tier": "pro",
        "last": {"sku": "mug", "codes": ["CART10"]}, "trial_ends": "2026-03-16T09:00:00Z",
    }


@pytest.mark.parametrize(("template", "message"), [
    ("{{ contact.plan | add_months: 1 }}", "add_months: 'pro' is not an ISO date"),
    ("{{ contact.due | add_months: 'x' }}", "the amount must be a whole number, got 'x'"),
    ("{{ contact.due | add_months: 120000 }}", "leaves the calendar"),
])
def test_date_filters_refuse_what_is_not_a_date(template: str, message: str) -> None:
    from cairn.templates import TemplateRenderError

    with pytest.raises(TemplateRenderError) as raised:
        render_values("move", {"due": template}, {"contact": {"due": "2026-01-31",
                                                              "plan": "pro"}})
    assert str(raised.value).startswith("template 'steps.move', part update.set.due, line 1: ")
    assert message in str(raised.value)


def test_set_templates_are_checked_like_message_templates() -> None:
    assert set_problems("move", {"a": "{{ x | add_months: 1 }}", "b": 5, "c": "plain"}) == []
    assert set_problems("move", {"a": "{{ x | shout }}", "n": {"b": "{% if %}"}}) == [
        ("a", "template 'steps.move', part update.set.a, line 1: unknown filter 'shout' "
              "(date filters: add_days, add_months, add_years)"),
        ("n.b", "template 'steps.move', part update.set.n.b, line 1: Liquid syntax error: "
                "missing expression"),
    ]


async def test_the_profile_activity_moves_the_due_date_once_per_visit(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        async with store.session() as s, s.begin():
            await contacts.create_contact(s, ContactSnapshot.model_validate(
                {"id": "c-1", "attributes": {"emi_due_date": "2026-01-31", "plan": "basic"}}), NOW)
        activities = ProfileActivities(store)
        env = ActivityEnvironment()
        update = ProfileUpdate.model_validate({"set": {
            "emi_due_date": "{{ contact.emi_due_date | add_months: 1 }}",
            "plan": "{{ event.properties.plan }}", "offer": "{{ journey.offer.code }}",
            "paid_count": 1,
        }})

        def visit(iteration: int) -> ProfileUpdateRequest:
            return ProfileUpdateRequest(
                context=StepContext(workflow_id="journey/emi/c-1", journey_key="emi",
                                    contact_id="c-1", step="paid", iteration=iteration, now=NOW),
                update=update,
                trigger=EventMessage(message_id="m-1", event="go", contact_id="c-1",
                                     properties={"plan": "pro"}, timestamp=NOW),
                journey_context={"offer": {"code": "EMI5"}},
            )

        async def attributes() -> dict[str, Any]:
            async with store.session() as s:
                snapshot = await contacts.snapshot(s, "c-1")
            assert snapshot is not None
            return snapshot.attributes

        await env.run(activities.update_profile, visit(1))
        assert await attributes() == {"emi_due_date": "2026-02-28", "plan": "pro",
                                      "offer": "EMI5", "paid_count": 1}
        await env.run(activities.update_profile, visit(1))  # a retry of the same visit
        assert (await attributes())["emi_due_date"] == "2026-02-28"
        async with store.session() as s:
            changed = await events.event_by_message_id(s, change_message_id(
                change_source(visit(1).context), "emi_due_date"))
        assert changed is not None
        assert changed.properties == {"attribute": "emi_due_date", "from": "2026-01-31",
                                      "to": "2026-02-28"}
        await env.run(activities.update_profile, visit(2))  # next month's visit moves it on
        assert (await attributes())["emi_due_date"] == "2026-03-28"

        broken = visit(3).model_copy(update={"update": ProfileUpdate.model_validate(
            {"set": {"emi_due_date": "{{ contact.plan | add_months: 1 }}"}})})
        with pytest.raises(ApplicationError) as raised:
            await env.run(activities.update_profile, broken)
        assert raised.value.type == "TemplateError" and raised.value.non_retryable
        assert "update.set.emi_due_date" in str(raised.value)
        assert (await attributes())["emi_due_date"] == "2026-03-28"
    finally:
        await store.close()


EMI = """
  due: {wait_until: {attribute: emi_due_date, time: "10:00"}, next: paid, missing: end}
  paid:
    update: {set: {emi_due_date: "{{ contact.emi_due_date | add_months: 1 }}"}}
    next: due
"""


async def test_an_emi_loop_moves_the_due_date_one_calendar_month_each_time(
    simulator: Simulator,
) -> None:
    """31 January, then 28 February (the month is shorter), then 28 March: at 10:00 Bucharest
    time, 08:00Z in winter and 07:00Z once summer time starts on 29 March."""
    report = await play(simulator, journey(EMI, key="emi-loop"), now="2026-01-20T09:00:00Z",
                        contact={"attributes": {"emi_due_date": "2026-01-31"}}, until="+80d")
    assert report.outcome == "waiting"
    assert at(report, "paid") == ["2026-01-31T08:00:00Z", "2026-02-28T08:00:00Z",
                                  "2026-03-28T08:00:00Z"]
    assert note(report, "paid") == "set emi_due_date"


# --------------------------------------------------------------------------- 3. filters


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "welcome.yaml"
    path.write_text(textwrap.dedent(text))
    return [str(p) for p in validate_paths([path])]


TRIGGER_ADVICE = ("conditions cannot work here: the trigger filter sees only the event (its name, "
                  "properties and timestamp), not the contact; move it into an `if` step at the "
                  "start of the journey")


def test_validate_refuses_contact_conditions_in_the_trigger_filter(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    problems = _problems(tmp_path, """\
        key: welcome
        name: Welcome
        trigger:
          event: signed_up
          where:
            all:
              - {properties.plan: pro}
              - {score: global, gte: 40}
              - {any: [{attribute: country, eq: RO}, {in_segment: vip}]}
              - {not: {has_done: {event: purchase}}}
              - {reachable: email}
        steps:
          hello: {score: {add: 1}, next: end}
        """)
    assert problems == [
        f"{file}: trigger.where.all[1].score: `score` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[2].any[0].attribute: `attribute` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[2].any[1].in_segment: `in_segment` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[3].not.has_done: `has_done` {TRIGGER_ADVICE}",
        f"{file}: trigger.where.all[4].reachable: `reachable` {TRIGGER_ADVICE}",
    ]


def test_validate_refuses_them_in_other_event_filters_too(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    problems = _problems(tmp_path, """\
        key: welcome
        name: Welcome
        trigger: {event: signed_up, where: {score: global, gte: 1}}
        exit: [{event: left, where: {attribute: plan, eq: pro}, goal: left}]
        steps:
          ask:
            wait_for_event: {event: answered, where: {property: answer, event: answered, eq: 1},
                             timeout: 1d}
            then: check
            timeout_next: end
          check:
            if: {has_done: {event: purchase, where: {in_segment: vip}}}
            then: end
            else: end
        """)
    assert problems == [
        f"{file}: trigger.where.score: `score` {TRIGGER_ADVICE}",
        f"{file}: exit[0].where.attribute: `attribute` conditions cannot work here: an exit "
        "goal's filter sees only the event as it arrives, not the contact; test the contact in "
        "an `if` step instead",
        f"{file}: steps.ask.wait_for_event.where.event: `event:` reads an event caught by a "
        "wait_for_event step and works only in `if` steps; a filter reads the event it filters, "
        "so remove `event:` here",
        f"{file}: steps.check.if.has_done.where.in_segment: `in_segment` conditions cannot work "
        "here: has_done's `where` sees only each stored event, not the contact; put the "
        "contact's conditions beside the has_done in an `all`",
    ]


def test_validate_wants_a_wait_that_catches_the_event_an_if_reads(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    problems = _problems(tmp_path, """\
        key: welcome
        name: Welcome
        trigger: {event: signed_up}
        steps:
          ask: {wait_for_event: {event: form_submitted, timeout: 1d}, then: check,
                timeout_next: end}
          check:
            if: {all: [{property: answer, event: form_sumbitted, eq: "yes"},
                       {property: answer, event: form_submitted, eq: "yes"}]}
            then: end
            else: end
        """)
    assert problems == [
        f"{file}: steps.check.if.all[0].event: no wait_for_event step of this journey catches "
        "'form_sumbitted' (its waits catch: form_submitted)",
    ]


def test_validate_checks_liquid_in_update_set_values(tmp_path: Path) -> None:
    file = tmp_path / "welcome.yaml"
    text = """\
        key: welcome
        name: Welcome
        trigger: {event: signed_up}
        steps:
          move:
            update: {set: {emi_due_date: "{{ contact.emi_due_date | add_month: 1 }}",
                           plan: "{{ event.properties.plan }}"}}
            next: end
        """
    assert _problems(tmp_path, text) == [
        f"{file}: steps.move.update.set.emi_due_date: template 'steps.move', part "
        "update.set.emi_due_date, line 1: unknown filter 'add_month' (date filters: add_days, "
        "add_months, add_years)",
    ]
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 1
    assert "steps.move.update.set.emi_due_date" in result.output
    assert _problems(tmp_path, text.replace("add_month:", "add_months:")) == []


def test_the_catalog_still_validates() -> None:
    assert validate_paths([Path(__file__).resolve().parents[1] / "journeys"]) == []


# --------------------------------------------------------------------------- 4. notes and graph


async def test_a_task_note_shows_the_rendered_title(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  call:
    task: {queue: sales-calls, title: "Call {{ contact.id }} about {{ event.properties.sku }}"}
    next: end
"""), events_=[{"at": "+0s", "event": "go", "properties": {"sku": "mug-01"}}])
    assert [t.title for t in report.tasks] == ["Call c-1 about mug-01"]
    assert note(report, "call").endswith("in sales-calls: Call c-1 about mug-01")
    assert "{{" not in note(report, "call")


def test_graph_says_remove_from_an_audience() -> None:
    steps = journey("""
  join: {audience: {sync: facebook, audience: buyers}, next: leave}
  leave: {audience: {sync: google, audience: buyers, action: remove}, next: end}
""")
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
    chart = mermaid(journey("  hello: {score: {add: 1}, next: end}\n",
                            trigger=yaml.safe_dump({"date_attribute": spec},
                                                   default_flow_style=True).strip()))
    assert f'  trigger>"{label}"]' in chart.splitlines()


def test_graph_keeps_other_triggers_and_names_caught_events() -> None:
    assert describe_trigger(Trigger(event="cart_item_added")) == "on event cart_item_added"
    assert describe_trigger(Trigger(segment_entered="vip")) == "on segment_entered vip"
    chart = mermaid(journey(FORM))
    assert "if caught form_submitted answer = yes" in chart
