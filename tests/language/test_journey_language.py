"""The journey language as files: every step kind and condition loads, dumps and loads back the
same; YAML and JSON read alike; templates come from the folder beside the journey."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pydantic_core
import pytest
from pydantic import ValidationError

from cairn.conditions import (
    AllCondition,
    AnyCondition,
    AttributeCondition,
    HasDoneCondition,
    InSegmentCondition,
    NotCondition,
    PropertyCondition,
    ReachableCondition,
    ScoreCondition,
)
from cairn.graph import steps_of
from cairn.journey import STEP_KINDS, IfStep, Journey, UpdateStep, step_kind
from cairn.journey_files import load_journey, validate_paths
from cairn.problems import JourneyFileError

REPO = Path(__file__).resolve().parents[2]

EVERY_KIND = """
key: every-kind
name: Every step kind and condition
description: used by the round-trip test
trigger:
  event: signed_up
  where: {properties.plan: {in: [pro, team]}, properties.seats: {gte: 2}}
entry: {reentry: concurrent, key_by: properties.order_id, min_interval: 1h}
exit:
  - {event: unsubscribed, goal: left, where: {property: reason, exists: true}}
settings:
  quiet_hours: {from: 21:00, to: 08:00}
  timezone: Europe/Bucharest
start: wait_a_bit
steps:
  wait_a_bit: {wait: 90s, next: until_due, summary: let the sign-up settle}
  until_due:
    wait_until: {attribute: emi_due_date, offset: -10d, time: "10:00"}
    next: until_date
    missing: window
  until_date: {wait_until: {at: "2026-12-24T10:00:00Z"}, next: window}
  window:
    wait_for_window: {days: [mon, tue, wed, thu, fri], from: "09:00", to: "17:00"}
    next: opened
  opened:
    wait_for_event: {event: email_opened, where: {campaign: welcome}, timeout: 2d, since: entry}
    then: attr
    timeout_next: attr
  attr:
    if: {attribute: cart.items, gt: 0, lte: 10}
    then: scored
    else: scored
  scored:
    if: {score: engagement, gte: 40}
    then: prop
    else: prop
  prop:
    if: {property: properties.total, starts_with: "1", ne: "100"}
    then: segment
    else: segment
  segment:
    if: {in_segment: buyers}
    then: done_twice
    else: done_twice
  done_twice:
    if: {has_done: {event: purchase, where: {total: {gt: 50}}, within: 30d, count: {gte: 2}}}
    then: done_since
    else: done_since
  done_since:
    if: {has_done: {event: page_viewed, since: entry}}
    then: reach
    else: reach
  reach:
    if: {reachable: {channel: sms, category: transactional}}
    then: combined
    else: combined
  combined:
    if:
      all:
        - {attribute: plan, eq: pro}
        - any:
            - {not: {in_segment: churned}}
            - {attribute: last_seen_at, older_than: 30d}
            - {attribute: tags, contains: vip}
            - {attribute: signed_up_at, newer_than: 7d}
            - {attribute: email, exists: false}
    then: ab
    else: ab
  ab:
    split:
      paths: [{percent: 45, next: send_one, name: A}, {percent: 45, next: send_many}]
      holdout: 10
  send_one:
    send: {channel: email, template: welcome, category: transactional, on_failure: alert}
    next: bump
  send_many: {send: {channels: [push, sms, email], template: welcome}, next: bump}
  bump: {score: {dimension: engagement, add: -5, reason: nudged}, next: profile}
  profile:
    update:
      set: {stage: onboarded, "cart.items": 0}
      unset: [trial]
      add_tags: [a]
      remove_tags: [b]
    next: hook
  hook:
    webhook:
      url: https://recs.example.com/v1/for
      method: PUT
      body: '{"contact": "{{ contact.id }}"}'
      headers: {X-Api-Key: k}
      save_as: recs
    next: alert
  alert: {notify: {to: "slack:#sales", template: alert}, next: call}
  call: {task: {queue: sales-calls, title: Call them, due: 2d, note: hot lead}, next: ads}
  ads: {audience: {sync: facebook, audience: buyers, action: remove}, next: handoff}
  handoff: {start_journey: {journey: nurture}, next: finish}
  finish: {end: {outcome: onboarded}}
"""

TEMPLATES = {
    "welcome.yaml": textwrap.dedent("""\
        email: {subject: "Welcome {{ contact.first_name | default: 'friend' }}", body: "Hello"}
        sms: {body: "Welcome"}
        push: {title: "Hi", body: "Welcome"}
    """),
    "alert.json": json.dumps({"slack": {"text": "Lead {{ contact.id }} is hot"}}),
}


def write_catalog(folder: Path, text: str, name: str = "every-kind.yaml") -> Path:
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for file, content in TEMPLATES.items():
        (folder / "templates" / file).write_text(content)
    path = folder / name
    path.write_text(text)
    return path


def walk_conditions(condition: object) -> list[object]:
    found = [condition]
    for child in (
        getattr(condition, "all", None) or getattr(condition, "any", None) or []
    ):
        found += walk_conditions(child)
    if isinstance(condition, NotCondition):
        found += walk_conditions(condition.not_)
    return found


def test_every_step_kind_and_condition_round_trips_through_json(tmp_path: Path) -> None:
    journey = load_journey(write_catalog(tmp_path, EVERY_KIND))

    assert {step_kind(s) for s in journey.steps.values()} == set(STEP_KINDS)
    conditions = [c for s in steps_of(journey).values() if isinstance(s, IfStep)
                  for c in walk_conditions(s.if_)]
    assert {type(c) for c in conditions} >= {
        AttributeCondition, ScoreCondition, PropertyCondition, InSegmentCondition,
        HasDoneCondition, ReachableCondition, AllCondition, AnyCondition, NotCondition,
    }

    again = Journey.model_validate_json(pydantic_core.to_json(journey))
    assert again == journey
    assert again.model_dump() == journey.model_dump()


def test_json_journey_loads_like_yaml(tmp_path: Path) -> None:
    yaml_path = write_catalog(tmp_path, EVERY_KIND)
    from_yaml = load_journey(yaml_path)
    json_path = tmp_path / "every-kind-json.json"
    without_templates = from_yaml.model_copy(update={"templates": {}})
    json_path.write_text(pydantic_core.to_json(without_templates).decode())

    from_json = load_journey(json_path)

    assert from_json == from_yaml


def test_templates_referenced_by_sends_and_notify_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    journey = load_journey(write_catalog(tmp_path, EVERY_KIND))

    assert set(journey.templates) == {"welcome", "alert"}
    assert journey.templates["welcome"]["sms"] == {"body": "Welcome"}
    assert journey.templates["alert"]["slack"]["text"] == "Lead {{ contact.id }} is hot"


def test_yaml_means_what_the_author_wrote(tmp_path: Path) -> None:
    """YAML 1.1 reads 21:00 as 1260 and `no` as False; journey files keep them as text."""
    journey = load_journey(write_catalog(tmp_path, EVERY_KIND))
    profile = steps_of(journey)["profile"]
    assert isinstance(profile, UpdateStep)

    assert journey.settings.quiet_hours is not None
    assert journey.settings.quiet_hours.from_ == "21:00"
    assert profile.update.set == {"stage": "onboarded", "cart.items": 0}

    text = EVERY_KIND.replace("set: {stage: onboarded,", "set: {stage: no, day: 2026-03-20,")
    again = load_journey(write_catalog(tmp_path, text, "other.yaml"))
    profile = steps_of(again)["profile"]
    assert isinstance(profile, UpdateStep)
    assert profile.update.set["stage"] == "no"
    assert profile.update.set["day"] == "2026-03-20"


def test_first_step_defaults_to_the_first_listed(tmp_path: Path) -> None:
    text = EVERY_KIND.replace("start: wait_a_bit\n", "")
    journey = load_journey(write_catalog(tmp_path, text))

    assert journey.start is None
    assert journey.first_step == "wait_a_bit"


def test_load_journey_raises_with_every_problem(tmp_path: Path) -> None:
    text = EVERY_KIND.replace("template: alert", "template: alarm").replace(
        "timezone: Europe/Bucharest", "timezone: Europe/Bucuresti"
    )

    with pytest.raises(JourneyFileError) as raised:
        load_journey(write_catalog(tmp_path, text))

    assert [p.where for p in raised.value.problems] == [
        "steps.alert.notify.template", "settings.timezone",
    ]
    assert "unknown template 'alarm'" in str(raised.value)
    assert "unknown time zone 'Europe/Bucuresti'" in str(raised.value)


def test_bundled_cart_abandonment_is_the_design_example() -> None:
    journey = load_journey(REPO / "journeys" / "cart-abandonment.yaml")

    assert journey.key == "cart-abandonment"
    assert journey.first_step == "wait_2h"
    assert list(journey.steps) == [
        "wait_2h", "still_in_cart", "push_or_email", "push_reminder", "email_reminder",
    ]
    dumped = journey.model_dump(exclude={"templates", "description"})
    for step in dumped["steps"].values():
        step.pop("summary", None)
    assert dumped == {
        "key": "cart-abandonment",
        "name": "Reduce cart abandonment",
        "trigger": {"event": "cart_item_added",
                    "where": {"all": [{"property": "properties.value", "gte": 20}]}},
        "entry": {"reentry": "after_exit", "min_interval": "1d"},
        "exit": [{"event": "checkout_completed", "goal": "converted"}],
        "settings": {"quiet_hours": {"from": "21:00", "to": "08:00"}, "timezone": "UTC"},
        "attribution": {"window": "7d"},
        "start": "wait_2h",
        "steps": {
            "wait_2h": {"wait": "2h", "next": "still_in_cart"},
            "still_in_cart": {"if": {"attribute": "cart.items", "gt": 0},
                              "then": "push_or_email", "else": "end"},
            "push_or_email": {"if": {"reachable": {"channel": "push", "category": "marketing"}},
                              "then": "push_reminder", "else": "email_reminder"},
            "push_reminder": {"send": {"channel": "push", "template": "cart-reminder",
                                       "category": "marketing"}, "next": "email_reminder"},
            "email_reminder": {"send": {"channel": "email", "template": "cart-reminder-similar",
                                        "category": "marketing"}, "next": "end"},
        },
    }
    assert set(journey.templates["cart-reminder"]) == {"push", "email"}
    assert set(journey.templates["cart-reminder-similar"]) == {"email"}


def test_bundled_catalog_validates() -> None:
    assert validate_paths([REPO / "journeys"]) == []


def test_attribution_window_defaults_to_seven_days_and_must_be_positive() -> None:
    base = {"key": "k", "name": "K", "trigger": {"event": "go"},
            "steps": {"pause": {"wait": "1h", "next": "end"}}}
    assert Journey.model_validate(base).attribution.window == "7d"
    assert Journey.model_validate({**base, "attribution": {"window": "3d"}}
                                  ).attribution.window == "3d"
    with pytest.raises(ValidationError) as raised:
        Journey.model_validate({**base, "attribution": {"window": "soon"}})
    assert raised.value.errors()[0]["loc"][:2] == ("attribution", "window")
