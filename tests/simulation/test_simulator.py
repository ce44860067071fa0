"""The simulator: scenarios load with clear errors, and the cart-abandonment journey plays out.

Simulations run on the session's time-skipping server with the real interpreter, activities,
ingest and router; `cairn simulate --json` is checked as a subprocess (its exit code, and that
stdout is one JSON object).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cairn.journey import Journey
from starter.cli.main import app  # the app with every command module registered
from starter.testing import (
    Scenario,
    ScenarioError,
    SimulationError,
    SimulationReport,
    Simulator,
    as_journey,
    load_scenario,
    parse_scenario,
    simulate,
)

ROOT = Path(__file__).resolve().parents[2]
CART = ROOT / "journeys" / "cart-abandonment.yaml"
NOW = "2026-03-02T09:00:00Z"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CONTACT: dict[str, Any] = {
    "id": "c-1",
    "timezone": "Europe/Bucharest",
    "email": "ana@example.com",
    "push_tokens": ["tok-1"],
    "consent": {"marketing": True},
    "attributes": {"first_name": "Ana", "cart": {"items": 2}},
}


def cart_scenario(*events: dict[str, Any], until: str = "+1d", **contact: Any) -> dict[str, Any]:
    return {"now": NOW, "contact": {**CONTACT, **contact}, "events": list(events),
            "until": until}


ADDED = {"at": "+0s", "event": "cart_item_added", "properties": {"value": 25, "name": "Mug"}}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------- scenarios


def test_offsets_and_absolute_times_resolve_against_now() -> None:
    scenario = parse_scenario({
        "now": NOW,
        "contact": {"id": "c-1"},
        "events": [
            {"at": "+3h", "event": "late"},
            {"at": "2026-03-02T10:00:00+01:00", "event": "absolute"},
            {"at": "+1h30m", "type": "identify", "traits": {"plan": "pro"}},
        ],
        "until": "2026-03-09T09:00:00Z",
    })
    timeline = [(moment, message_id, event.label) for moment, message_id, event in
                scenario.timeline()]
    assert timeline == [
        (START, "sim-002", "absolute"),
        (START + timedelta(minutes=90), "sim-003", "identify"),
        (START + timedelta(hours=3), "sim-001", "late"),
    ]
    assert scenario.stop_at == START + timedelta(days=7)


def test_until_defaults_to_thirty_days() -> None:
    scenario = parse_scenario({"now": NOW, "contact": {"id": "c-1"}})
    assert scenario.stop_at == START + timedelta(days=30)
    assert scenario.events == []


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"now": "2026-03-02T09:00:00"}, "now", "timezone"),
        ({"events": [{"at": "+1h"}]}, "events[0]", "needs `event`"),
        ({"events": [{"at": "-1h", "event": "x"}]}, "events[0].at", "before `now`"),
        ({"events": [{"at": "soon", "event": "x"}]}, "events[0].at", "neither an offset"),
        ({"events": [{"at": "+40d", "event": "x"}]}, "(top level)", "after until"),
        ({"events": [{"event": "x", "colour": "red"}]}, "events[0].colour", "not permitted"),
        ({"events": [{"type": "identify", "properties": {"a": 1}}]}, "events[0]", "traits"),
        ({"contact": {"id": "c-1", "timezone": "Europe/Bucuresti"}}, "contact.timezone",
         "unknown time zone"),
        ({"contact": {"email": "a@example.com"}}, "contact.id", "required"),
        ({"until": "+1x"}, "until", "bad duration"),
    ],
)
def test_bad_scenarios_name_the_field(change: dict[str, Any], field: str, words: str) -> None:
    data = {"now": NOW, "contact": {"id": "c-1"}, "events": [], **change}
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, source="s.yaml")
    problems = caught.value.problems
    assert any(p.startswith(f"{field}:") and words in p for p in problems), problems
    assert str(caught.value).startswith("s.yaml: ")


def test_scenario_files_yaml_json_and_broken(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"now: {NOW}\ncontact: {{id: c-1}}\nevents:\n  - {{at: +2h, event: x}}\n")
    assert load_scenario(good).timeline()[0][0] == START + timedelta(hours=2)

    as_json = tmp_path / "good.json"
    as_json.write_text(json.dumps({"now": NOW, "contact": {"id": "c-1"}}))
    assert load_scenario(as_json).contact.id == "c-1"

    broken = tmp_path / "broken.yaml"
    broken.write_text("now: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken.yaml: line \d+: bad YAML"):
        load_scenario(broken)

    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "missing.yaml")

    listed = tmp_path / "list.yaml"
    listed.write_text("- now\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(listed)


def test_report_json_has_exactly_the_design_keys() -> None:
    report = SimulationReport.model_validate({
        "journey": "j", "version": 1, "contact": "c-1", "outcome": "completed",
        "path": [{"step": "a", "at": datetime(2026, 3, 2, 11, 0, 0, 250_000, tzinfo=UTC),
                  "note": "sleep 2h"}],
        "sends": [{"at": "2026-03-02T13:00:00+02:00", "step": "a", "channel": "push",
                   "template": "t", "status": "sent"}],
    })
    data = json.loads(report.to_json())
    assert list(data) == ["journey", "version", "contact", "outcome", "path", "sends", "clicks",
                          "scores", "tasks", "alerts", "webhooks", "audiences"]
    assert data["path"] == [{"step": "a", "at": "2026-03-02T11:00:00Z", "note": "sleep 2h"}]
    assert data["sends"][0]["at"] == "2026-03-02T11:00:00Z"


# --------------------------------------------------------------------------- simulations


@pytest.fixture(scope="module")
def cart() -> Journey:
    return as_journey(CART)


async def test_converted_before_the_push(simulator: Simulator, cart: Journey) -> None:
    scenario = cart_scenario(ADDED, {"at": "+1h", "event": "checkout_completed"})
    report = await simulate(cart, scenario, simulator=simulator)
    assert report.outcome == "converted"
    assert report.sends == []
    assert report.steps == ["wait_2h"]
    assert START <= report.path[0].at < START + timedelta(minutes=1)
    assert (report.journey, report.version, report.contact) == ("cart-abandonment", 1, "c-1")


async def test_not_converted_gets_push_then_email(simulator: Simulator, cart: Journey) -> None:
    report = await simulator.run(cart, parse_scenario(cart_scenario(ADDED)))
    assert report.outcome == "completed"
    assert report.steps == ["wait_2h", "still_in_cart", "push_or_email", "push_reminder",
                            "email_reminder"]
    assert [(s.step, s.channel, s.template, s.status) for s in report.sends] == [
        ("push_reminder", "push", "cart-reminder", "sent"),
        ("email_reminder", "email", "cart-reminder-similar", "sent"),
    ]
    push, email = report.sends
    two_hours = START + timedelta(hours=2)
    # Real processing time (milliseconds) runs on the simulated clock too.
    assert two_hours <= push.at < two_hours + timedelta(minutes=1)
    assert push.at <= email.at < push.at + timedelta(minutes=1)


async def test_an_identify_call_changes_what_the_journey_sees(simulator: Simulator,
                                                             cart: Journey) -> None:
    emptied = {"at": "+1h", "type": "identify", "traits": {"cart": {"items": 0}}}
    report = await simulator.run(cart, parse_scenario(cart_scenario(ADDED, emptied)))
    assert report.outcome == "completed"
    assert report.steps == ["wait_2h", "still_in_cart"]
    assert report.path[-1].note.startswith("else")
    assert report.sends == []


async def test_without_push_token_only_the_email_goes(simulator: Simulator,
                                                      cart: Journey) -> None:
    report = await simulator.run(cart, parse_scenario(cart_scenario(ADDED, push_tokens=[])))
    assert report.outcome == "completed"
    assert report.steps == ["wait_2h", "still_in_cart", "push_or_email", "email_reminder"]
    assert [(s.channel, s.status) for s in report.sends] == [("email", "sent")]


async def test_quiet_hours_hold_the_push_until_morning(simulator: Simulator,
                                                      cart: Journey) -> None:
    evening = {**cart_scenario(ADDED, until="+3h"), "now": "2026-03-02T17:30:00Z"}
    held = await simulator.run(cart, parse_scenario(evening))
    assert held.outcome == "waiting"
    assert held.steps[-1] == "push_reminder"
    (push,) = held.sends
    assert (push.step, push.channel, push.status) == ("push_reminder", "push",
                                                      "deferred:quiet_hours")
    assert "2026-03-03T06:00:00" in push.reason  # 08:00 in Bucharest

    released = await simulator.run(cart, parse_scenario({**evening, "until": "+1d"}))
    assert released.outcome == "completed"
    morning = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    assert [(s.channel, s.status) for s in released.sends] == [("push", "sent"),
                                                               ("email", "sent")]
    assert all(morning <= s.at < morning + timedelta(minutes=1) for s in released.sends)


async def test_an_event_that_is_not_the_trigger_does_not_enter(simulator: Simulator,
                                                               cart: Journey) -> None:
    scenario = cart_scenario({"at": "+0s", "event": "page_viewed"},
                             {"at": "+1h", "event": "checkout_completed"})
    report = await simulator.run(cart, parse_scenario(scenario))
    assert report.outcome == "not_entered"
    assert report.sends == []
    assert [p.step for p in report.path] == ["trigger"]
    assert "cart_item_added" in report.path[0].note
    assert "page_viewed" in report.path[0].note


async def test_a_trigger_refused_by_its_filter_says_why(simulator: Simulator,
                                                        cart: Journey) -> None:
    small = {"at": "+5m", "event": "cart_item_added", "properties": {"value": 10}}
    report = await simulator.run(cart, parse_scenario(cart_scenario(small)))
    assert report.outcome == "not_entered"
    assert len(report.path) == 1
    refusal = report.path[0]
    assert refusal.at == START + timedelta(minutes=5)
    assert refusal.note.startswith("not entered: trigger.where")


async def test_a_second_entry_sends_again(simulator: Simulator, cart: Journey) -> None:
    again = {"at": "+2d", "event": "cart_item_added", "properties": {"value": 30}}
    report = await simulator.run(cart, parse_scenario(cart_scenario(ADDED, again, until="+3d")))
    assert report.outcome == "completed"
    assert report.steps == ["wait_2h", "still_in_cart", "push_or_email", "push_reminder",
                            "email_reminder"] * 2
    assert report.path[5].at >= START + timedelta(days=2)
    assert [(s.channel, s.at.date().isoformat()) for s in report.sends] == [
        ("push", "2026-03-02"), ("email", "2026-03-02"),
        ("push", "2026-03-04"), ("email", "2026-03-04"),
    ]


async def test_a_run_still_waiting_when_the_clock_stops(
    simulator: Simulator, cart: Journey, temporal_env: WorkflowEnvironment
) -> None:
    report = await simulator.run(cart, parse_scenario(cart_scenario(ADDED, until="+1h")))
    assert report.outcome == "waiting"
    assert report.steps == ["wait_2h"]
    assert report.sends == []
    # The run is not left behind: an open run without its worker would stop the shared clock.
    described = await temporal_env.client.get_workflow_handle(
        "journey/cart-abandonment/c-1").describe()
    assert described.status == WorkflowExecutionStatus.TERMINATED


async def test_the_same_scenario_gives_the_same_report(simulator: Simulator,
                                                       cart: Journey) -> None:
    scenario = parse_scenario(cart_scenario(ADDED, {"at": "+3h", "event": "checkout_completed"}))
    first = await simulator.run(cart, scenario)
    second = await simulator.run(cart, scenario)
    assert first.model_dump(mode="json") == second.model_dump(mode="json")
    assert first.outcome == "completed"  # both reminders went before the checkout at +3h


async def test_a_clock_held_by_a_run_without_worker_is_reported(cart: Journey) -> None:
    """On a server of its own: a run nobody works on stops time skipping for everyone."""
    scenario = parse_scenario(cart_scenario(ADDED))
    async with Simulator.start(step_timeout=timedelta(seconds=2)) as own:
        assert (await own.run(cart, scenario)).outcome == "completed"
        orphan = await own.env.client.start_workflow(
            "JourneyWorkflow", {"journey": "none"}, id="orphan", task_queue="nobody-polls-this"
        )
        try:
            with pytest.raises(SimulationError) as stuck:
                await own.run(cart, scenario)
        finally:
            await orphan.terminate(reason="test over")
    message = str(stuck.value)
    assert message.startswith("the clock did not reach 2026-03-03T09:00:00Z")  # `until`
    assert "run left open" in message


# --------------------------------------------------------------------------- the command


def write_scenario(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_cli_json_is_the_report(simulator: Simulator, cart: Journey, tmp_path: Path) -> None:
    scenario = cart_scenario(ADDED)
    path = write_scenario(tmp_path, scenario)
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "simulate", str(CART), "--scenario", str(path),
         "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                   f"{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)  # stdout holds the JSON object and nothing else
    expected = (await simulator.run(cart, parse_scenario(scenario))).model_dump(mode="json")
    assert list(printed) == list(expected)
    assert printed["outcome"] == "completed"
    assert [(p["step"], p["note"]) for p in printed["path"]] == [
        (p["step"], p["note"]) for p in expected["path"]
    ]
    for key in ("journey", "version", "contact", "outcome", "scores", "tasks", "alerts",
                "webhooks", "audiences"):
        assert printed[key] == expected[key], key
    assert [(s["step"], s["channel"], s["template"], s["status"]) for s in printed["sends"]] == [
        (s["step"], s["channel"], s["template"], s["status"]) for s in expected["sends"]
    ]
    assert printed["sends"][0]["at"].startswith("2026-03-02T11:00:")


def test_cli_bad_scenario_exits_1_naming_the_field(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, {"now": NOW, "contact": {"id": "c-1"},
                                     "events": [{"at": "-2h", "event": "cart_item_added"}]})
    result = CliRunner().invoke(app, ["simulate", str(CART), "--scenario", str(path), "--json"])
    assert result.exit_code == 1
    assert "events[0].at" in result.output
    assert "before `now`" in result.output


def test_cli_bad_journey_exits_1_with_its_problems(tmp_path: Path) -> None:
    journey = tmp_path / "broken.yaml"
    journey.write_text("key: broken\nname: Broken\ntrigger: {event: x}\n"
                       "steps:\n  a: {wait: 2h, next: nowhere}\n")
    path = write_scenario(tmp_path, {"now": NOW, "contact": {"id": "c-1"}})
    result = CliRunner().invoke(app, ["simulate", str(journey), "--scenario", str(path)])
    assert result.exit_code == 1
    assert "nowhere" in result.output


def test_cli_without_the_test_server_says_how_to_install_it(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, cart_scenario(ADDED))
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "simulate", str(CART), "--scenario", str(path),
         "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},  # a PATH without temporal-test-server
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "temporal-test-server is not on PATH" in done.stderr
    assert 'pip install -e ".[dev]"' in done.stderr


def test_cli_timeline_for_people(tmp_path: Path) -> None:
    """The human timeline names the outcome and each step (runs its own short-lived server)."""
    path = write_scenario(tmp_path, cart_scenario(ADDED, {"at": "+1h",
                                                          "event": "checkout_completed"}))
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "simulate", str(CART), "--scenario", str(path)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                   f"{os.environ.get('PATH', '')}", "COLUMNS": "160"},
    )
    assert done.returncode == 0, done.stderr
    assert "outcome converted" in done.stdout
    assert "wait_2h" in done.stdout
    assert "No sends." in done.stdout


def test_scenario_model_is_exported_for_users() -> None:
    from starter import testing

    assert testing.Scenario is Scenario
    assert callable(testing.simulate_sync)
