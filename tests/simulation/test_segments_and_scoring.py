"""Scoring and segments apply in simulations as they do live: "call them at 50" is a journey."""

from __future__ import annotations

from pathlib import Path

import yaml

from cairn.journey_files import load_journey
from starter.testing import Simulator, parse_scenario

SALES_ALERT = {
    "key": "sales-alert",
    "name": "Call hot leads",
    "trigger": {"event": "score_crossed",
                "where": {"properties.threshold": 50, "properties.direction": "up"}},
    "steps": {
        "call": {"task": {"queue": "sales-calls", "title": "Call {{ contact.id }}: score 50+"},
                 "next": "end"},
    },
}

SCORING = {
    "key": "engagement",
    "name": "Engagement",
    "rules": [{"event": "whitepaper_downloaded", "add": 30, "reason": "downloaded a whitepaper"}],
    "thresholds": {"global": [50]},
}


async def test_crossing_a_score_threshold_starts_the_sales_journey(
    simulator: Simulator, tmp_path: Path
) -> None:
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "engagement.yaml").write_text(yaml.safe_dump(SCORING))
    (tmp_path / "sales-alert.yaml").write_text(yaml.safe_dump(SALES_ALERT))
    journey = load_journey(tmp_path / "sales-alert.yaml")
    scenario = parse_scenario({
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "lead-1", "email": "lead@example.com"},
        "events": [
            {"at": "+0s", "event": "whitepaper_downloaded"},
            {"at": "+1d", "event": "whitepaper_downloaded"},
            {"at": "+2d", "event": "whitepaper_downloaded"},
        ],
        "until": "+3d",
    })
    report = await simulator.run(journey, scenario, audience_folder=tmp_path)
    assert report.outcome == "completed", report.path
    assert [(t.queue, t.title) for t in report.tasks] == [("sales-calls", "Call lead-1: score 50+")]
    assert report.model_dump(mode="json")["tasks"][0]["at"] == "2026-03-03T09:00:00Z"

    without_rules = await simulator.run(journey, scenario)
    assert without_rules.outcome == "not_entered"
