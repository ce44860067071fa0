"""The channel endpoints over a real store (SQLite, and PostgreSQL when configured): unsubscribe
links (RFC 8058 one-click), the in-app inbox, and Postmark and Twilio feedback webhooks.

Messages are sent through the real `DeliveryActivities` (run in Temporal's ActivityEnvironment)
with small in-test providers that answer with known provider message ids, so every webhook is
matched to its delivery the way production matches it. What is asserted is what the store holds
afterwards: consent, suppressions, inbox rows, feedback rows and the contact's events.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment

from activities.send import DeliveryActivities
from cairn.channels.base import OutgoingMessage, Provider, Receipt
from cairn.channels.postmark import PostmarkSettings, parse_postmark_webhook
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.twilio import compute_twilio_signature
from cairn.contact import ContactSnapshot
from cairn.contracts import SendOutcome, SendRequest, StepContext
from cairn.events.calls import TrackCall
from cairn.events.feedback import record_feedback
from cairn.events.ingest import Ingest, IngestResult
from cairn.journey import Send
from cairn.settings import Settings
from cairn.store import contacts
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryFeedback, Event, InboxMessage
from cairn.unsubscribe import UnsubscribeScope, unsubscribe_url
from starter.api.app import create_app
from tests.api_support import admin, basic

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PUBLIC_URL = "https://cairn.example.com"
SECRET = "test-workspace-key-0123456789"
TWILIO_TOKEN = "twilio-auth-token-test"
PHONE = "+40722000111"
TEMPLATE = {
    "email": {"subject": "Hello {{ contact.first_name }}",
              "body": "Offer inside. Unsubscribe: {{ unsubscribe_url }}"},
    "sms": {"body": "Offer for {{ contact.first_name }}"},
    "in_app": {"title": "Offer", "body": "Hi {{ contact.first_name }}"},
}
env = ActivityEnvironment()


# --------------------------------------------------------------------------- providers


class KnownIdProvider:
    """A provider answering with ids it makes up in order (`<prefix>1`, `<prefix>2`, ...),
    keeping every message it was handed."""

    idempotent = False

    def __init__(self, name: str, channel: str, prefix: str) -> None:
        self.name = name
        self.channels: tuple[str, ...] = (channel,)
        self.prefix = prefix
        self.sent: list[OutgoingMessage] = []
        self._ids = itertools.count(1)

    async def send(self, message: OutgoingMessage) -> Receipt:
        self.sent.append(message)
        return Receipt(self.name, f"{self.prefix}{next(self._ids)}", {"accepted": True})

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def settings(store: Store, tmp_path: Path) -> Settings:
    return Settings(database_url=store.url, home=tmp_path / "home", public_url=PUBLIC_URL,
                    secret_key=SecretStr(SECRET))


POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "s3cret"


class PostmarkOrAdmin(httpx.Auth):
    """Postmark's Basic credentials on its webhook (as Postmark sends them), an admin key on
    every other route; a request naming its own Authorization keeps it."""

    def __init__(self, store: Store) -> None:
        self.admin = admin(store)

    async def async_auth_flow(self, request: httpx.Request) -> Any:
        if request.url.path == "/v1/feedback/postmark" and "authorization" not in request.headers:
            request.headers.update(basic(POSTMARK_USER, POSTMARK_PASSWORD))
        async for prepared in self.admin.async_auth_flow(request):
            yield prepared


@pytest_asyncio.fixture
async def api(store: Store, settings: Settings,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_USERNAME", POSTMARK_USER)
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)
    app = create_app(store, Ingest(store, None), settings=settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test",
                                 auth=PostmarkOrAdmin(store)) as client:
        yield client


@pytest.fixture
def email_provider() -> KnownIdProvider:
    return KnownIdProvider("postmark", "email", "pm-")


@pytest.fixture
def sms_provider() -> KnownIdProvider:
    return KnownIdProvider("twilio", "sms", "SM0000000000000000000000000000000")


@pytest.fixture
def activities(store: Store, settings: Settings, email_provider: KnownIdProvider,
               sms_provider: KnownIdProvider) -> DeliveryActivities:
    """Delivery as the worker builds it: the app's public URL and signing key, the inbox for
    in-app, and the in-test providers for email and SMS."""
    providers: dict[str, Provider] = dict(local_channels(store).providers)
    providers["email"] = email_provider
    providers["sms"] = sms_provider
    return DeliveryActivities(store, ChannelSet(providers=providers),
                              public_url=settings.public_url,
                              signing_key=settings.signing_key())


# --------------------------------------------------------------------------- helpers


async def add_contact(store: Store, contact_id: str, **changes: Any) -> None:
    data: dict[str, Any] = {
        "id": contact_id, "timezone": "UTC", "email": f"{contact_id}@example.com",
        "phone": PHONE, "consent": {"marketing": True}, "attributes": {"first_name": "Ana"},
    }
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot.model_validate({**data, **changes}), NOW)


async def contact(store: Store, contact_id: str) -> ContactSnapshot:
    async with store.session() as s:
        found = await contacts.snapshot(s, contact_id)
    assert found is not None, contact_id
    return found


def send_request(contact_id: str, *, channels: list[str], step: str = "offer",
                 category: str = "marketing", topic: str | None = None) -> SendRequest:
    send = Send.model_validate({"channels": channels, "template": "offer", "category": category,
                                **({"topic": topic} if topic else {})})
    return SendRequest(
        context=StepContext(workflow_id=f"journey/offers/{contact_id}", journey_key="offers",
                            contact_id=contact_id, step=step, now=NOW),
        send=send, template=TEMPLATE,  # type: ignore[arg-type]
    )


async def plan(activities: DeliveryActivities, req: SendRequest) -> tuple[str, str | None]:
    planned = await env.run(activities.prepare_send, req)
    return planned.status, planned.channel


async def send(activities: DeliveryActivities, req: SendRequest) -> SendOutcome:
    planned = await env.run(activities.prepare_send, req)
    assert planned.status == "ready", planned
    outcome: SendOutcome = await env.run(activities.deliver_message,
                                         req.model_copy(update={"channel": planned.channel}))
    assert outcome.status == "sent", outcome
    return outcome


async def delivery(store: Store, delivery_id: int | None) -> Delivery:
    assert delivery_id is not None
    async with store.session() as s:
        row = await s.get(Delivery, delivery_id)
    assert row is not None
    return row


async def events(store: Store, contact_id: str, name: str | None = None) -> list[Event]:
    query = select(Event).where(Event.contact_id == contact_id, Event.type == "track")
    if name is not None:
        query = query.where(Event.name == name)
    async with store.session() as s:
        return list(await s.scalars(query.order_by(Event.id)))


async def feedback_rows(store: Store) -> list[DeliveryFeedback]:
    async with store.session() as s:
        return list(await s.scalars(select(DeliveryFeedback).order_by(DeliveryFeedback.id)))


async def event_count(store: Store) -> int:
    async with store.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Event)) or 0)


def local_part(url: str) -> str:
    """A link as the app sees it: path and query (the host is the public URL's)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL, url
    return f"{parts.path}?{parts.query}"


def token_of(url: str) -> str:
    [token] = parse_qs(urlsplit(url).query)["token"]
    return token


ONE_CLICK = {"content": b"List-Unsubscribe=One-Click",
             "headers": {"content-type": "application/x-www-form-urlencoded"}}


# --------------------------------------------------------------------------- unsubscribe


async def test_one_click_unsubscribe_from_a_sent_email_withdraws_email_marketing_once(
    api: httpx.AsyncClient, store: Store, settings: Settings, activities: DeliveryActivities,
    email_provider: KnownIdProvider,
) -> None:
    await add_contact(store, "u-1")
    await send(activities, send_request("u-1", channels=["email"]))
    [message] = email_provider.sent
    link = unsubscribe_url(settings.public_url, UnsubscribeScope("u-1", "email"),
                           settings.signing_key())
    # The link the activity put in the header and body is the one the app's key makes.
    assert message.headers == {"List-Unsubscribe": f"<{link}>",
                               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert link in message.parts["body"]

    page = await api.get(local_part(link))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<form method='post'>" in page.text
    assert f"name='token' value='{token_of(link)}'" in page.text
    assert "marketing on email" in page.text
    # GET changes nothing: mail scanners follow links.
    assert (await contact(store, "u-1")).consent == {"marketing": True}
    assert await events(store, "u-1", "unsubscribed") == []

    first = await api.post(local_part(link), **ONE_CLICK)  # type: ignore[arg-type]
    again = await api.post(local_part(link), **ONE_CLICK)  # type: ignore[arg-type]
    assert first.status_code == again.status_code == 200
    assert "You are unsubscribed" in first.text
    assert (await contact(store, "u-1")).consent == {"marketing": True,
                                                     "email": {"marketing": False}}
    [event] = await events(store, "u-1", "unsubscribed")
    assert event.properties == {"channel": "email", "source": "link"}

    # The next marketing email is skipped for consent; SMS marketing and transactional email go.
    marketing = send_request("u-1", channels=["email"], step="next")
    assert await plan(activities, marketing) == ("skipped:consent", "email")
    assert await plan(activities, send_request("u-1", channels=["sms"], step="sms")) == (
        "ready", "sms")
    receipt = await send(activities, send_request("u-1", channels=["email"], step="receipt",
                                                  category="transactional"))
    assert receipt.channel == "email"
    assert len(email_provider.sent) == 2 and email_provider.sent[1].category == "transactional"
    assert email_provider.sent[1].headers == {}  # no unsubscribe header on a receipt


async def test_the_pages_button_posts_the_token_in_the_form(
    api: httpx.AsyncClient, store: Store, settings: Settings,
) -> None:
    await add_contact(store, "u-2")
    link = unsubscribe_url(settings.public_url, UnsubscribeScope("u-2", "sms"),
                           settings.signing_key())
    answer = await api.post("/v1/unsubscribe", data={"token": token_of(link)})
    assert answer.status_code == 200, answer.text
    assert "marketing on sms" in answer.text
    assert (await contact(store, "u-2")).consent == {"marketing": True,
                                                     "sms": {"marketing": False}}
    [event] = await events(store, "u-2", "unsubscribed")
    assert event.properties == {"channel": "sms", "source": "link"}


async def test_a_topic_link_withdraws_only_that_topic(
    api: httpx.AsyncClient, store: Store, settings: Settings, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "u-3")
    link = unsubscribe_url(settings.public_url, UnsubscribeScope("u-3", "email", "newsletter"),
                           settings.signing_key())
    page = await api.get(local_part(link))
    assert page.status_code == 200 and "topic newsletter on email" in page.text

    answer = await api.post(local_part(link), **ONE_CLICK)  # type: ignore[arg-type]
    assert answer.status_code == 200
    assert (await contact(store, "u-3")).consent == {"marketing": True,
                                                     "topics": {"newsletter": False}}
    [event] = await events(store, "u-3", "unsubscribed")
    assert event.properties == {"channel": "email", "source": "link", "topic": "newsletter"}
    newsletter = send_request("u-3", channels=["email"], step="n", topic="newsletter")
    assert await plan(activities, newsletter) == ("skipped:consent", "email")
    offers = send_request("u-3", channels=["email"], step="o", topic="offers")
    assert await plan(activities, offers) == ("ready", "email")
    assert await plan(activities, send_request("u-3", channels=["email"], step="m")) == (
        "ready", "email")


async def test_tampered_and_foreign_tokens_are_refused_and_change_nothing(
    api: httpx.AsyncClient, store: Store, settings: Settings,
) -> None:
    await add_contact(store, "u-4")
    await add_contact(store, "victim")
    good = token_of(unsubscribe_url(settings.public_url, UnsubscribeScope("u-4", "email"),
                                    settings.signing_key()))
    body, mac = good.split(".")
    # The same signature over someone else's scope.
    other = base64.urlsafe_b64encode(b'{"c":"victim","ch":"email","t":null}').rstrip(b"=")
    forged = f"{other.decode()}.{mac}"
    flipped = f"{body}.{mac[:-2]}{'A' if mac[-2] != 'A' else 'B'}{mac[-1]}"
    foreign = token_of(unsubscribe_url(settings.public_url, UnsubscribeScope("victim", "email"),
                                       b"another-workspace-key"))
    for token in (forged, flipped, foreign, "not-a-token", ""):
        page = await api.get("/v1/unsubscribe", params={"token": token})
        assert page.status_code == 400, token
        assert "<form" not in page.text
        posted = await api.post("/v1/unsubscribe", params={"token": token},
                                **ONE_CLICK)  # type: ignore[arg-type]
        assert posted.status_code == 400, token
        assert "use the link from the message as it is" in posted.json()["detail"]
    assert (await contact(store, "u-4")).consent == {"marketing": True}
    assert (await contact(store, "victim")).consent == {"marketing": True}
    assert await event_count(store) == 0


# --------------------------------------------------------------------------- inbox


async def test_inbox_shows_read_and_dismisses_in_app_messages(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "i-1")
    await add_contact(store, "i-2")
    outcome = await send(activities, send_request("i-1", channels=["in_app"]))
    row = await delivery(store, outcome.delivery_id)
    assert (row.provider, row.status) == ("inbox", "sent")

    listed = await api.get("/v1/contacts/i-1/inbox")
    assert listed.status_code == 200
    [item] = listed.json()
    assert row.provider_message_id == f"inbox-{item['id']}"
    assert {k: item[k] for k in ("channel", "journey_key", "template", "parts", "read_at",
                                 "dismissed_at")} == {
        "channel": "in_app", "journey_key": "offers", "template": "offer",
        "parts": {"title": "Offer", "body": "Hi Ana"}, "read_at": None, "dismissed_at": None}
    assert datetime.fromisoformat(item["created_at"]) == NOW
    assert (await api.get("/v1/contacts/i-1/inbox", params={"channel": "on_site"})).json() == []
    assert (await api.get("/v1/contacts/i-2/inbox")).json() == []

    # Another contact cannot read or dismiss it, nor can an unknown id be read.
    mid = item["id"]
    for path in (f"/v1/contacts/i-2/inbox/{mid}/read", f"/v1/contacts/i-2/inbox/{mid}/dismiss",
                 f"/v1/contacts/i-1/inbox/{mid + 1000}/read"):
        refused = await api.post(path)
        assert refused.status_code == 404, path

    read = await api.post(f"/v1/contacts/i-1/inbox/{mid}/read")
    assert read.status_code == 200
    read_at = read.json()["read_at"]
    assert read_at is not None and read.json()["dismissed_at"] is None
    again = await api.post(f"/v1/contacts/i-1/inbox/{mid}/read")
    assert again.status_code == 200 and again.json()["read_at"] == read_at
    [event] = await events(store, "i-1", "in_app_read")
    assert event.properties == {"inbox_message_id": mid, "template": "offer",
                                "journey": "offers"}
    assert await events(store, "i-2") == []

    dismissed = await api.post(f"/v1/contacts/i-1/inbox/{mid}/dismiss")
    assert dismissed.status_code == 200 and dismissed.json()["dismissed_at"] is not None
    assert (await api.post(f"/v1/contacts/i-1/inbox/{mid}/dismiss")).status_code == 200
    assert [e.name for e in await events(store, "i-1")] == ["in_app_read", "in_app_dismissed"]
    assert (await api.get("/v1/contacts/i-1/inbox")).json() == []
    [kept] = (await api.get("/v1/contacts/i-1/inbox",
                            params={"include_dismissed": "true"})).json()
    assert kept["id"] == mid and kept["dismissed_at"] == dismissed.json()["dismissed_at"]
    assert kept["read_at"] == read_at  # dismissing keeps the time it was read


async def test_inbox_lists_newest_first_and_bounds_the_limit(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "i-3")
    for step in ("first", "second", "third"):
        await send(activities, send_request("i-3", channels=["in_app"], step=step))
    async with store.session() as s:
        keys = {m.id: m.delivery_key for m in await s.scalars(select(InboxMessage))}
    listed = (await api.get("/v1/contacts/i-3/inbox", params={"limit": 2})).json()
    assert [keys[item["id"]].split("/")[-2] for item in listed] == ["third", "second"]
    for limit in (0, -1, 100_000):
        answer = await api.get("/v1/contacts/i-3/inbox", params={"limit": limit})
        assert answer.status_code == 422, limit


# --------------------------------------------------------------------------- Postmark


def postmark_open(message_id: str, recipient: str, **extra: Any) -> dict[str, Any]:
    return {
        "RecordType": "Open", "MessageStream": "broadcast", "FirstOpen": True,
        "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
        "Platform": "WebMail", "UserAgent": "Mozilla/5.0", "ReadSeconds": 5,
        "Geo": {"CountryISOCode": "RO", "Country": "Romania", "City": "Cluj-Napoca"},
        "MessageID": message_id, "Metadata": {}, "ReceivedAt": "2026-03-02T10:00:00Z",
        "Tag": "offers", "Recipient": recipient, **extra,
    }


def postmark_click(message_id: str, recipient: str) -> dict[str, Any]:
    return {
        "RecordType": "Click", "MessageStream": "broadcast", "ClickLocation": "HTML",
        "Client": {"Name": "Chrome"}, "OS": {"Name": "OS X"}, "Platform": "Desktop",
        "UserAgent": "Mozilla/5.0", "OriginalLink": "https://shop.example/offer?c=42",
        "Geo": {"CountryISOCode": "RO"}, "MessageID": message_id, "Metadata": {},
        "ReceivedAt": "2026-03-02T10:05:00.1234567Z", "Tag": "offers", "Recipient": recipient,
    }


def postmark_bounce(message_id: str, email: str, kind: str = "HardBounce",
                    code: int = 1) -> dict[str, Any]:
    return {
        "RecordType": "Bounce", "ID": 4323372036854775807, "Type": kind, "TypeCode": code,
        "Name": "Hard bounce" if code == 1 else kind, "Tag": "offers", "MessageID": message_id,
        "Metadata": {}, "ServerID": 23, "MessageStream": "broadcast",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email, "From": "shop@example.com", "BouncedAt": "2026-03-02T09:30:00Z",
        "DumpAvailable": True, "Inactive": code == 1, "CanActivate": True,
        "Subject": "Hello Ana", "Content": "<Full dump of bounce>",
    }


def postmark_complaint(message_id: str, email: str) -> dict[str, Any]:
    return {
        "RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint", "TypeCode": 512,
        "Name": "Spam complaint", "Tag": "offers", "MessageID": message_id, "Metadata": {},
        "ServerID": 23, "MessageStream": "broadcast", "Description": "",
        "Details": "Test spam complaint details", "Email": email, "From": "shop@example.com",
        "BouncedAt": "2026-03-02T11:00:00Z", "DumpAvailable": True, "Inactive": True,
        "CanActivate": False, "Subject": "Hello Ana",
    }


async def test_postmark_open_and_click_become_events_of_the_delivery_once(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "p-1")
    outcome = await send(activities, send_request("p-1", channels=["email"], step="remind"))
    row = await delivery(store, outcome.delivery_id)
    assert row.provider_message_id == "pm-1"

    opened = await api.post("/v1/feedback/postmark", json=postmark_open("pm-1",
                                                                         "p-1@example.com"))
    assert opened.status_code == 200, opened.text
    answer = opened.json()
    assert {k: answer[k] for k in ("duplicate", "contact_id", "event")} == {
        "duplicate": False, "contact_id": "p-1", "event": "email_opened"}
    repeated = await api.post("/v1/feedback/postmark", json=postmark_open("pm-1",
                                                                           "p-1@example.com"))
    assert repeated.json() == {"feedback_id": answer["feedback_id"], "duplicate": True,
                               "contact_id": "p-1", "event": None}

    clicked = await api.post("/v1/feedback/postmark", json=postmark_click("pm-1",
                                                                           "p-1@example.com"))
    assert clicked.status_code == 200 and clicked.json()["event"] == "email_clicked"

    linked = {"delivery_id": row.id, "journey": "offers", "step": "remind", "template": "offer"}
    [open_event] = await events(store, "p-1", "email_opened")
    assert open_event.properties == {"provider": "postmark", "first_open": True,
                                     "platform": "WebMail", "user_agent": "Mozilla/5.0",
                                     **linked}
    assert open_event.timestamp == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    [click_event] = await events(store, "p-1", "email_clicked")
    assert click_event.properties == {"provider": "postmark",
                                      "url": "https://shop.example/offer?c=42",
                                      "click_location": "HTML", "platform": "Desktop",
                                      "user_agent": "Mozilla/5.0", **linked}
    assert click_event.timestamp == datetime(2026, 3, 2, 10, 5, 0, 123456, tzinfo=UTC)
    stored = await feedback_rows(store)
    assert [(f.kind, f.delivery_id, f.contact_id, f.provider_message_id) for f in stored] == [
        ("opened", row.id, "p-1", "pm-1"), ("clicked", row.id, "p-1", "pm-1")]
    assert (await contact(store, "p-1")).suppressed == []  # opens and clicks close nothing


async def test_postmark_hard_bounce_suppresses_email_and_soft_bounce_does_not(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "p-2")
    await add_contact(store, "p-3")
    hard = await send(activities, send_request("p-2", channels=["email"]))
    soft = await send(activities, send_request("p-3", channels=["email"]))
    hard_row, soft_row = await delivery(store, hard.delivery_id), await delivery(
        store, soft.delivery_id)

    answer = await api.post("/v1/feedback/postmark",
                            json=postmark_bounce(str(soft_row.provider_message_id),
                                                 "p-3@example.com", "SoftBounce", 4096))
    assert answer.json()["event"] == "email_bounced"
    assert (await contact(store, "p-3")).suppressed == []

    for _ in range(2):
        answer = await api.post("/v1/feedback/postmark",
                                json=postmark_bounce(str(hard_row.provider_message_id),
                                                     "p-2@example.com"))
        assert answer.status_code == 200, answer.text
    assert (await contact(store, "p-2")).suppressed == ["email"]
    [bounced] = await events(store, "p-2", "email_bounced")
    assert bounced.properties["permanent"] is True
    assert bounced.properties["bounce_type"] == "HardBounce"
    assert bounced.properties["delivery_id"] == hard_row.id
    [soft_event] = await events(store, "p-3", "email_bounced")
    assert "permanent" not in soft_event.properties
    assert soft_event.properties["bounce_type"] == "SoftBounce"
    assert [(f.kind, f.permanent, f.contact_id) for f in await feedback_rows(store)] == [
        ("bounced", False, "p-3"), ("bounced", True, "p-2")]
    # Suppressed means even a receipt cannot go by email now; the soft bounce left p-3 open.
    receipt = send_request("p-2", channels=["email"], step="receipt", category="transactional")
    assert await plan(activities, receipt) == ("skipped:unreachable", "email")
    assert await plan(activities, send_request("p-3", channels=["email"], step="again")) == (
        "ready", "email")


async def test_postmark_spam_complaint_suppresses_email(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "p-4")
    outcome = await send(activities, send_request("p-4", channels=["email"]))
    row = await delivery(store, outcome.delivery_id)
    answer = await api.post("/v1/feedback/postmark",
                            json=postmark_complaint(str(row.provider_message_id),
                                                    "p-4@example.com"))
    assert answer.status_code == 200 and answer.json()["event"] == "email_complained"
    assert (await contact(store, "p-4")).suppressed == ["email"]
    [event] = await events(store, "p-4", "email_complained")
    assert event.properties == {"provider": "postmark", "details": "Test spam complaint details",
                                "permanent": True, "delivery_id": row.id, "journey": "offers",
                                "step": "offer", "template": "offer"}


async def test_postmark_report_matched_by_metadata_or_address_or_not_at_all(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "p-5")
    outcome = await send(activities, send_request("p-5", channels=["email"]))
    row = await delivery(store, outcome.delivery_id)
    # Postmark echoes the Metadata sent with the message: it finds the delivery by itself.
    by_metadata = postmark_open("unknown-id", "p-5@example.com",
                                Metadata={"delivery_id": str(row.id), "journey": "offers"})
    answer = await api.post("/v1/feedback/postmark", json=by_metadata)
    assert answer.json()["contact_id"] == "p-5"
    [event] = await events(store, "p-5", "email_opened")
    assert event.properties["delivery_id"] == row.id
    # No delivery known: the address names the contact (case aside); the event has no delivery.
    by_address = await api.post("/v1/feedback/postmark",
                                json=postmark_bounce("other-id", "P-5@Example.com",
                                                     "SoftBounce", 4096))
    assert by_address.json()["contact_id"] == "p-5"
    [bounce] = await events(store, "p-5", "email_bounced")
    assert "delivery_id" not in bounce.properties
    # Nobody: stored for the record, no event, no contact created.
    nobody = await api.post("/v1/feedback/postmark",
                            json=postmark_open("ghost-id", "ghost@example.com"))
    assert nobody.status_code == 200
    assert {k: nobody.json()[k] for k in ("contact_id", "event", "duplicate")} == {
        "contact_id": None, "event": None, "duplicate": False}
    assert [(f.contact_id, f.delivery_id) for f in await feedback_rows(store)] == [
        ("p-5", row.id), ("p-5", None), (None, None)]
    assert await event_count(store) == 2


async def test_postmark_webhook_requires_basic_auth_when_configured(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_USERNAME", "postmark")
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_PASSWORD", "s3cret")
    await add_contact(store, "p-6")
    await send(activities, send_request("p-6", channels=["email"]))
    body = postmark_open("pm-1", "p-6@example.com")

    refused = [
        await api.post("/v1/feedback/postmark", json=body, auth=None),
        await api.post("/v1/feedback/postmark", json=body, auth=("postmark", "wrong")),
        await api.post("/v1/feedback/postmark", json=body, auth=("someone", "s3cret")),
        await api.post("/v1/feedback/postmark", json=body,
                       headers={"authorization": "Bearer s3cret"}),
        # Credentials are checked before the body is even read.
        await api.post("/v1/feedback/postmark", content=b"{not json", auth=None,
                       headers={"content-type": "application/json"}),
    ]
    assert [r.status_code for r in refused] == [401] * 5
    assert all(r.headers.get("www-authenticate", "").startswith("Basic") for r in refused)
    assert await feedback_rows(store) == [] and await events(store, "p-6") == []

    accepted = await api.post("/v1/feedback/postmark", json=body, auth=("postmark", "s3cret"))
    assert accepted.status_code == 200 and accepted.json()["event"] == "email_opened"
    assert len(await events(store, "p-6", "email_opened")) == 1


async def test_postmark_malformed_webhooks_are_refused_by_name(
    api: httpx.AsyncClient, store: Store,
) -> None:
    not_json = await api.post("/v1/feedback/postmark", content=b"{not json",
                              headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["detail"]
    inbound = await api.post("/v1/feedback/postmark", json={"RecordType": "Inbound"})
    assert inbound.status_code == 400 and "Inbound" in inbound.json()["detail"]
    a_list = await api.post("/v1/feedback/postmark", json=[postmark_open("pm-1", "x@y.z")])
    assert a_list.status_code == 400
    bad_time = await api.post("/v1/feedback/postmark",
                              json={**postmark_open("pm-1", "x@y.z"), "ReceivedAt": "soon"})
    assert bad_time.status_code == 400 and "ReceivedAt" in bad_time.json()["detail"]
    assert await feedback_rows(store) == []


async def test_postmark_webhooks_are_refused_while_no_credentials_are_configured(
    api: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = postmark_open("pm-1", "p-6@example.com")
    monkeypatch.delenv("CAIRN_POSTMARK_WEBHOOK_PASSWORD")
    only_user = await api.post("/v1/feedback/postmark", json=body)
    monkeypatch.delenv("CAIRN_POSTMARK_WEBHOOK_USERNAME")
    unconfigured = [await api.post("/v1/feedback/postmark", json=body),
                    await api.post("/v1/feedback/postmark", json=body, auth=None)]
    for refused in (only_user, *unconfigured):
        assert refused.status_code == 403, refused.text
        assert "CAIRN_POSTMARK_WEBHOOK_USERNAME" in refused.json()["detail"]
        assert "CAIRN_POSTMARK_WEBHOOK_PASSWORD" in refused.json()["detail"]
    assert await feedback_rows(store) == []


def postmark_subscription(email: str, *, suppress: bool, reason: str | None,
                          origin: str, at: str) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange", "MessageID": "pm-sub", "ServerID": 23,
        "MessageStream": "broadcast", "ChangedAt": at, "Recipient": email, "Origin": origin,
        "SuppressSending": suppress, "SuppressionReason": reason, "Tag": "offers",
        "Metadata": {},
    }


async def test_postmark_subscription_changes_follow_who_made_them(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities,
) -> None:
    await add_contact(store, "p-7")
    await add_contact(store, "p-8")
    left = await api.post("/v1/feedback/postmark", json=postmark_subscription(
        "p-7@example.com", suppress=True, reason="ManualSuppression", origin="Recipient",
        at="2026-03-03T09:00:00Z"))
    assert left.json()["event"] == "email_unsubscribed"
    assert (await contact(store, "p-7")).consent == {"marketing": True,
                                                     "email": {"marketing": False}}
    assert await plan(activities, send_request("p-7", channels=["email"])) == (
        "skipped:consent", "email")
    back = await api.post("/v1/feedback/postmark", json=postmark_subscription(
        "p-7@example.com", suppress=False, reason=None, origin="Recipient",
        at="2026-03-04T09:00:00Z"))
    assert back.json()["event"] == "email_resubscribed"
    assert (await contact(store, "p-7")).consent == {"marketing": True,
                                                     "email": {"marketing": True}}

    # Staff reactivating a bounced address lifts the suppression, and grants nothing.
    await api.post("/v1/feedback/postmark", json=postmark_bounce("pm-x", "p-8@example.com"))
    assert (await contact(store, "p-8")).suppressed == ["email"]
    reactivated = await api.post("/v1/feedback/postmark", json=postmark_subscription(
        "p-8@example.com", suppress=False, reason=None, origin="Customer",
        at="2026-03-04T10:00:00Z"))
    assert reactivated.json()["event"] == "email_resubscribed"
    after = await contact(store, "p-8")
    assert (after.suppressed, after.consent) == ([], {"marketing": True})
    assert [e.name for e in await events(store, "p-8")] == ["email_bounced",
                                                            "email_resubscribed"]


class FailingOnceIngest(Ingest):
    """Ingest whose first `track` dies, as a process killed between two commits would."""

    failed = False

    async def track(self, call: TrackCall, *, route: bool = True) -> IngestResult:
        if not self.failed:
            self.failed = True
            raise ConnectionError("store went away")
        return await super().track(call, route=route)


async def test_a_retried_webhook_stores_the_event_its_first_attempt_lost(store: Store) -> None:
    await add_contact(store, "p-9")
    report = parse_postmark_webhook(postmark_bounce("pm-lost", "p-9@example.com"), None,
                                    PostmarkSettings())
    ingest = FailingOnceIngest(store, None)
    with pytest.raises(ConnectionError):
        await record_feedback(store, ingest, report)
    # The report and its suppression were committed; the event was not.
    assert (await contact(store, "p-9")).suppressed == ["email"]
    assert await events(store, "p-9") == []

    retried = await record_feedback(store, ingest, report)
    assert (retried.duplicate, retried.event, retried.contact_id) == (
        True, "email_bounced", "p-9")
    again = await record_feedback(store, ingest, report)
    assert (again.duplicate, again.event) == (True, None)
    [event] = await events(store, "p-9", "email_bounced")
    assert event.message_id == f"feedback-{retried.feedback_id}"
    assert event.timestamp == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert len(await feedback_rows(store)) == 1


# --------------------------------------------------------------------------- Twilio


def twilio_inbound(body: str, sid: str, sender: str = PHONE) -> dict[str, str]:
    return {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0",
        "ToCity": "", "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received",
        "FromCity": "", "Body": body, "FromCountry": "RO", "To": "+15017122661",
        "ToZip": "", "NumSegments": "1", "MessageSid": sid,
        "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "From": sender,
        "ApiVersion": "2010-04-01",
    }


def twilio_status(sid: str, status: str, to: str = PHONE, error: str = "") -> dict[str, str]:
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
              "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "From": "+15017122661",
              "To": to, "ApiVersion": "2010-04-01"}
    if error:
        params["ErrorCode"] = error
    return params


async def twilio_post(api: httpx.AsyncClient, kind: str, params: dict[str, str], *,
                      url: str | None = None, token: str = TWILIO_TOKEN) -> httpx.Response:
    path = f"/v1/feedback/twilio/{kind}"
    signature = compute_twilio_signature(url or PUBLIC_URL + path, params, token)
    return await api.post(path, data=params, headers={"X-Twilio-Signature": signature})


@pytest.fixture
def twilio_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CAIRN_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    return TWILIO_TOKEN


async def test_sms_stop_suppresses_start_lifts_and_stop_again_suppresses(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities, twilio_token: str,
) -> None:
    await add_contact(store, "t-1")
    stop = await twilio_post(api, "inbound", twilio_inbound("STOP", "SM-in-1"))
    assert stop.status_code == 200, stop.text
    assert stop.headers["content-type"].startswith("application/xml")
    assert stop.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert (await contact(store, "t-1")).suppressed == ["sms"]
    [event] = await events(store, "t-1", "sms_unsubscribed")
    assert event.properties == {"provider": "twilio", "body": "STOP", "to": "+15017122661",
                                "message_sid": "SM-in-1", "keyword": "stop"}
    # STOP blocks every SMS from the number, receipts included.
    receipt = send_request("t-1", channels=["sms"], step="r", category="transactional")
    assert await plan(activities, receipt) == ("skipped:unreachable", "sms")
    assert await plan(activities, send_request("t-1", channels=["email"], step="e")) == (
        "ready", "email")

    start = await twilio_post(api, "inbound", twilio_inbound("Start", "SM-in-2"))
    assert start.status_code == 200
    after_start = await contact(store, "t-1")
    assert after_start.suppressed == []
    assert after_start.consent == {"marketing": True}  # what it was before the STOP
    [replied] = await events(store, "t-1", "sms_replied")
    assert replied.properties["keyword"] == "start" and replied.properties["body"] == "Start"
    assert await plan(activities, send_request("t-1", channels=["sms"], step="m")) == (
        "ready", "sms")

    # A second STOP is a new message (its own MessageSid), not a retry of the first.
    again = await twilio_post(api, "inbound", twilio_inbound("STOP", "SM-in-3"))
    assert again.status_code == 200
    assert (await contact(store, "t-1")).suppressed == ["sms"]
    assert len(await events(store, "t-1", "sms_unsubscribed")) == 2
    # Twilio retrying the same webhook changes nothing.
    await twilio_post(api, "inbound", twilio_inbound("STOP", "SM-in-3"))
    assert len(await events(store, "t-1", "sms_unsubscribed")) == 2
    assert len(await feedback_rows(store)) == 3


async def test_sms_reply_is_an_event_with_its_text(
    api: httpx.AsyncClient, store: Store, twilio_token: str,
) -> None:
    await add_contact(store, "t-2")
    answer = await twilio_post(api, "inbound",
                               twilio_inbound("What time do you open tomorrow?", "SM-in-9"))
    assert answer.status_code == 200
    [event] = await events(store, "t-2", "sms_replied")
    assert event.properties == {"provider": "twilio", "body": "What time do you open tomorrow?",
                                "to": "+15017122661", "message_sid": "SM-in-9"}
    assert (await contact(store, "t-2")).suppressed == []
    [row] = await feedback_rows(store)
    assert (row.kind, row.contact_id, row.recipient) == ("replied", "t-2", PHONE)


async def test_yes_from_a_contact_who_never_stopped_grants_no_marketing_consent(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities, twilio_token: str,
) -> None:
    """"Reply YES to confirm" is Twilio's opt-in keyword, not consent to marketing."""
    await add_contact(store, "t-3", consent={})
    answer = await twilio_post(api, "inbound", twilio_inbound("YES", "SM-in-4"))
    assert answer.status_code == 200
    assert (await contact(store, "t-3")).consent == {}
    assert await plan(activities, send_request("t-3", channels=["sms"])) == (
        "skipped:consent", "sms")
    [event] = await events(store, "t-3", "sms_replied")
    assert event.properties["keyword"] == "start"


async def test_inbound_sms_finds_a_contact_whose_phone_is_written_with_spaces(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities, twilio_token: str,
) -> None:
    await add_contact(store, "t-4", phone="+40 722 000-111")
    assert await plan(activities, send_request("t-4", channels=["sms"])) == ("ready", "sms")
    answer = await twilio_post(api, "inbound", twilio_inbound("STOP", "SM-in-5"))
    assert answer.status_code == 200
    assert (await contact(store, "t-4")).suppressed == ["sms"]
    assert len(await events(store, "t-4", "sms_unsubscribed")) == 1


async def test_twilio_callbacks_need_a_valid_signature_for_the_public_url(
    api: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_contact(store, "t-5")
    stop = twilio_inbound("STOP", "SM-in-6")
    delivered = twilio_status("SM-x", "delivered")
    # No auth token configured: every callback is refused, even one signed with some token.
    for kind, params in (("inbound", stop), ("status", delivered)):
        refused = await twilio_post(api, kind, params)
        assert refused.status_code == 403 and "CAIRN_TWILIO_AUTH_TOKEN" in refused.text

    monkeypatch.setenv("CAIRN_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    attempts = [
        await twilio_post(api, "inbound", stop, token="another-token"),
        # Signed for the address the app listens on, not the public one Twilio calls.
        await twilio_post(api, "inbound", stop,
                          url="http://cairn.test/v1/feedback/twilio/inbound"),
        # Signed for the other endpoint.
        await twilio_post(api, "inbound", stop, url=PUBLIC_URL + "/v1/feedback/twilio/status"),
        await api.post("/v1/feedback/twilio/inbound", data=stop),
        await twilio_post(api, "status", delivered, token="another-token"),
    ]
    assert [a.status_code for a in attempts] == [403] * 5
    # Params changed after signing.
    signature = compute_twilio_signature(PUBLIC_URL + "/v1/feedback/twilio/inbound", stop,
                                         TWILIO_TOKEN)
    tampered = await api.post("/v1/feedback/twilio/inbound",
                              data={**stop, "Body": "START"},
                              headers={"X-Twilio-Signature": signature})
    assert tampered.status_code == 403
    assert await feedback_rows(store) == [] and await events(store, "t-5") == []
    assert (await contact(store, "t-5")).suppressed == []


async def test_twilio_status_callbacks_are_linked_to_the_delivery(
    api: httpx.AsyncClient, store: Store, activities: DeliveryActivities, twilio_token: str,
) -> None:
    await add_contact(store, "t-6")
    await add_contact(store, "t-7", phone="+40722000777")
    outcome = await send(activities, send_request("t-6", channels=["sms"], step="remind"))
    row = await delivery(store, outcome.delivery_id)
    sid = str(row.provider_message_id)
    assert sid.startswith("SM") and row.provider == "twilio"

    sent = await twilio_post(api, "status", twilio_status(sid, "sent"))
    assert sent.status_code == 200
    assert sent.json() == {"feedback_id": None, "duplicate": False, "contact_id": None,
                           "event": None}
    for _ in range(2):
        answer = await twilio_post(api, "status", twilio_status(sid, "delivered"))
        assert answer.status_code == 200
    [event] = await events(store, "t-6", "sms_delivered")
    assert event.properties == {"provider": "twilio", "status": "delivered",
                                "delivery_id": row.id, "journey": "offers", "step": "remind",
                                "template": "offer"}
    [stored] = await feedback_rows(store)
    assert (stored.kind, stored.delivery_id, stored.contact_id, stored.provider_message_id) == (
        "delivered", row.id, "t-6", sid)

    # A temporary failure is reported but closes nothing; a dead number suppresses SMS.
    other = await send(activities, send_request("t-7", channels=["sms"]))
    other_sid = str((await delivery(store, other.delivery_id)).provider_message_id)
    await twilio_post(api, "status", twilio_status(other_sid, "undelivered", "+40722000777",
                                                   "30003"))
    assert (await contact(store, "t-7")).suppressed == []
    await twilio_post(api, "status", twilio_status(other_sid, "failed", "+40722000777", "30005"))
    assert (await contact(store, "t-7")).suppressed == ["sms"]
    failures = await events(store, "t-7", "sms_failed")
    assert [(e.properties["error_code"], e.properties.get("permanent")) for e in failures] == [
        ("30003", None), ("30005", True)]
    assert all(e.properties["delivery_id"] == other.delivery_id for e in failures)
    assert (await contact(store, "t-6")).suppressed == []


async def test_twilio_callback_without_a_message_sid_is_refused(
    api: httpx.AsyncClient, store: Store, twilio_token: str,
) -> None:
    answer = await twilio_post(api, "status", {"MessageStatus": "delivered"})
    assert answer.status_code == 400 and "MessageSid" in answer.json()["detail"]
    inbound = await twilio_post(api, "inbound", {"Body": "hi"})
    assert inbound.status_code == 400 and "From" in inbound.json()["detail"]
    assert await feedback_rows(store) == []
