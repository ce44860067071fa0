"""Every step kind on the time-skipping server: the path taken, and when, with real activities.

Each test writes a small journey, plays a scenario through the simulator (real router, real
interpreter, real activities on a throwaway SQLite store) and asserts the path, the times and what
was recorded in the ledger.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from cairn.journey import Journey
from starter.testing import SimulationReport, Simulator, parse_scenario
from workflows.steps.deciding import bucket

NOW = "2026-03-02T09:00:00Z"  # a Monday; Bucharest is UTC+2 until 2026-03-29

CONTACT: dict[str, Any] = {
    "id": "c-1",
    "timezone": "Europe/Bucharest",
    "email": "ana@example.com",
    "phone": "+40722000000",
    "consent": {"marketing": True},
}

TEMPLATES = {
    "hello": {
        "email": {"subject": "Hi {{ contact.first_name | default: 'there' }}", "body": "Hello"},
        "sms": {"body": "Hello"},
        "push": {"title": "Hi", "body": "Hello"},
    },
    "alert": {"slack": {"body": "Contact {{ contact.id }} needs a call"}},
}


def journey(steps: str, *, key: str = "step-test", extra: str = "") -> Journey:
    text = f"key: {key}\nname: Step test\ntrigger: {{event: go}}\n{extra}\nsteps:\n{steps}"
    data = yaml.safe_load(text)
    data["templates"] = TEMPLATES
    return Journey.model_validate(data)


async def play(
    sim: Simulator,
    definition: Journey,
    *,
    events: list[dict[str, Any]] | None = None,
    contact: dict[str, Any] | None = None,
    now: str = NOW,
    until: str = "+30d",
    keep_histories: bool = False,
) -> SimulationReport:
    scenario = parse_scenario(
        {
            "now": now,
            "contact": {**CONTACT, **(contact or {})},
            "events": events if events is not None else [{"at": "+0s", "event": "go"}],
            "until": until,
        }
    )
    return await sim.run(definition, scenario, keep_histories=keep_histories)


def at(report: SimulationReport, step: str) -> str:
    return next(i["at"] for i in report.model_dump(mode="json")["path"] if i["step"] == step)


def note(report: SimulationReport, step: str) -> str:
    return next(item.note for item in report.path if item.step == step)



def visits(report: SimulationReport, step: str) -> list[str]:
    """Every moment the run was at `step`, in order."""
    return [i["at"] for i in report.model_dump(mode="json")["path"] if i["step"] == step]

# --------------------------------------------------------------------------- waits


async def test_wait_sleeps_the_duration(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  pause: {wait: 2h, next: hello}
  hello: {send: {channel: email, template: hello}, next: end}
"""))
    assert report.outcome == "completed"
    assert report.steps == ["pause", "hello"]
    assert at(report, "pause") == "2026-03-02T09:00:00Z"
    assert at(report, "hello") == "2026-03-02T11:00:00Z"
    sends = report.model_dump(mode="json")["sends"]
    assert [(s["at"], s["channel"], s["status"]) for s in sends] == [
        ("2026-03-02T11:00:00Z", "email", "sent")
    ]


async def test_unfinished_journey_reports_waiting(simulator: Simulator) -> None:
    report = await play(simulator, journey("  pause: {wait: 60d, next: end}\n"), until="+1d")
    assert report.outcome == "waiting"
    assert report.steps == ["pause"]


async def test_wait_until_an_absolute_moment(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  later: {wait_until: {at: "2026-03-05T10:00:00Z"}, next: bump}
  bump: {score: {add: 5}, next: end}
"""))
    assert at(report, "bump") == "2026-03-05T10:00:00Z"
    assert [(s.dimension, s.add, s.total) for s in report.scores] == [("global", 5, 5)]


async def test_wait_until_a_date_attribute_across_daylight_saving(simulator: Simulator) -> None:
    """10:00 in Bucharest is 08:00Z before 2026-03-29 and 07:00Z after it."""
    report = await play(
        simulator,
        journey("""
  d12: {wait_until: {attribute: emi_due_date, offset: -12d, time: "10:00"}, next: first}
  first: {score: {add: 1}, next: d10}
  d10: {wait_until: {attribute: emi_due_date, offset: -10d, time: "10:00"}, next: second}
  second: {score: {add: 1}, next: end}
"""),
        contact={"attributes": {"emi_due_date": "2026-04-08"}},
    )
    assert report.outcome == "completed"
    assert at(report, "first") == "2026-03-27T08:00:00Z"
    assert at(report, "second") == "2026-03-29T07:00:00Z"


async def test_wait_until_without_the_attribute_takes_missing(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  due: {wait_until: {attribute: emi_due_date, offset: -10d, time: "10:00"}, next: end,
        missing: no_date}
  no_date: {end: no_due_date}
"""))
    assert report.outcome == "ended:no_due_date"
    assert "emi_due_date missing" in note(report, "due")
    assert at(report, "no_date") == "2026-03-02T09:00:00Z"


async def test_wait_for_window_in_the_contacts_time_zone(simulator: Simulator) -> None:
    """Triggered on Saturday 2026-03-07 at 20:00 local: the weekday window opens Monday 09:00."""
    report = await play(
        simulator,
        journey("""
  office_hours: {wait_for_window: {days: [mon, tue, wed, thu, fri], from: "09:00", to: "17:00"},
                 next: hello}
  hello: {send: {channel: sms, template: hello}, next: end}
"""),
        now="2026-03-07T18:00:00Z",
    )
    assert at(report, "hello") == "2026-03-09T07:00:00Z"
    assert [s.channel for s in report.sends] == ["sms"]


async def test_wait_for_window_inside_goes_on_at_once(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  office_hours: {wait_for_window: {from: "09:00", to: "17:00"}, next: bump}
  bump: {score: {add: 1}, next: end}
"""))  # 11:00 local on a Monday
    assert at(report, "bump") == "2026-03-02T09:00:00Z"


WAIT_FOR_PAYMENT = """
  pay: {wait_for_event: {event: paid, where: {properties.amount: {gte: 10}}, timeout: 1d},
        then: thanks, timeout_next: remind}
  thanks: {score: {add: 10}, next: end}
  remind: {send: {channel: email, template: hello}, next: end}
"""


async def test_wait_for_event_arrives_in_time(simulator: Simulator) -> None:
    report = await play(
        simulator,
        journey(WAIT_FOR_PAYMENT, extra="entry: {reentry: after_exit}"),
        events=[
            {"at": "+0s", "event": "go"},
            {"at": "+1h", "event": "paid", "properties": {"amount": 5}},
            {"at": "+3h", "event": "paid", "properties": {"amount": 50}},
        ],
    )
    assert report.steps == ["pay", "thanks"]
    assert at(report, "thanks") == "2026-03-02T12:00:00Z"  # the small payment did not count
    assert report.sends == []


async def test_wait_for_event_times_out(simulator: Simulator) -> None:
    report = await play(simulator, journey(WAIT_FOR_PAYMENT))
    assert report.steps == ["pay", "remind"]
    assert at(report, "remind") == "2026-03-03T09:00:00Z"
    assert "timeout" in note(report, "pay")


async def test_wait_for_event_since_entry_sees_earlier_events(simulator: Simulator) -> None:
    definition = journey("""
  pause: {wait: 1h, next: pay}
  pay: {wait_for_event: {event: paid, timeout: 1d, since: entry}, then: thanks,
        timeout_next: end}
  thanks: {score: {add: 1}, next: end}
""")
    report = await play(
        simulator, definition,
        events=[{"at": "+0s", "event": "go"}, {"at": "+30m", "event": "paid"}],
    )
    assert report.steps == ["pause", "pay", "thanks"]
    assert at(report, "thanks") == "2026-03-02T10:00:00Z"

    step_only = journey(
        "  pause: {wait: 1h, next: pay}\n"
        "  pay: {wait_for_event: {event: paid, timeout: 1d}, then: thanks, timeout_next: end}\n"
        "  thanks: {score: {add: 1}, next: end}\n",
        key="step-test-since-step",
    )
    report = await play(
        simulator, step_only,
        events=[{"at": "+0s", "event": "go"}, {"at": "+30m", "event": "paid"}],
    )
    assert report.steps == ["pause", "pay"]  # the early payment is not seen: timeout
    assert report.outcome == "completed"


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("condition", "contact", "branch"),
    [
        ({"attribute": "cart.items", "gt": 0}, {"attributes": {"cart": {"items": 2}}}, "hit"),
        ({"attribute": "cart.items", "gt": 0}, {"attributes": {"cart": {"items": 0}}}, "miss"),
        ({"score": "global", "gte": 40}, {"scores": {"global": 45}}, "hit"),
        ({"score": "sales", "gte": 40}, {"scores": {"global": 45}}, "miss"),
        ({"in_segment": "buyers"}, {"segments": ["buyers"]}, "hit"),
        ({"in_segment": "buyers"}, {}, "miss"),
        ({"reachable": "push"}, {"push_tokens": ["tok-1"]}, "hit"),
        ({"reachable": "push"}, {}, "miss"),
        ({"reachable": "email"}, {"consent": {"marketing": False}}, "miss"),
        ({"property": "value", "gte": 20}, {}, "hit"),
        ({"all": [{"reachable": "email"}, {"not": {"in_segment": "vip"}}]}, {}, "hit"),
        ({"any": [{"in_segment": "vip"}, {"score": "global", "gt": 100}]}, {}, "miss"),
    ],
)
async def test_if_decides_on_fresh_contact_data(
    simulator: Simulator, condition: dict[str, Any], contact: dict[str, Any], branch: str
) -> None:
    rule = yaml.safe_dump(condition, default_flow_style=True).strip()
    definition = journey(
        f"  check: {{if: {rule}, then: hit, else: miss}}\n"
        "  hit: {end: hit}\n  miss: {end: miss}\n"
    )
    report = await play(
        simulator, definition, contact=contact,
        events=[{"at": "+0s", "event": "go", "properties": {"value": 25}}],
    )
    assert report.outcome == f"ended:{branch}", note(report, "check")
    assert note(report, "check").startswith("then" if branch == "hit" else "else")


async def test_has_done_counts_events_in_the_window(simulator: Simulator) -> None:
    definition = journey("""
  pause: {wait: 1h, next: check}
  check: {if: {has_done: {event: whitepaper_downloaded, within: 7d, count: {gte: 2}}},
          then: call, else: end}
  call: {task: {queue: sales-calls, title: "Call {{ contact.id }}", due: 1d}, next: end}
""")
    events = [
        {"at": "+0s", "event": "go"},
        {"at": "+10m", "event": "whitepaper_downloaded"},
        {"at": "+20m", "event": "whitepaper_downloaded"},
    ]
    report = await play(simulator, definition, events=events)
    assert report.steps == ["pause", "check", "call"]
    assert "2x" in note(report, "check")
    assert [(t.queue, t.title) for t in report.tasks] == [("sales-calls", "Call c-1")]
    assert report.model_dump(mode="json")["tasks"][0]["due"] == "2026-03-03T10:00:00Z"

    report = await play(simulator, definition, events=events[:2])
    assert report.steps == ["pause", "check"]
    assert report.tasks == []


def _contact_in_bucket(low: float, high: float, key: str, step: str) -> str:
    for n in range(10_000):
        candidate = f"c-{n}"
        if low <= bucket(key, step, candidate) < high:
            return candidate
    raise AssertionError("no contact id falls in the bucket")


async def test_split_is_deterministic_and_counts_the_holdout(simulator: Simulator) -> None:
    definition = journey("""
  ab: {split: {holdout: 10, paths: [{percent: 45, next: a, name: A}, {percent: 45, next: b}]}}
  a: {end: a}
  b: {end: b}
""", key="split-test")
    held = _contact_in_bucket(0, 10, "split-test", "ab")
    in_a = _contact_in_bucket(10, 55, "split-test", "ab")
    in_b = _contact_in_bucket(55, 100, "split-test", "ab")
    assert (await play(simulator, definition, contact={"id": held})).outcome == "ended:holdout"
    first = await play(simulator, definition, contact={"id": in_a})
    again = await play(simulator, definition, contact={"id": in_a})
    assert first.outcome == again.outcome == "ended:a"
    assert note(first, "ab").startswith("A (45%")
    assert (await play(simulator, definition, contact={"id": in_b})).outcome == "ended:b"


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
    report = await play(simulator, journey(FORM), events=[
        {"at": "+0s", "event": "go", "properties": {"answer": "no"}},  # the trigger says no
        {"at": "+3h", "event": "form_submitted", "properties": {"answer": answer}},
    ])
    assert report.outcome == outcome, report.path
    assert report.steps == ["ask", "check", outcome.removeprefix("ended:")]
    assert visits(report, "check") == ["2026-03-02T12:00:00Z"]
    assert note(report, "check").startswith("then" if answer == "yes" else "else")
    assert "caught form_submitted answer" in note(report, "check")


async def test_without_a_caught_answer_the_if_takes_else(simulator: Simulator) -> None:
    report = await play(simulator, journey(FORM), events=[
        {"at": "+0s", "event": "go", "properties": {"answer": "yes"}},
    ])
    assert report.outcome == "ended:said_no"
    assert visits(report, "check") == ["2026-03-04T09:00:00Z"]  # after the 2d timeout
    assert "none caught" in note(report, "check")


# --------------------------------------------------------------------------- actions


async def test_send_waits_for_the_end_of_quiet_hours(simulator: Simulator) -> None:
    """Triggered at 22:00 in Bucharest; quiet until 08:00 local = 06:00Z."""
    report = await play(
        simulator,
        journey(
            "  hello: {send: {channel: email, template: hello}, next: end}\n",
            extra='settings: {quiet_hours: {from: "21:00", to: "08:00"}}',
        ),
        now="2026-03-02T20:00:00Z",
    )
    assert report.outcome == "completed"
    assert "deferred:quiet_hours" in note(report, "hello") or report.sends[0].status == "sent"
    assert report.model_dump(mode="json")["sends"][0]["at"] == "2026-03-03T06:00:00Z"


async def test_transactional_sends_ignore_quiet_hours(simulator: Simulator) -> None:
    report = await play(
        simulator,
        journey(
            "  hello: {send: {channel: email, template: hello, category: transactional},"
            " next: end}\n",
            extra='settings: {quiet_hours: {from: "21:00", to: "08:00"}}',
        ),
        now="2026-03-02T20:00:00Z",
        contact={"consent": {}},
    )
    assert report.model_dump(mode="json")["sends"][0]["at"] == "2026-03-02T20:00:00Z"
    assert report.sends[0].status == "sent"


async def test_send_without_consent_is_skipped(simulator: Simulator) -> None:
    report = await play(
        simulator,
        journey("  hello: {send: {channel: email, template: hello}, next: bump}\n"
                "  bump: {score: {add: 1}, next: end}\n"),
        contact={"consent": {"marketing": False}},
    )
    assert report.steps == ["hello", "bump"]
    assert [s.status for s in report.sends] == ["skipped:consent"]


async def test_send_falls_back_to_the_first_reachable_channel(simulator: Simulator) -> None:
    report = await play(
        simulator,
        journey("  hello: {send: {channels: [push, sms, email], template: hello}, next: end}\n"),
    )
    assert [(s.channel, s.status) for s in report.sends] == [("sms", "sent")]


async def test_score_update_and_a_decision_on_the_new_profile(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  bump: {score: {dimension: sales, add: 15, reason: asked for a demo}, next: mark}
  mark: {update: {set: {plan: pro, stage.name: lead}, add_tags: [demo]}, next: check}
  check: {if: {all: [{attribute: plan, eq: pro}, {score: sales, gte: 15}]},
          then: end, else: fail}
  fail: {end: stale_profile}
"""))
    assert report.outcome == "completed"
    assert [(s.dimension, s.add, s.total) for s in report.scores] == [("sales", 15, 15)]


async def test_recorded_actions_land_in_the_ledger(simulator: Simulator) -> None:
    report = await play(simulator, journey("""
  call_api: {webhook: {url: "https://crm.example/hooks/lead", body: '{"id": "{{ contact.id }}"}'},
             next: alert}
  alert: {notify: {to: slack, template: alert}, next: sync}
  sync: {audience: {sync: facebook, audience: warm-leads}, next: hand_off}
  hand_off: {start_journey: {journey: onboarding}, next: end}
"""))
    assert report.outcome == "completed"
    dumped = report.model_dump(mode="json")
    assert [w["url"] for w in dumped["webhooks"]] == ["https://crm.example/hooks/lead"]
    assert [(a["to"], a["template"]) for a in dumped["alerts"]] == [("slack", "alert")]
    assert [(a["sync"], a["audience"], a["action"]) for a in dumped["audiences"]] == [
        ("facebook", "warm-leads", "add")
    ]
    assert "onboarding" in note(report, "hand_off")


async def test_end_with_an_outcome(simulator: Simulator) -> None:
    report = await play(simulator, journey("  done: {end: {outcome: opted_out}}\n"))
    assert report.outcome == "ended:opted_out"


async def test_a_task_is_rendered_in_the_store_and_named_by_number_in_the_path(
    simulator: Simulator,
) -> None:
    """The rendered title names the contact: it stays in the store, out of the run's history."""
    report = await play(simulator, journey("""
  call:
    task: {queue: sales-calls, title: "Call {{ contact.id }} about {{ event.properties.sku }}"}
    next: end
"""), events=[{"at": "+0s", "event": "go", "properties": {"sku": "mug-01"}}])
    assert [t.title for t in report.tasks] == ["Call c-1 about mug-01"]
    assert re.fullmatch(r"task #\d+ in sales-calls", note(report, "call"))


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
    assert visits(report, "paid") == ["2026-01-31T08:00:00Z", "2026-02-28T08:00:00Z",
                                      "2026-03-28T08:00:00Z"]
    assert note(report, "paid") == "set emi_due_date"


# --------------------------------------------------------------------------- goals and loops


async def test_exit_goal_interrupts_a_wait_at_once(simulator: Simulator) -> None:
    report = await play(
        simulator,
        journey(
            "  pause: {wait: 2h, next: hello}\n"
            "  hello: {send: {channel: email, template: hello}, next: end}\n",
            extra="exit: [{event: checkout_completed, goal: converted}]",
        ),
        events=[{"at": "+0s", "event": "go"}, {"at": "+1h", "event": "checkout_completed"}],
    )
    assert report.outcome == "converted"
    assert report.steps == ["pause"]
    assert report.sends == []


async def test_five_year_monthly_loop_keeps_each_run_small(simulator: Simulator) -> None:
    report = await play(
        simulator,
        journey("""
  month: {wait: 30d, next: remind}
  remind: {send: {channel: email, template: hello, category: transactional}, next: month}
""", key="monthly-loop"),
        until="+1826d",
        keep_histories=True,
    )
    assert report.outcome == "waiting"
    assert len(report.sends) == 60
    sends = report.model_dump(mode="json")["sends"]
    first, last = sends[0], sends[-1]
    assert first["at"] == "2026-04-01T09:00:00Z"
    sixtieth = datetime(2026, 3, 2, 9, tzinfo=UTC) + timedelta(days=60 * 30)
    assert last["at"] == sixtieth.strftime("%Y-%m-%dT%H:%M:%SZ")  # no drift after five years
    runs = next(iter(report.histories.values()))
    assert len(runs) >= 60
    assert max(len(run.events) for run in runs) < 60
