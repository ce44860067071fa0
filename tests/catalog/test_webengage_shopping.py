"""The WebEngage shopping journeys of the catalog, played by the simulator.

app-download-after-checkout, cart-abandonment (docs and two more scenarios), window-shoppers-to-
buyers, engagement-scoring and cold-user-reactivation: each scenario runs the real interpreter on
the module's time-skipping server and checks the exact path, sends (step, channel, template,
status, time after the start), scores and webhooks. Times are compared to the second, floored as
the report's JSON prints them (real processing adds milliseconds after each whole second).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.channels.base import OutgoingMessage, Provider, Receipt
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.webhook import WebhookCaller, WebhookSettings, verify_signature
from cairn.journey import Journey, WebhookStep
from cairn.store.db import Store
from starter.testing import SimulationReport, Simulator, as_journey, parse_scenario
from tests.links_support import untracked
from tests.standins.server import StandInServer

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT / "journeys"
NOW = "2026-03-02T09:00:00Z"  # 11:00 in Bucharest: every send below is outside quiet hours
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
M = timedelta(minutes=1)
SECRET = "test-secret"

ANA: dict[str, Any] = {
    "id": "c-1",
    "timezone": "Europe/Bucharest",
    "email": "ana@example.com",
    "phone": "+40722000000",
    "consent": {"marketing": True},
    "attributes": {"first_name": "Ana"},
}


def scenario(*events: dict[str, Any], until: str, now: str = NOW,
             **contact: Any) -> dict[str, Any]:
    return {"now": now, "contact": {**ANA, **contact}, "events": list(events), "until": until}


def after(at: datetime, start: datetime = START) -> timedelta:
    """Time since the start, floored to the minute: real processing time runs on the simulated
    clock too (milliseconds, up to a second or so while a worker warms up), and every moment
    these journeys act on is a whole minute."""
    return timedelta(minutes=int((at - start).total_seconds() // 60))


Sent = tuple[str | None, str | None, str | None, str, timedelta]


def sends(report: SimulationReport, start: datetime = START) -> list[Sent]:
    return [(s.step, s.channel, s.template, s.status, after(s.at, start)) for s in report.sends]


def path(report: SimulationReport, start: datetime = START) -> list[tuple[str, timedelta]]:
    return [(p.step, after(p.at, start)) for p in report.path]


def scores(report: SimulationReport) -> list[tuple[timedelta, str, int, int]]:
    return [(after(s.at), s.dimension, s.add, s.total) for s in report.scores]


def note(report: SimulationReport, step: str) -> str:
    return next(p.note for p in report.path if p.step == step)


def audience_folder(target: Path, segments: list[str], *, scoring: bool) -> Path:
    """A journeys folder holding only the catalog's segments (and scoring rules) a test needs,
    so totals do not depend on other journeys' scoring files."""
    (target / "segments").mkdir(parents=True)
    for key in segments:
        shutil.copy(JOURNEYS / "segments" / f"{key}.yaml", target / "segments")
    if scoring:
        (target / "scoring").mkdir()
        shutil.copy(JOURNEYS / "scoring" / "engagement.yaml", target / "scoring")
    return target


def load(key: str) -> Journey:
    return as_journey(JOURNEYS / f"{key}.yaml")


# =========================================================================== app download

APP = "app-download-after-checkout"
CHECKOUT = {"at": "+0s", "event": "checkout_completed", "properties": {"order_id": "o-1"}}


async def test_app_download_without_the_app_sms_email_then_last_sms(
    simulator: Simulator,
) -> None:
    report = await simulator.run(load(APP), parse_scenario(scenario(CHECKOUT, until="+3d")))
    assert report.outcome == "completed"
    assert path(report) == [
        ("has_app", timedelta(0)), ("wait_24h", timedelta(0)),
        ("sms_promo", 24 * H), ("wait_1h", 24 * H),
        ("email_promo", 25 * H), ("wait_24h_more", 25 * H),
        ("final_sms", 49 * H),
    ]
    assert note(report, "has_app") == "else: push: no push token"
    assert sends(report) == [
        ("sms_promo", "sms", "app-download-sms", "sent", 24 * H),
        ("email_promo", "email", "app-download-email", "sent", 25 * H),
        ("final_sms", "sms", "app-download-last-sms", "sent", 49 * H),
    ]


async def test_app_download_ends_at_once_for_app_users(simulator: Simulator) -> None:
    # A push token means the app is installed, even without consent to marketing pushes.
    app_user = scenario(CHECKOUT, until="+3d", push_tokens=["tok-1"],
                        consent={"marketing": True, "push": {"marketing": False}})
    report = await simulator.run(load(APP), parse_scenario(app_user))
    assert report.outcome == "ended:has_app"
    assert path(report) == [("has_app", timedelta(0)), ("already_has_app", timedelta(0))]
    assert note(report, "has_app").startswith("then")
    assert report.sends == []


async def test_app_download_installing_after_the_first_sms_stops_the_rest(
    simulator: Simulator,
) -> None:
    installed = {"at": "+24h30m", "event": "app_installed", "properties": {"platform": "ios"}}
    report = await simulator.run(load(APP),
                                 parse_scenario(scenario(CHECKOUT, installed, until="+3d")))
    assert report.outcome == "app_installed"
    assert [step for step, _ in path(report)] == ["has_app", "wait_24h", "sms_promo", "wait_1h"]
    assert sends(report) == [("sms_promo", "sms", "app-download-sms", "sent", 24 * H)]


async def test_app_download_a_registered_push_token_also_stops_it(simulator: Simulator) -> None:
    # The app registering its token (identify) after the email: no last SMS.
    token = {"at": "+30h", "type": "identify", "traits": {"push_tokens": ["tok-new"]}}
    report = await simulator.run(load(APP),
                                 parse_scenario(scenario(CHECKOUT, token, until="+3d")))
    assert report.outcome == "app_installed"
    assert report.steps[-1] == "wait_24h_more"
    assert [(step, channel, at) for step, channel, _t, _s, at in sends(report)] == [
        ("sms_promo", "sms", 24 * H), ("email_promo", "email", 25 * H),
    ]


# =========================================================================== cart abandonment

CART = "cart-abandonment"
ADDED = {"at": "+0s", "event": "cart_item_added",
         "properties": {"value": 45, "name": "Desk lamp", "category": "lighting"}}


async def test_cart_items_left_push_then_similar_products_email(simulator: Simulator) -> None:
    shopper = scenario(ADDED, until="+1d", push_tokens=["tok-1"],
                       attributes={"first_name": "Ana", "cart": {"items": 2}})
    report = await simulator.run(load(CART), parse_scenario(shopper))
    assert report.outcome == "completed"
    assert path(report) == [
        ("wait_2h", timedelta(0)), ("still_in_cart", 2 * H), ("push_or_email", 2 * H),
        ("push_reminder", 2 * H), ("email_reminder", 2 * H),
    ]
    assert note(report, "still_in_cart").startswith("then")
    assert note(report, "push_or_email").startswith("then")
    assert sends(report) == [
        ("push_reminder", "push", "cart-reminder", "sent", 2 * H),
        ("email_reminder", "email", "cart-reminder-similar", "sent", 2 * H),
    ]


async def test_cart_items_left_without_push_token_email_only(simulator: Simulator) -> None:
    shopper = scenario(ADDED, until="+1d",
                       attributes={"first_name": "Ana", "cart": {"items": 1}})
    report = await simulator.run(load(CART), parse_scenario(shopper))
    assert report.outcome == "completed"
    assert path(report) == [
        ("wait_2h", timedelta(0)), ("still_in_cart", 2 * H), ("push_or_email", 2 * H),
        ("email_reminder", 2 * H),
    ]
    assert note(report, "push_or_email") == "else: push: no push token"
    assert sends(report) == [("email_reminder", "email", "cart-reminder-similar", "sent", 2 * H)]


# =========================================================================== window shoppers

SHOPPERS = "window-shoppers-to-buyers"
WS_NOW = "2026-03-02T08:00:00Z"  # 10:00 in Bucharest
WS_START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
BROWSING = {
    "viewed": [{"name": "Arco floor lamp", "url": "https://shop.example.com/products/arco"}],
    "searches": ["floor lamp", "brass"],
    "recommendations": [
        {"name": "Tolomeo floor lamp", "url": "https://shop.example.com/products/tolomeo",
         "price": 289},
        {"name": "Brass reading lamp", "url": "https://shop.example.com/products/brass",
         "price": 149},
    ],
    "offer": {"code": "ARCO15", "percent": 15},
}


def views(*minutes: int) -> list[dict[str, Any]]:
    pages = ["products/arco", "categories/lighting", "products/tolomeo", "products/arco"]
    return [{"at": f"+{m}m", "event": "page_viewed",
             "properties": {"url": f"https://shop.example.com/{pages[i % 4]}"}}
            for i, m in enumerate(minutes)]


class Recording:
    """A provider that remembers the rendered messages it is given, then lets `inner` send."""

    def __init__(self, inner: Provider, seen: list[OutgoingMessage], store: Store) -> None:
        self.inner = inner
        self.seen = seen
        self.store = store
        self.name = inner.name
        self.channels = inner.channels
        self.idempotent = inner.idempotent

    async def send(self, message: OutgoingMessage) -> Receipt:
        self.seen.append(await untracked(self.store, message))  # links as written
        return await self.inner.send(message)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def recs_calls() -> list[dict[str, Any]]:
    return []


@pytest.fixture(scope="module")
def recs_server(recs_calls: list[dict[str, Any]]) -> Iterator[StandInServer]:
    """The shop's recommendation service: browsing history, searches and picks per contact."""

    async def browsing(request: Request) -> Response:
        body = await request.body()
        signed = verify_signature(SECRET, request.headers.get("x-cairn-timestamp"), body,
                                  request.headers.get("x-cairn-signature"))
        recs_calls.append({"method": request.method, "path": request.url.path,
                           "query": request.url.query, "signed": signed})
        if not signed:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        return JSONResponse(BROWSING)

    app = Starlette(routes=[Route("/v1/contacts/{contact}/browsing", browsing,
                                  methods=["GET"])])
    with StandInServer(app) as server:
        yield server


def shoppers_against(server: StandInServer) -> Journey:
    """The catalog journey with its webhook pointed at the local recommendation service."""
    journey = load(SHOPPERS)
    step = journey.steps["fetch_history"]
    assert isinstance(step, WebhookStep)
    url = step.webhook.url.replace("https://recs.example.com", server.url)
    moved = step.model_copy(update={"webhook": step.webhook.model_copy(update={"url": url})})
    return journey.model_copy(update={"steps": {**journey.steps, "fetch_history": moved}})


def recording(seen: list[OutgoingMessage]) -> Callable[[Store], ChannelSet]:
    def build(store: Store) -> ChannelSet:
        local = local_channels(store)
        return ChannelSet(
            providers={name: Recording(p, seen, store) for name, p in local.providers.items()},
            webhooks=WebhookCaller(WebhookSettings(signing_secret=SecretStr(SECRET))),
        )
    return build


async def test_window_shopper_push_offer_recommendations_then_sms(
    simulator: Simulator, tmp_path: Path, recs_server: StandInServer,
    recs_calls: list[dict[str, Any]],
) -> None:
    seen: list[OutgoingMessage] = []
    shopper = scenario(*views(0, 5, 10, 15), until="+2d", now=WS_NOW, push_tokens=["tok-1"])
    report = await simulator.run(
        shoppers_against(recs_server), parse_scenario(shopper),
        audience_folder=audience_folder(tmp_path, ["repeat_browsers"], scoring=False),
        channels=recording(seen),
    )
    assert report.outcome == "waiting"  # resting in the week-long cooldown
    assert path(report, WS_START) == [
        ("checkout_within_1h", timedelta(0)), ("repeat_browser", H), ("fetch_history", H),
        ("offer", H), ("checkout_within_30m", H), ("recommendations", 90 * M),
        ("checkout_within_12h", 90 * M), ("sms_offer", 13 * H + 30 * M),
        ("cooldown", 22 * H),
    ]
    assert note(report, "repeat_browser") == "then: in segment repeat_browsers"
    # 12 hours after the email it is 23:30 in Bucharest: the SMS waits for 08:00 (06:00 UTC).
    assert sends(report, WS_START) == [
        ("offer", "push", "window-shopper-offer", "sent", H),
        ("recommendations", "email", "window-shopper-recommendations", "sent", 90 * M),
        ("sms_offer", "sms", "window-shopper-sms", "sent", 22 * H),
    ]
    assert [(w.step, w.method, w.status) for w in report.webhooks] == [
        ("fetch_history", "GET", "sent")]
    assert recs_calls[-1] == {"method": "GET", "path": "/v1/contacts/c-1/browsing",
                              "query": "limit=3", "signed": True}
    # The messages are written from the service's answer.
    push, email, sms = seen
    assert push.parts["title"] == "Still thinking about Arco floor lamp?"
    assert "15% off" in push.parts["body"] and "ARCO15" in push.parts["body"]
    assert push.parts["url"] == "https://shop.example.com/products/arco"
    assert '"floor lamp", "brass"' in email.parts["body"]
    assert "Tolomeo floor lamp (289 EUR): https://shop.example.com/products/tolomeo" \
        in email.parts["body"]
    assert "/unsubscribe" in email.parts["body"]
    assert sms.parts["body"].startswith("Ana, 15% off Tolomeo floor lamp and more")


async def test_window_shopper_on_site_offer_then_thank_you(simulator: Simulator,
                                                          tmp_path: Path) -> None:
    # No app: the offer shows on the site; buying 20 minutes later earns the thank-you email.
    bought = {"at": "+80m", "event": "checkout_completed", "properties": {"order_id": "o-9"}}
    shopper = scenario(*views(0, 5, 10, 15), bought, until="+2d", now=WS_NOW)
    report = await simulator.run(
        load(SHOPPERS), parse_scenario(shopper),
        audience_folder=audience_folder(tmp_path, ["repeat_browsers"], scoring=False),
    )
    assert report.outcome == "ended:converted"
    assert path(report, WS_START) == [
        ("checkout_within_1h", timedelta(0)), ("repeat_browser", H), ("fetch_history", H),
        ("offer", H), ("checkout_within_30m", H), ("thank_you", 80 * M),
        ("converted_after_offer", 80 * M),
    ]
    assert sends(report, WS_START) == [
        ("offer", "on_site", "window-shopper-offer", "sent", H),
        ("thank_you", "email", "window-shopper-thanks", "sent", 80 * M),
    ]
    # Without real webhooks the simulator only records the call (the templates' defaults apply).
    assert [(w.step, w.status) for w in report.webhooks] == [("fetch_history", "recorded")]


async def test_window_shopper_buying_after_the_email_ends_converted(simulator: Simulator,
                                                                   tmp_path: Path) -> None:
    bought = {"at": "+5h", "event": "checkout_completed"}
    shopper = scenario(*views(0, 5, 10, 15), bought, until="+2d", now=WS_NOW,
                       push_tokens=["tok-1"])
    report = await simulator.run(
        load(SHOPPERS), parse_scenario(shopper),
        audience_folder=audience_folder(tmp_path, ["repeat_browsers"], scoring=False),
    )
    assert report.outcome == "ended:converted"
    assert report.steps[-2:] == ["checkout_within_12h", "converted_after_email"]
    assert after(report.path[-1].at, WS_START) == 5 * H
    assert [(step, channel) for step, channel, *_ in sends(report, WS_START)] == [
        ("offer", "push"), ("recommendations", "email")]


async def test_window_shopper_not_a_repeat_browser_or_bought_alone(simulator: Simulator,
                                                                  tmp_path: Path) -> None:
    folder = audience_folder(tmp_path, ["repeat_browsers"], scoring=False)
    # Two views: not (yet) a repeat browser.
    two = await simulator.run(load(SHOPPERS),
                              parse_scenario(scenario(*views(0, 5), until="+1d", now=WS_NOW)),
                              audience_folder=folder)
    assert two.outcome == "ended:not_a_repeat_browser"
    assert path(two, WS_START) == [("checkout_within_1h", timedelta(0)),
                                   ("repeat_browser", H), ("not_a_repeat_browser", H)]
    assert note(two, "repeat_browser").startswith("else")
    assert two.sends == [] and two.webhooks == []
    # Four views but a purchase within the hour: they did not need a nudge.
    bought = {"at": "+40m", "event": "checkout_completed"}
    alone = await simulator.run(
        load(SHOPPERS),
        parse_scenario(scenario(*views(0, 5, 10, 15), bought, until="+1d", now=WS_NOW)),
        audience_folder=folder,
    )
    assert alone.outcome == "ended:bought_on_their_own"
    assert path(alone, WS_START) == [("checkout_within_1h", timedelta(0)),
                                     ("bought_on_their_own", 40 * M)]
    assert alone.sends == [] and alone.webhooks == []


# =========================================================================== engagement scoring

SCORING = "engagement-scoring"


def entered(segment: str, at: str) -> dict[str, Any]:
    """What the segment sweep stores when a contact crosses an inactivity line."""
    return {"at": at, "event": "segment_entered", "properties": {"segment": segment}}


async def test_engagement_d60_takes_50_points(simulator: Simulator) -> None:
    report = await simulator.run(load(SCORING), parse_scenario(
        scenario(entered("inactive_60d", "+1h"), until="+1d", scores={"global": 20})))
    assert report.outcome == "completed"
    assert path(report) == [("which_segment", H), ("penalty_60d", H)]
    assert note(report, "penalty_60d") == "global -50 = -30"
    assert scores(report) == [(H, "global", -50, -30)]


async def test_engagement_rules_and_journey_share_the_work(simulator: Simulator,
                                                          tmp_path: Path) -> None:
    """+10 / -10 and D-30 come from scoring/engagement.yaml; D-60 and D-90 from the journey."""
    events = [
        {"at": "+0s", "event": "form_submitted"},                  # rule +10 -> 10
        {"at": "+1h", "event": "email_clicked"},                   # rule +10 -> 20
        {"at": "+2h", "event": "push_dismissed"},                  # rule -10 -> 10
        entered("inactive_30d", "+30d"),                           # rule -50 -> -40
        entered("inactive_60d", "+60d"),                           # journey -50 -> -90
        entered("inactive_90d", "+90d"),                           # journey -50 -> -140
    ]
    report = await simulator.run(
        load(SCORING), parse_scenario(scenario(*events, until="+91d")),
        audience_folder=audience_folder(tmp_path, ["inactive_30d"], scoring=True),
    )
    assert report.outcome == "completed"
    assert path(report) == [("which_segment", 60 * D), ("penalty_60d", 60 * D),
                            ("which_segment", 90 * D), ("penalty_90d", 90 * D)]
    # Each entry notes its change and the total after it. (report.scores lists only the last
    # entry's changes when entries have different workflow ids: a simulator limitation.)
    assert note(report, "penalty_60d") == "global -50 = -90"
    assert note(report, "penalty_90d") == "global -50 = -140"
    assert scores(report)[-1] == (90 * D, "global", -50, -140)


async def test_engagement_d30_is_left_to_the_scoring_rule(simulator: Simulator) -> None:
    report = await simulator.run(load(SCORING), parse_scenario(
        scenario(entered("inactive_30d", "+1h"), until="+1d")))
    assert report.outcome == "not_entered"
    assert report.path[0].note.startswith("not entered: trigger.where")
    assert report.scores == []


async def test_engagement_d60_and_d90_together_both_count(simulator: Simulator) -> None:
    # A first sweep after a long absence moves the contact into both segments at once.
    report = await simulator.run(load(SCORING), parse_scenario(scenario(
        entered("inactive_60d", "+1h"), entered("inactive_90d", "+1h"), until="+1d")))
    assert path(report) == [("which_segment", H), ("penalty_60d", H),
                            ("which_segment", H), ("penalty_90d", H)]
    totals = sorted([note(report, "penalty_60d"), note(report, "penalty_90d")])
    assert totals == ["global -50 = -100", "global -50 = -50"]


# =========================================================================== cold users

COLD = "cold-user-reactivation"
WEB_PUSH = [{"endpoint": "https://push.example/ana",
             "keys": {"p256dh": "BNcR", "auth": "tBHI"}}]


async def test_cold_user_score_below_minus_100_web_push_then_login(simulator: Simulator,
                                                                  tmp_path: Path) -> None:
    """A dismissed push takes the score under -100: the cold_users segment starts the journey."""
    events = [{"at": "+0s", "event": "push_dismissed"},           # rule -10: -95 -> -105
              {"at": "+30h", "event": "login"}]
    report = await simulator.run(
        load(COLD), parse_scenario(scenario(*events, until="+3d", web_push=WEB_PUSH,
                                            scores={"global": -95})),
        audience_folder=audience_folder(tmp_path, ["inactive_30d", "cold_users"],
                                        scoring=True),
    )
    assert report.outcome == "ended:reactivated"
    assert path(report) == [("first_touch", timedelta(0)), ("login_within_2d", timedelta(0)),
                            ("reactivated", 30 * H), ("welcome_back", 30 * H)]
    assert sends(report) == [("first_touch", "web_push", "cold-user-comeback", "sent",
                              timedelta(0))]
    assert scores(report) == [(30 * H, "global", 10, -95)]


async def test_cold_user_never_back_gets_every_follow_up(simulator: Simulator) -> None:
    report = await simulator.run(load(COLD), parse_scenario(
        scenario(entered("cold_users", "+0s"), until="+90d")))
    assert report.outcome == "ended:still_cold"
    assert path(report) == [
        ("first_touch", timedelta(0)), ("login_within_2d", timedelta(0)),
        ("latest_content", 2 * D), ("login_within_10d", 2 * D),
        ("highlights", 12 * D), ("login_within_30d", 12 * D),
        ("comeback_offer", 42 * D), ("login_within_45d", 42 * D),
        ("last_call", 87 * D), ("still_cold", 87 * D),
    ]
    assert sends(report) == [
        ("first_touch", "email", "cold-user-comeback", "sent", timedelta(0)),
        ("latest_content", "email", "cold-user-latest-content", "sent", 2 * D),
        ("highlights", "email", "cold-user-highlights", "sent", 12 * D),
        ("comeback_offer", "email", "cold-user-offer", "sent", 42 * D),
        ("last_call", "email", "cold-user-last-call", "sent", 87 * D),
    ]
    assert report.scores == []


async def test_cold_user_back_in_the_ten_day_window(simulator: Simulator) -> None:
    events = [entered("cold_users", "+0s"), {"at": "+9d", "event": "login"}]
    report = await simulator.run(load(COLD), parse_scenario(
        scenario(*events, until="+30d", web_push=WEB_PUSH, scores={"global": -40})))
    assert report.outcome == "ended:reactivated"
    assert report.steps == ["first_touch", "login_within_2d", "latest_content",
                            "login_within_10d", "reactivated", "welcome_back"]
    assert sends(report) == [
        ("first_touch", "web_push", "cold-user-comeback", "sent", timedelta(0)),
        ("latest_content", "email", "cold-user-latest-content", "sent", 2 * D),
    ]
    assert scores(report) == [(9 * D, "global", 10, -30)]
