"""The ActiveCollab journeys of the catalog, played on the simulator.

Birthday email, purchase confirmation, newsletter push invitation, price-change newsletter,
holiday token of appreciation per segment, and Facebook custom-audience sync of segments (from
ActiveCollab's article on automating communication with users). Each test plays a scenario
through the real interpreter, ingest, router and, where segments must apply, the catalog's own
`journeys/segments` and `scoring`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from cairn.channels.base import OutgoingMessage, Receipt
from cairn.channels.facebook import FacebookAudienceSyncer, FacebookSettings
from cairn.channels.local import OutboxProvider
from cairn.channels.registry import ChannelSet, local_channels
from cairn.date_triggers import due_date
from cairn.journey import Journey
from cairn.journey_files import load_journey
from cairn.store.db import Store
from starter.testing import SimulationReport, Simulator, parse_scenario
from tests.links_support import untracked
from tests.standins import facebook as fb_standin
from tests.standins.server import Script, StandInServer

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = ROOT / "journeys"


def journey(key: str) -> Journey:
    return load_journey(JOURNEYS / f"{key}.yaml")


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_at(actual: datetime, expected: datetime) -> None:
    """Real processing time runs on the simulated clock too: allow a few seconds, never less."""
    assert expected <= actual < expected + timedelta(seconds=30), (actual, expected)


def sends(report: SimulationReport) -> list[tuple[str | None, str | None, str | None, str]]:
    return [(s.step, s.channel, s.template, s.status) for s in report.sends]


class RecordingOutbox(OutboxProvider):
    """The outbox, keeping every rendered message so a test can read what the contact got
    (its tracked links put back to their targets)."""

    records_only = False  # called once the claim and its links are committed

    def __init__(self) -> None:
        super().__init__(("email",))
        self.messages: list[OutgoingMessage] = []
        self.store: Store | None = None

    async def send(self, message: OutgoingMessage) -> Receipt:
        assert self.store is not None
        self.messages.append(await untracked(self.store, message))
        return await super().send(message)


def recording(outbox: RecordingOutbox) -> Any:
    def channels(store: Store) -> ChannelSet:
        outbox.store = store
        return ChannelSet(providers={**local_channels(store).providers, "email": outbox})
    return channels


# --------------------------------------------------------------------------- birthday-email

BIRTHDAY = journey("birthday-email")


def hourly_sweep_emission(attributes: dict[str, Any], timezone: str | None,
                          day: date) -> datetime | None:
    """The first run of the hourly date sweep (on the hour, UTC) that emits the birthday on `day`.

    The same `due_date` the sweep activity applies, over the hours around that day.
    """
    trigger = BIRTHDAY.trigger.date_attribute
    assert trigger is not None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    for hour in range(72):
        run = start + timedelta(hours=hour)
        if due_date(trigger, attributes, timezone, BIRTHDAY.settings.timezone, run) == day:
            return run
    return None


def birthday_scenario(run: datetime, *, tz: str, consent: bool = True,
                      attribute: str = "birthday") -> dict[str, Any]:
    local_day = run.astimezone(ZoneInfo(tz)).date().isoformat()
    return {
        "now": "2026-03-04T12:00:00Z",
        "contact": {"id": "ana", "timezone": tz, "email": "ana@example.com",
                    "consent": {"marketing": consent},
                    "attributes": {"first_name": "Ana", "birthday": "1990-03-05"}},
        "events": [{
            "at": run.isoformat(), "event": "date_attribute_reached",
            "properties": {"attribute": attribute, "journey": "birthday-email",
                           "date": local_day},
            "message_id": f"date/birthday-email/ana/{local_day}",
        }],
        "until": "2026-03-07T00:00:00Z",
    }


def test_the_date_sweep_emits_the_birthday_at_ten_local_time() -> None:
    birthday = {"birthday": "1990-03-05"}
    # 10:00 in New York (UTC-5 in March) is 15:00 UTC; in Tokyo (UTC+9) 01:00 UTC.
    assert hourly_sweep_emission(birthday, "America/New_York", date(2026, 3, 5)) == \
        moment("2026-03-05T15:00:00Z")
    assert hourly_sweep_emission(birthday, "Asia/Tokyo", date(2026, 3, 5)) == \
        moment("2026-03-05T01:00:00Z")
    # Not on another day, and not for a contact born on another date.
    assert hourly_sweep_emission(birthday, "America/New_York", date(2026, 3, 6)) is None
    assert hourly_sweep_emission({"birthday": "1990-03-06"}, "America/New_York",
                                 date(2026, 3, 5)) is None
    # Born on 29 February: greeted on the 28th in other years.
    assert hourly_sweep_emission({"birthday": "2000-02-29"}, "UTC", date(2026, 2, 28)) == \
        moment("2026-02-28T10:00:00Z")


async def test_birthday_email_goes_at_ten_in_the_contacts_time_zone(
    simulator: Simulator,
) -> None:
    run = hourly_sweep_emission({"birthday": "1990-03-05"}, "America/New_York", date(2026, 3, 5))
    assert run is not None
    report = await simulator.run(BIRTHDAY, parse_scenario(birthday_scenario(
        run, tz="America/New_York")))
    assert report.outcome == "completed", report.path
    assert report.steps == ["greet"]
    assert sends(report) == [("greet", "email", "birthday-email", "sent")]
    assert_at(report.sends[0].at, moment("2026-03-05T15:00:00Z"))  # 10:00 in New York


async def test_no_birthday_email_without_marketing_consent(simulator: Simulator) -> None:
    run = moment("2026-03-05T15:00:00Z")
    report = await simulator.run(BIRTHDAY, parse_scenario(birthday_scenario(
        run, tz="America/New_York", consent=False)))
    assert report.outcome == "completed"
    assert report.steps == ["greet"]
    assert sends(report) == [("greet", "email", "birthday-email", "skipped:consent")]
    assert "no marketing consent" in report.sends[0].reason


async def test_another_date_attribute_does_not_start_the_birthday_email(
    simulator: Simulator,
) -> None:
    run = moment("2026-03-05T15:00:00Z")
    report = await simulator.run(BIRTHDAY, parse_scenario(birthday_scenario(
        run, tz="America/New_York", attribute="signup_date")))
    assert report.outcome == "not_entered"
    assert report.sends == []
    assert report.path[0].note.startswith(
        "not entered: no event matched the trigger date_attribute birthday")


# --------------------------------------------------------------------------- purchase-confirmation

PURCHASE = journey("purchase-confirmation")
ORDER = {
    "order_id": "A-1001", "total": 64.5, "currency": "USD",
    "products": [{"name": "Walnut desk organiser", "quantity": 1, "price": 49.5},
                 {"name": "Cable clips", "quantity": 3, "price": 5}],
    "shipping_address": {"name": "Ana Pop", "line1": "Strada Lipscani 12", "line2": "Ap. 4",
                         "postal_code": "030031", "city": "Bucharest", "country": "Romania"},
}


def purchase_scenario(*orders: dict[str, Any], consent: dict[str, Any]) -> dict[str, Any]:
    return {
        "now": "2026-03-02T22:30:00Z",   # 00:30 in Bucharest: transactional ignores the hour
        "contact": {"id": "ana", "timezone": "Europe/Bucharest", "email": "ana@example.com",
                    "consent": consent, "attributes": {"first_name": "Ana"}},
        "events": [{"at": f"+{i}m", "event": "purchase", "properties": order}
                   for i, order in enumerate(orders)],
        "until": "+1h",
    }


async def test_purchase_confirmation_carries_the_delivery_address(simulator: Simulator) -> None:
    outbox = RecordingOutbox()
    report = await simulator.run(
        PURCHASE, parse_scenario(purchase_scenario(ORDER, consent={"marketing": True})),
        channels=recording(outbox),
    )
    assert report.outcome == "completed", report.path
    assert report.steps == ["confirm"]
    assert sends(report) == [("confirm", "email", "purchase-confirmation", "sent")]
    assert_at(report.sends[0].at, moment("2026-03-02T22:30:00Z"))
    (message,) = outbox.messages
    assert message.to == "ana@example.com"
    assert message.category == "transactional"
    assert message.parts["subject"] == "Your order A-1001 is confirmed"
    body = message.parts["body"]
    assert "We will deliver it to:\n  Ana Pop\n  Strada Lipscani 12\n  Ap. 4\n" \
        "  030031 Bucharest\n  Romania\n" in body
    assert "1 x Walnut desk organiser, 49.5 USD" in body
    assert "3 x Cable clips, 5 USD" in body
    assert "Total: 64.5 USD" in body


async def test_purchase_confirmation_goes_without_marketing_consent(
    simulator: Simulator,
) -> None:
    outbox = RecordingOutbox()
    digital = {"order_id": "A-1002", "total": 9.0,
               "products": [{"name": "Gift card", "quantity": 1, "price": 9}]}
    report = await simulator.run(
        PURCHASE,
        parse_scenario(purchase_scenario(ORDER, digital, consent={"marketing": False})),
        channels=recording(outbox),
    )
    # Two orders, two entries (keyed by order id), two confirmations.
    assert report.steps == ["confirm", "confirm"]
    assert sends(report) == [("confirm", "email", "purchase-confirmation", "sent")] * 2
    assert_at(report.sends[0].at, moment("2026-03-02T22:30:00Z"))
    assert_at(report.sends[1].at, moment("2026-03-02T22:31:00Z"))
    assert [m.parts["subject"] for m in outbox.messages] == [
        "Your order A-1001 is confirmed", "Your order A-1002 is confirmed"]
    assert "This order has nothing to ship" in outbox.messages[1].parts["body"]
    assert "deliver it to" not in outbox.messages[1].parts["body"]


async def test_purchase_confirmation_respects_a_refusal_of_transactional_email(
    simulator: Simulator,
) -> None:
    report = await simulator.run(PURCHASE, parse_scenario(purchase_scenario(
        ORDER, consent={"email": {"transactional": False}})))
    assert sends(report) == [("confirm", "email", "purchase-confirmation", "skipped:consent")]


# --------------------------------------------------------------------------- newsletter invite

INVITE = journey("newsletter-push-invitation")
FROM_GOOGLE = {"url": "https://shop.example.com/guides/standing-desks",
               "referrer": "https://www.google.com/"}


def invite_scenario(page: dict[str, Any], *, score: int, segments: list[str] | None = None,
                    **attributes: Any) -> dict[str, Any]:
    return {
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "ana", "timezone": "Europe/Bucharest", "email": "ana@example.com",
                    "push_tokens": ["tok-1"], "consent": {"marketing": True},
                    "attributes": {"first_name": "Ana", **attributes},
                    "scores": {"global": score}, "segments": segments or []},
        "events": [{"at": "+5m", "event": "page_viewed", "properties": page}],
        "until": "+1h",
    }


async def test_organic_visitor_above_50_is_invited_by_push_once(simulator: Simulator) -> None:
    scenario = invite_scenario(FROM_GOOGLE, score=60)
    scenario["events"].append({"at": "+2d", "event": "page_viewed", "properties": FROM_GOOGLE})
    scenario["until"] = "+3d"
    report = await simulator.run(INVITE, parse_scenario(scenario))
    assert report.outcome == "completed", report.path
    assert report.steps == ["qualifies", "can_push", "invite", "remember", "qualifies"]
    assert sends(report) == [("invite", "push", "newsletter-push-invitation", "sent")]
    assert_at(report.sends[0].at, moment("2026-03-02T09:05:00Z"))
    # The second organic visit, two days later, finds the invitation remembered.
    assert_at(report.path[4].at, moment("2026-03-04T09:00:00Z"))
    assert report.path[4].note.startswith("else: ")
    assert "attribute newsletter_invited: ne True failed" in report.path[4].note


@pytest.mark.parametrize(
    ("score", "segments", "attributes", "why"),
    [
        (50, [], {}, "score global=50: gt 50 failed"),
        (75, ["newsletter_subscribers"], {}, "in segment newsletter_subscribers"),
        (75, [], {"newsletter_invited": True}, "attribute newsletter_invited: ne True failed"),
    ],
)
async def test_no_invitation_at_50_for_subscribers_or_twice(
    simulator: Simulator, score: int, segments: list[str], attributes: dict[str, Any], why: str,
) -> None:
    report = await simulator.run(INVITE, parse_scenario(invite_scenario(
        FROM_GOOGLE, score=score, segments=segments, **attributes)))
    assert report.outcome == "completed"
    assert report.steps == ["qualifies"]
    assert report.path[0].note.startswith("else: ") and why in report.path[0].note
    assert report.sends == []


@pytest.mark.parametrize(
    "page",
    [
        {"url": "https://shop.example.com/", "referrer": "https://news.example.org/post"},
        {"url": "https://shop.example.com/?gclid=abc123", "referrer": "https://www.google.com/"},
        {"url": "https://shop.example.com/?utm_source=bing&utm_medium=cpc",
         "referrer": "https://www.bing.com/"},
        {"url": "https://shop.example.com/", "referrer": "https://google.evil.example/"},
        {"url": "https://shop.example.com/"},
    ],
    ids=["other-site", "google-ads-click", "bing-cpc", "look-alike-domain", "direct"],
)
async def test_visits_not_from_organic_search_do_not_enter(
    simulator: Simulator, page: dict[str, Any],
) -> None:
    report = await simulator.run(INVITE, parse_scenario(invite_scenario(page, score=90)))
    assert report.outcome == "not_entered"
    assert report.path[0].note.startswith("not entered: trigger.where")
    assert report.sends == []


async def test_organic_search_told_by_the_backend_and_no_push_token(
    simulator: Simulator,
) -> None:
    page = {"url": "https://shop.example.com/", "traffic_source": "organic_search"}
    scenario = invite_scenario(page, score=60)
    scenario["contact"]["push_tokens"] = []
    report = await simulator.run(INVITE, parse_scenario(scenario))
    assert report.outcome == "completed"
    assert report.steps == ["qualifies", "can_push"]
    assert report.path[1].note == "else: push: no push token"
    assert report.sends == []


# --------------------------------------------------------------------------- price change

PRICE = journey("price-change-newsletter")


def price_event(product: str, old: float, new: float, at: str = "+0s") -> dict[str, Any]:
    return {"at": at, "event": "product_price_changed",
            "properties": {"product_id": product, "name": f"Desk {product}", "old_price": old,
                           "new_price": new, "currency": "USD",
                           "change_pct": round((new - old) / old * 100, 2)}}


def price_scenario(*events: dict[str, Any], subscribed: bool = True) -> dict[str, Any]:
    return {
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "ana", "timezone": "Europe/Bucharest", "email": "ana@example.com",
                    "consent": {"marketing": True},
                    "attributes": {"first_name": "Ana", "newsletter_subscribed": subscribed}},
        "events": list(events),
        "until": "+1d",
    }


async def test_price_changes_over_15_percent_reach_subscribers(simulator: Simulator) -> None:
    outbox = RecordingOutbox()
    scenario = price_scenario(
        price_event("d-1", 200, 160),             # -20%: a drop
        price_event("d-2", 100, 110, at="+1h"),   # +10%: not news
        price_event("d-3", 100, 118, at="+2h"),   # +18%: a rise
    )
    report = await simulator.run(PRICE, parse_scenario(scenario), channels=recording(outbox),
                                 audience_folder=JOURNEYS)
    assert report.steps == ["subscriber", "newsletter", "subscriber", "newsletter"]
    assert sends(report) == [("newsletter", "email", "price-change-newsletter", "sent")] * 2
    assert_at(report.sends[0].at, moment("2026-03-02T09:00:00Z"))
    assert_at(report.sends[1].at, moment("2026-03-02T11:00:00Z"))
    drop, rise = outbox.messages
    assert drop.parts["subject"] == "Desk d-1 is now 20% cheaper"
    assert "Was:       200 USD\n  Now:       160 USD\n  Change:    -20.0%" in drop.parts["body"]
    assert "https://shop.example.com/products/d-1" in drop.parts["body"]
    assert rise.parts["subject"] == "Desk d-3: the price goes up 18%"
    assert "Unsubscribe: http" in rise.parts["body"]


async def test_price_change_skips_contacts_who_are_not_subscribed(simulator: Simulator) -> None:
    report = await simulator.run(
        PRICE, parse_scenario(price_scenario(price_event("d-1", 200, 160), subscribed=False)),
        audience_folder=JOURNEYS,
    )
    assert report.outcome == "completed"
    assert report.steps == ["subscriber"]
    assert report.path[0].note == "else: not in segment newsletter_subscribers"
    assert report.sends == []


async def test_price_change_of_15_percent_exactly_is_not_sent(simulator: Simulator) -> None:
    report = await simulator.run(
        PRICE, parse_scenario(price_scenario(price_event("d-1", 200, 170))),
        audience_folder=JOURNEYS,
    )
    assert report.outcome == "not_entered"
    assert report.sends == []


# --------------------------------------------------------------------------- holiday tokens

HOLIDAY = journey("holiday-appreciation")
FIRED = {"at": "2026-12-22T09:00:00Z", "event": "schedule_fired",
         "properties": {"journey": "holiday-appreciation", "occurrence": "2026-12-22T09:00:00Z"}}


def holiday_scenario(*totals: float, score: int, tz: str = "Europe/Bucharest") -> dict[str, Any]:
    """Purchases a week apart from 1 December, then the schedule's occurrence on 22 December."""
    purchases = [{"at": f"+{7 * i}d", "event": "purchase",
                  "properties": {"order_id": f"o-{i}", "total": total}}
                 for i, total in enumerate(totals)]
    return {
        "now": "2026-12-01T12:00:00Z",
        "contact": {"id": "ana", "timezone": tz, "email": "ana@example.com",
                    "consent": {"marketing": True}, "attributes": {"first_name": "Ana"},
                    "scores": {"global": score}},
        "events": [*purchases, FIRED],
        "until": "2026-12-23T09:00:00Z",
    }


@pytest.mark.parametrize(
    ("totals", "score", "steps", "template"),
    [
        ((40, 45), 45, ["is_vip", "vip_token"], "holiday-token-vip"),
        ((40, 45), 30, ["is_vip", "is_frequent_buyer", "frequent_buyer_token"],
         "holiday-token-frequent-buyer"),
        ((20, 25), 90, ["is_vip", "is_frequent_buyer", "frequent_buyer_token"],
         "holiday-token-frequent-buyer"),   # score 90 but only $45 spent: not VIP
        ((80,), 90, ["is_vip", "is_frequent_buyer", "is_buyer", "buyer_token"],
         "holiday-token-buyer"),
    ],
    ids=["vip", "frequent-low-score", "frequent-small-spend", "buyer"],
)
async def test_holiday_token_differs_per_segment(
    simulator: Simulator, totals: tuple[float, ...], score: int, steps: list[str],
    template: str,
) -> None:
    report = await simulator.run(HOLIDAY, parse_scenario(holiday_scenario(*totals, score=score)),
                                 audience_folder=JOURNEYS)
    assert report.outcome == "completed", report.path
    assert report.steps == steps
    assert sends(report) == [(steps[-1], "email", template, "sent")]
    assert_at(report.sends[0].at, moment("2026-12-22T09:00:00Z"))


async def test_customer_in_no_segment_gets_no_token(simulator: Simulator) -> None:
    report = await simulator.run(HOLIDAY, parse_scenario(holiday_scenario(30, score=90)),
                                 audience_folder=JOURNEYS)
    assert report.outcome == "completed"
    assert report.steps == ["is_vip", "is_frequent_buyer", "is_buyer"]
    assert report.path[-1].note.startswith("else: not in segment buyers")
    assert report.sends == []


async def test_holiday_token_waits_for_morning_where_it_is_night(simulator: Simulator) -> None:
    scenario = holiday_scenario(40, 45, score=45, tz="America/Los_Angeles")
    report = await simulator.run(HOLIDAY, parse_scenario(scenario), audience_folder=JOURNEYS)
    assert report.outcome == "completed", report.path
    assert report.steps == ["is_vip", "vip_token"]
    assert sends(report) == [("vip_token", "email", "holiday-token-vip", "sent")]
    # 09:00 UTC is 01:00 in Los Angeles: quiet hours hold it until 08:00 there (16:00 UTC).
    assert_at(report.sends[0].at, moment("2026-12-22T16:00:00Z"))


# --------------------------------------------------------------------------- Facebook audiences

FACEBOOK = journey("facebook-audience-sync")


def audiences(report: SimulationReport) -> list[tuple[int, str | None, str | None, str | None,
                                                      str]]:
    """(days after the start, step, audience, action, status), ordered by time then audience."""
    start = moment("2026-03-02T09:00:00Z")
    return sorted(
        ((a.at - start).days, a.step, a.audience, a.action, a.status)
        for a in report.audiences
    )


def facebook_scenario(*later: dict[str, Any]) -> dict[str, Any]:
    return {
        "now": "2026-03-02T09:00:00Z",
        "contact": {"id": "ana", "email": "Ana@Example.com", "phone": "+40722000000",
                    "scores": {"global": 45}},
        "events": [
            {"at": "+0s", "event": "purchase", "properties": {"order_id": "o-1", "total": 40}},
            {"at": "+3d", "event": "purchase", "properties": {"order_id": "o-2", "total": 45}},
            *later,
        ],
        "until": "+45d",
    }


FB_IDS = {"buyers": "23850000000000011", "frequent_buyers": "23850000000000012",
          "vip": "23850000000000013"}


async def test_entering_segments_adds_and_leaving_them_removes(simulator: Simulator) -> None:
    # +3d: $85 spent, 2 purchases in 30 days, score 45: buyers, frequent_buyers and vip.
    # +40d: a login re-decides the segments; the purchases are older than 30 days now, so the
    # contact leaves frequent_buyers, and with it vip. Buyers stays.
    state = fb_standin.GraphState(audiences={audience_id: set() for audience_id in
                                             FB_IDS.values()})
    with StandInServer(fb_standin.facebook_app(Script(), state)) as graph:
        settings = FacebookSettings(access_token=SecretStr(fb_standin.TOKEN),
                                    base_url=graph.url, audiences=FB_IDS, timeout=5.0)

        def channels(store: Store) -> ChannelSet:
            return ChannelSet(providers=local_channels(store).providers,
                              audiences={"facebook": FacebookAudienceSyncer(settings)})

        report = await simulator.run(
            FACEBOOK, parse_scenario(facebook_scenario({"at": "+40d", "event": "login"})),
            audience_folder=JOURNEYS, channels=channels,
        )
    assert audiences(report) == [
        (3, "add_buyers", "buyers", "add", "sent"),
        (3, "add_frequent_buyers", "frequent_buyers", "add", "sent"),
        (3, "add_vip", "vip", "add", "sent"),
        (40, "remove_frequent_buyers", "frequent_buyers", "remove", "sent"),
        (40, "remove_vip", "vip", "remove", "sent"),
    ]
    assert all(a.sync == "facebook" for a in report.audiences)
    # On Facebook: the hashed, normalised email and phone in buyers; the others empty again.
    ana = frozenset({("EMAIL", sha256(b"ana@example.com").hexdigest()),
                     ("PHONE", sha256(b"40722000000").hexdigest())})
    assert state.audiences == {FB_IDS["buyers"]: {ana}, FB_IDS["frequent_buyers"]: set(),
                               FB_IDS["vip"]: set()}
    assert sorted(report.steps) == sorted([
        "which_segment", "add_buyers", "buyers_left",
        "which_segment", "frequent_or_vip", "add_frequent_buyers", "frequent_buyers_left",
        "remove_frequent_buyers",
        "which_segment", "frequent_or_vip", "add_vip", "vip_left", "remove_vip",
    ])
    assert report.sends == []


async def test_a_score_drop_removes_only_the_vip_audience(simulator: Simulator) -> None:
    # The engagement scoring takes 10 for a dismissed push: 45 -> 35, under VIP's 40. (No
    # Facebook account configured: the ledger records each change as `recorded`.)
    report = await simulator.run(
        FACEBOOK,
        parse_scenario(facebook_scenario({"at": "+10d", "event": "push_dismissed"})),
        audience_folder=JOURNEYS,
    )
    assert audiences(report) == [
        (3, "add_buyers", "buyers", "add", "recorded"),
        (3, "add_frequent_buyers", "frequent_buyers", "add", "recorded"),
        (3, "add_vip", "vip", "add", "recorded"),
        (10, "remove_vip", "vip", "remove", "recorded"),
    ]


async def test_segments_not_synced_do_not_enter(simulator: Simulator) -> None:
    scenario = facebook_scenario()
    scenario["events"] = scenario["events"][:1]   # one $40 purchase: customers, nothing synced
    report = await simulator.run(FACEBOOK, parse_scenario(scenario), audience_folder=JOURNEYS)
    assert report.outcome == "not_entered"
    assert report.audiences == []
