"""The delivery policy beside a journey applies in simulations, as `cairn validate` reads it.

A journey sends three marketing WhatsApp messages in a row under a cap of one a day: the second
waits for the next day and the third, which skips when held, is skipped. Checked through
`cairn simulate` (a journey folder with `policies/delivery.yaml`, as a user has it) and through
`starter.testing.simulate`; a scenario's own `policy:` replaces the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from starter.cli.main import app
from starter.testing import ScenarioError, SimulationReport, Simulator, parse_scenario, simulate

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NEXT_DAY = START + timedelta(days=1)

NEWS: dict[str, Any] = {
    "key": "whatsapp-news",
    "name": "WhatsApp news",
    "trigger": {"event": "signed_up"},
    "steps": {
        "welcome": {"send": {"channel": "whatsapp", "template": "news"}, "next": "offer"},
        "offer": {"send": {"channel": "whatsapp", "template": "news"}, "next": "reminder"},
        "reminder": {"send": {"channel": "whatsapp", "template": "news", "when_held": "skip"},
                     "next": "end"},
    },
    "templates": {"news": {"whatsapp": {"body": "News for {{ contact.id }}"}}},
}

ONE_WHATSAPP_A_DAY: dict[str, Any] = {"caps": [{"max": 1, "per": "1d", "channel": "whatsapp"}]}

SCENARIO: dict[str, Any] = {
    "now": "2026-03-02T09:00:00Z",
    "contact": {"id": "c-1", "phone": "+40722000000", "consent": {"marketing": True}},
    "events": [{"at": "+0s", "event": "signed_up"}],
    "until": "+3d",
}


def journey_folder(folder: Path, policy: dict[str, Any] | None) -> Path:
    """A journeys folder with the journey and, when given, `policies/delivery.yaml`."""
    if policy is not None:
        (folder / "policies").mkdir()
        (folder / "policies" / "delivery.yaml").write_text(yaml.safe_dump(policy))
    path = folder / "whatsapp-news.yaml"
    path.write_text(yaml.safe_dump(NEWS, sort_keys=False))
    return path


def write_scenario(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_capped(sends: list[dict[str, Any]]) -> None:
    """The report's sends (as JSON) under one WhatsApp a day."""
    assert [(s["step"], s["channel"], s["status"]) for s in sends] == [
        ("welcome", "whatsapp", "sent"),
        ("offer", "whatsapp", "sent"),
        ("reminder", "whatsapp", "skipped:frequency_cap"),
    ]
    welcome, offer, reminder = (datetime.fromisoformat(s["at"]) for s in sends)
    assert START <= welcome < START + timedelta(minutes=1)
    # The second waits until the first leaves the one-day window: the next day.
    assert NEXT_DAY <= offer < NEXT_DAY + timedelta(minutes=1)
    assert offer <= reminder < offer + timedelta(minutes=1)


@pytest_asyncio.fixture(scope="module")
async def simulator(temporal_env: WorkflowEnvironment) -> AsyncIterator[Simulator]:
    async with Simulator.start(temporal_env) as sim:
        yield sim


def report_sends(report: SimulationReport) -> list[dict[str, Any]]:
    sends: list[dict[str, Any]] = report.model_dump(mode="json")["sends"]
    return sends


async def test_the_policy_beside_the_journey_caps_whatsapp(simulator: Simulator,
                                                           tmp_path: Path) -> None:
    journey = journey_folder(tmp_path, ONE_WHATSAPP_A_DAY)
    report = await simulate(journey, SCENARIO, simulator=simulator)
    assert report.outcome == "completed", report.path
    assert_capped(report_sends(report))
    assert any(p.step == "offer" and "deferred:frequency_cap" in p.note for p in report.path)


async def test_without_a_policy_file_nothing_is_held(simulator: Simulator,
                                                     tmp_path: Path) -> None:
    journey = journey_folder(tmp_path, None)
    report = await simulate(str(journey), SCENARIO, simulator=simulator)
    assert [(s.step, s.status) for s in report.sends] == [
        ("welcome", "sent"), ("offer", "sent"), ("reminder", "sent")]
    assert all(START <= s.at < START + timedelta(minutes=1) for s in report.sends)


async def test_a_scenario_policy_replaces_the_file(simulator: Simulator, tmp_path: Path) -> None:
    journey = journey_folder(tmp_path, ONE_WHATSAPP_A_DAY)
    two_a_day = {**SCENARIO, "policy": {"caps": [{"max": 2, "per": "1d"}]}}
    report = await simulate(journey, two_a_day, simulator=simulator)
    assert [(s.step, s.status) for s in report.sends] == [
        ("welcome", "sent"), ("offer", "sent"), ("reminder", "skipped:frequency_cap")]
    assert all(START <= s.at < START + timedelta(minutes=1) for s in report.sends)


async def test_a_scenario_policy_applies_to_a_journey_without_a_file(
    simulator: Simulator,
) -> None:
    report = await simulate(NEWS, {**SCENARIO, "policy": ONE_WHATSAPP_A_DAY},
                            simulator=simulator)
    assert_capped(report_sends(report))


@pytest.mark.parametrize(
    ("policy", "field", "words"),
    [
        ({"caps": [{"max": 0, "per": "1d"}]}, "policy.caps[0].max", "greater than or equal"),
        ({"caps": [{"max": 1, "per": "1d", "channel": "fax"}]}, "policy.caps[0].channel",
         "whatsapp"),
        ({"quiet_hours": {"sms": {"from": "21:00"}}}, "policy.quiet_hours.sms.to", "required"),
        ({"quiet_hours": {"fax": {"from": "21:00", "to": "08:00"}}}, "policy.quiet_hours.fax",
         "'sms'"),
        ({"caps": [], "limits": 3}, "policy.limits", "not permitted"),
    ],
)
def test_a_bad_scenario_policy_names_the_field(policy: dict[str, Any], field: str,
                                               words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**SCENARIO, "policy": policy}, source="s.yaml")
    problems = caught.value.problems
    assert any(p.startswith(f"{field}:") and words in p for p in problems), problems


# --------------------------------------------------------------------------- the command


def test_cli_applies_the_policy_beside_the_journey(tmp_path: Path) -> None:
    journey = journey_folder(tmp_path, ONE_WHATSAPP_A_DAY)
    scenario = write_scenario(tmp_path, SCENARIO)
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "simulate", str(journey), "--scenario",
         str(scenario), "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                   f"{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["outcome"] == "completed"
    assert_capped(printed["sends"])
    assert printed["sends"][1]["at"].startswith("2026-03-03T09:00:")


def test_cli_bad_policy_file_exits_1_naming_the_field(tmp_path: Path) -> None:
    journey = journey_folder(tmp_path, {"caps": [{"max": 0, "per": "1d"}]})
    scenario = write_scenario(tmp_path, SCENARIO)
    result = CliRunner().invoke(app, ["simulate", str(journey), "--scenario", str(scenario)])
    assert result.exit_code == 1
    assert "delivery.yaml" in result.output
    assert "caps[0].max" in result.output
