"""No personal data in Temporal histories: the whole catalog, simulated, scanned payload by payload.

Every journey of `journeys/` is played with the scenario on its docs page (`docs/journeys/<key>.md`,
the one `cairn simulate` examples use) with plain JSON payloads (no codec), its workflow histories
are fetched, and every piece of text in them (each payload's JSON: inputs, signals, activity inputs
and results, query state carried through continue-as-new; search attributes, memo, static summaries
and details, failure messages) is searched for the scenario's personal values: the contact's
email, phone, push tokens and custom trait values, and every event property and identify trait.
Every webhook step is answered with a receiver's record of the contact (`CRM_ANSWER`), whose
values are searched for too: a `save_as` answer stays in the store.

What counts as a personal value (the needles):
- strings of at least 4 characters, and numbers of at least 4 digits: shorter ones (`pro`, `RO`,
  `42`, booleans) are too generic to identify anyone and occur by chance in any text;
- not the contact's id, the event names or message ids, nor an entry key (the event field that
  `entry.key_by` names, e.g. an order id): identifiers the run must carry (in its workflow id);
- not a value the journey definition itself spells (a condition's `premium`, a template's text):
  that is the author's data, and the definition travels in the input by design;
- not dates and times (a `now`-relative scenario moment is also a journey time), nor time-zone
  names: the journey's decisions are times, and those are not the contact's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

import yaml
from google.protobuf.message import Message
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory

from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.webhook import WebhookCaller, WebhookReply, WebhookSettings
from cairn.conditions import event_field
from cairn.journey import Journey
from cairn.journey_files import journey_files, load_journey
from cairn.simulation.scenario import Scenario
from cairn.store.db import Store
from starter.testing import Simulator, as_journey, parse_scenario, policy_beside
from tests.standins.server import StandInServer

ROOT = Path(__file__).resolve().parents[2]
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)
TIME_ZONES = available_timezones()
MOMENT = re.compile(r"^[+-]?\d{4}-\d{2}-\d{2}([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?$")


def catalog() -> list[tuple[Journey, Path, Scenario]]:
    """Each catalog journey with the scenario of its docs page."""
    found = []
    for path in journey_files(ROOT / "journeys"):
        journey = load_journey(path)
        page = ROOT / "docs" / "journeys" / f"{journey.key}.md"
        blocks = YAML_BLOCK.findall(page.read_text(encoding="utf-8"))
        assert blocks, f"{page.name} has no scenario"
        found.append((journey, path, parse_scenario(yaml.safe_load(blocks[0]))))
    return found


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def personal_values(journey: Journey, scenario: Scenario) -> set[str]:
    """The scenario's values that would identify or describe the contact (rule in the docstring)."""
    contact = scenario.contact
    raw: list[Any] = [contact.email, contact.phone, contact.push_tokens,
                      [w.endpoint for w in contact.web_push], contact.attributes]
    for event in scenario.events:
        raw += [event.properties, event.traits]
    definition = json.dumps(journey.model_dump(mode="json"), ensure_ascii=False)
    identifiers = {contact.id, *(e.event or "" for e in scenario.events),
                   *(e.message_id or "" for e in scenario.events)}
    if journey.entry.key_by is not None:
        identifiers |= {str(event_field({"properties": e.properties}, journey.entry.key_by))
                        for e in scenario.events}
    needles = set()
    for value in _leaves(raw):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            text = str(value)
            if len(re.sub(r"\D", "", text)) < 4:
                continue
        else:
            text = str(value).strip()
            if len(text) < 4 or MOMENT.match(text) or text in TIME_ZONES:
                continue
        if text in identifiers or text in definition:
            continue
        needles.add(text)
    return needles


def _texts(message: Message) -> Iterator[str]:
    """Every string in a history event, with each payload's data decoded as text."""
    if isinstance(message, Payload):
        yield message.data.decode("utf-8", errors="replace")
        for value in message.metadata.values():
            yield value.decode("utf-8", errors="replace")
        return
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    yield str(key)
                    yield from (_texts(item) if isinstance(item, Message) else [str(item)])
            elif isinstance(value, Message):
                yield from _texts(value)
            else:
                for item in value:
                    yield from _texts(item)
        elif field.type == field.TYPE_STRING:
            yield from ([value] if isinstance(value, str) else value)


def leaks(histories: dict[str, list[WorkflowHistory]], needles: set[str]) -> list[str]:
    """`<workflow id> #<event id> <event type>: <value>` for each needle found in a history."""
    found = []
    for wid, runs in histories.items():
        for history in runs:
            for event in history.events:
                text = "\n".join(_texts(event))
                for needle in needles:
                    if needle in text:
                        found.append(f"{wid} #{event.event_id} "
                                     f"{event.WhichOneof('attributes')}: {needle!r}")
    return found


def test_the_needles_follow_the_rule() -> None:
    journey = Journey.model_validate({
        "key": "k", "name": "K", "trigger": {"event": "purchase"},
        "steps": {"s": {"if": {"attribute": "plan", "eq": "premium"}, "then": "end",
                        "else": "end"}},
    })
    scenario = parse_scenario({
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "ana-1", "email": "ana@example.com", "phone": "+40722000111",
                    "timezone": "Europe/Bucharest",
                    "attributes": {"first_name": "Ana", "last_name": "Popescu", "plan": "premium",
                                   "vip": True, "age": 41, "ssn": 1900512123456}},
        "events": [{"at": "+0s", "event": "purchase",
                    "properties": {"country": "RO", "total": 64.5, "due": "2026-03-20",
                                   "address": {"line1": "Strada Lipscani 12"}}}],
    })
    assert personal_values(journey, scenario) == {
        "ana@example.com", "+40722000111", "Popescu", "1900512123456", "Strada Lipscani 12"}


CRM_ANSWER = {"customer": {"full_name": "Ana Popescu-Vlad", "email": "ana.crm@example.org",
                           "phone": "+40722999888", "address": "Strada Lipscani 12"},
              "items": [{"name": "Blue mug"}],
              "courses": [{"title": "Tax filing for Ana Popescu-Vlad"}]}
"""What the webhooks of these tests answer: a receiver's record of the contact."""
CRM_VALUES = {"Ana Popescu-Vlad", "ana.crm@example.org", "+40722999888", "Strada Lipscani 12",
              "Blue mug", "Tax filing for Ana Popescu-Vlad"}


@dataclass
class AnsweringWebhooks:
    """The webhook caller, answering every call with `CRM_ANSWER` (the catalog's URLs are
    example.com: nothing would answer them)."""

    name: str = "webhook"
    idempotent: bool = True
    calls: int = 0

    async def call(self, method: str, url: str, body: str | None, headers: dict[str, str],
                   idempotency_key: str) -> WebhookReply:
        self.calls += 1
        return WebhookReply(status=200, json=CRM_ANSWER)

    async def aclose(self) -> None:
        return None


async def test_no_history_of_the_catalog_holds_personal_data(simulator: Simulator) -> None:
    found: list[str] = []
    played = 0
    webhooks = AnsweringWebhooks()

    def channels(store: Store) -> ChannelSet:
        return dataclasses.replace(local_channels(store), webhooks=webhooks)  # type: ignore[arg-type]

    for journey, path, scenario in catalog():
        report = await simulator.run(journey, scenario, keep_histories=True,
                                     audience_folder=path.parent, policy=policy_beside(path),
                                     channels=channels)
        assert report.histories, f"{journey.key}: the scenario started no run"
        played += 1
        needles = personal_values(journey, scenario) | CRM_VALUES
        found += [f"{journey.key}: {hit}" for hit in leaks(report.histories, needles)]
    assert played >= 27
    assert webhooks.calls >= 3  # the catalog's webhook steps with `save_as` were answered
    if found and (dump := os.environ.get("HISTORY_SCAN_DUMP")):
        Path(dump).write_text("\n".join(found), encoding="utf-8")
    assert not found, f"{len(found)} personal values in histories:\n" + "\n".join(found[:80])



async def test_a_webhook_answer_kept_with_save_as_stays_in_the_store(
    simulator: Simulator,
) -> None:
    """The receiver's answer (a CRM record of the contact) feeds the next step's template, read
    back from the ledger: the run's history holds only a reference to it."""

    echoed: list[Any] = []

    async def crm(request: Request) -> JSONResponse:
        return JSONResponse(CRM_ANSWER)

    async def echo(request: Request) -> JSONResponse:
        echoed.append((await request.body()).decode())
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/crm", crm, methods=["POST"]),
                            Route("/echo", echo, methods=["POST"])])
    with StandInServer(app) as server:
        journey = as_journey({
            "key": "crm-lookup", "name": "CRM lookup", "trigger": {"event": "go"},
            "start": "lookup",
            "steps": {
                "lookup": {"webhook": {"url": server.url + "/crm", "save_as": "crm"},
                           "next": "tell"},
                "tell": {"webhook": {
                    "url": server.url + "/echo",
                    "body": "{{ journey.crm.customer.full_name }} at "
                            "{{ journey.crm.customer.email }}"}, "next": "end"},
            },
        })

        def channels(store: Store) -> ChannelSet:
            return ChannelSet(providers=dict(local_channels(store).providers),
                              webhooks=WebhookCaller(WebhookSettings(
                                  signing_secret=SecretStr("s3cret"))))

        report = await simulator.run(
            journey,
            parse_scenario({"now": "2026-03-02T09:00:00Z",
                            "contact": {"id": "c-9", "email": "c9@example.com"},
                            "events": [{"at": "+0s", "event": "go"}]}),
            keep_histories=True, channels=channels,
        )
    assert report.outcome == "completed", report.path
    assert echoed == ["Ana Popescu-Vlad at ana.crm@example.org"]
    needles = CRM_VALUES
    assert report.histories
    found = leaks(report.histories, needles)
    assert not found, "\n".join(found)
