"""Journeys on real provider code: channel fallback after a refusal, Slack alerts, signed
webhooks whose answers feed templates, Facebook audiences, and frequency caps held on timers.

Each provider is the real client talking to its local stand-in over HTTP; the journey runs on
the time-skipping server through the simulator (real ingest, router, interpreter, activities).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cairn.channels.facebook import FacebookAudienceSyncer, FacebookSettings
from cairn.channels.postmark import PostmarkProvider, PostmarkSettings
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.slack import SlackNotifier, SlackSettings
from cairn.channels.webhook import WebhookCaller, WebhookSettings
from cairn.delivery_policy import DeliveryPolicy, FrequencyCap
from cairn.store.db import Store
from starter.testing import Simulator, as_journey, parse_scenario
from tests.standins.facebook import API_VERSION, GraphState, facebook_app
from tests.standins.facebook import TOKEN as FB_TOKEN
from tests.standins.postmark import TOKEN, postmark_app
from tests.standins.server import Script, StandInServer
from tests.standins.slack import slack_app

NOW = "2026-03-02T09:00:00Z"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SLACK_PATH = "/services/T000/B000/sales"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    postmark, slack, recs, facebook = Script(), Script(), Script(), Script()
    graph = GraphState(audiences={"1234567890": set()})

    async def recommend(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        recs.accepted.append({"headers": dict(request.headers), "body": body})
        return JSONResponse({"items": [{"name": "Blue mug"}, {"name": "Tea set"}]})

    recs_app = Starlette(routes=[Route("/v1/similar", recommend, methods=["POST"])])
    with StandInServer(postmark_app(postmark, inactive=["gone@example.com"])) as pm, \
            StandInServer(slack_app(slack, {SLACK_PATH: "ok"})) as sl, \
            StandInServer(recs_app) as rc, \
            StandInServer(facebook_app(facebook, graph)) as fb:
        yield {"postmark": (postmark, pm.url), "slack": (slack, sl.url), "recs": (recs, rc.url),
               "facebook": (facebook, fb.url, graph)}


def channels_for(servers: dict[str, Any]) -> Any:
    def build(store: Store) -> ChannelSet:
        providers = dict(local_channels(store).providers)
        providers["email"] = PostmarkProvider(PostmarkSettings(
            server_token=SecretStr(TOKEN), from_address="shop@example.com",
            base_url=servers["postmark"][1]))
        return ChannelSet(
            providers=providers,
            notifier=SlackNotifier(SlackSettings(webhooks={
                "sales": SecretStr(servers["slack"][1] + SLACK_PATH)})),
            webhooks=WebhookCaller(WebhookSettings(signing_secret=SecretStr("s3cret"))),
            audiences={"facebook": FacebookAudienceSyncer(FacebookSettings(
                access_token=SecretStr(FB_TOKEN), api_version=API_VERSION,
                base_url=servers["facebook"][1], audiences={"buyers": "1234567890"}))},
        )
    return build


def scenario(contact: dict[str, Any], *events: dict[str, Any], until: str = "+2d") -> Any:
    base = {"id": "c-1", "timezone": "UTC", "consent": {"marketing": True},
            "attributes": {"first_name": "Ana"}}
    return parse_scenario({"now": NOW, "contact": {**base, **contact}, "events": list(events),
                           "until": until})


GO = {"at": "+0s", "event": "go"}


async def test_a_refused_email_falls_back_to_sms_and_suppresses_the_address(
    simulator: Simulator, servers: dict[str, Any],
) -> None:
    journey = as_journey({
        "key": "fallback", "name": "Fallback", "trigger": {"event": "go"}, "start": "offer",
        "steps": {"offer": {"send": {"channels": ["email", "sms"], "template": "offer"},
                            "next": "end"}},
        "templates": {"offer": {"email": {"subject": "Hi", "body": "Offer"},
                                "sms": {"body": "Offer by SMS"}}},
    })
    report = await simulator.run(
        journey, scenario({"email": "gone@example.com", "phone": "+40722000000"}, GO),
        channels=channels_for(servers),
    )
    assert report.outcome == "completed"
    assert [(s.channel, s.status) for s in report.sends] == [("email", "failed"), ("sms", "sent")]
    assert "406" in report.sends[0].reason
    [offer] = report.path
    assert "failed on email" in offer.note and "sent on sms" in offer.note
    postmark = servers["postmark"][0]
    assert [r["body"]["To"] for r in postmark.requests if r["body"]] == ["gone@example.com"]
    assert postmark.accepted == []


async def test_alert_webhook_answer_and_audience_reach_their_services(
    simulator: Simulator, servers: dict[str, Any],
) -> None:
    journey = as_journey({
        "key": "hot-lead", "name": "Hot lead", "trigger": {"event": "go"}, "start": "recommend",
        "steps": {
            "recommend": {"webhook": {
                "url": servers["recs"][1] + "/v1/similar",
                "body": '{"contact": "{{ contact.id }}"}', "save_as": "recs"},
                "next": "tell_sales"},
            "tell_sales": {"notify": {"to": "slack:#sales", "template": "hot"},
                           "next": "retarget"},
            "retarget": {"audience": {"sync": "facebook", "audience": "buyers"},
                         "next": "email"},
            "email": {"send": {"channel": "email", "template": "picks"}, "next": "end"},
        },
        "templates": {
            "hot": {"slack": {"text": "{{ contact.first_name }} is hot"}},
            "picks": {"email": {"subject": "Picked for you",
                                "body": "{% for i in journey.recs.items %}{{ i.name }};"
                                        "{% endfor %}"}},
        },
    })
    report = await simulator.run(
        journey, scenario({"id": "c-2", "email": "ana@example.com", "phone": "+40722000001"},
                          GO),
        channels=channels_for(servers),
    )
    assert report.outcome == "completed", report.path
    recs = servers["recs"][0]
    [call] = recs.accepted
    assert call["body"] == {"contact": "c-2"}
    assert call["headers"]["x-cairn-signature"].startswith("v1=")
    assert call["headers"]["idempotency-key"].endswith("/recommend/1")
    [slack] = servers["slack"][0].requests
    assert slack["path"] == SLACK_PATH and "Ana is hot" in slack["body"]
    graph: GraphState = servers["facebook"][2]
    assert len(graph.audiences["1234567890"]) == 1
    [mail] = [m for m in servers["postmark"][0].accepted if m["To"] == "ana@example.com"]
    assert mail["TextBody"] == "Blue mug;Tea set;"
    assert [(a.sync, a.audience, a.status) for a in report.audiences] == [
        ("facebook", "buyers", "sent")]
    assert [(a.to, a.status) for a in report.alerts] == [("slack:#sales", "sent")]


async def test_a_capped_fourth_message_waits_on_a_durable_timer(
    simulator: Simulator, servers: dict[str, Any],
) -> None:
    steps: dict[str, Any] = {}
    for day in range(4):
        steps[f"send_{day}"] = {"send": {"channel": "sms", "template": "daily"},
                                "next": f"wait_{day}" if day < 3 else "end"}
        if day < 3:
            steps[f"wait_{day}"] = {"wait": "1d", "next": f"send_{day + 1}"}
    journey = as_journey({
        "key": "daily", "name": "Daily", "trigger": {"event": "go"}, "start": "send_0",
        "steps": steps, "templates": {"daily": {"sms": {"body": "Daily news"}}},
    })
    report = await simulator.run(
        journey, scenario({"id": "c-3", "phone": "+40722000002"}, GO, until="+10d"),
        policy=DeliveryPolicy(caps=[FrequencyCap(max=3, per="7d")]),
    )
    assert report.outcome == "completed"
    sent = [s.at for s in report.sends if s.status == "sent"]
    assert len(sent) == 4
    for day, at in enumerate(sent[:3]):
        assert START + timedelta(days=day) <= at < START + timedelta(days=day, minutes=1)
    # The fourth waits until the first leaves the 7-day window, on a timer, then goes.
    assert sent[0] + timedelta(days=7) <= sent[3] < sent[0] + timedelta(days=7, minutes=1)
    assert any("deferred:frequency_cap" in p.note for p in report.path)
