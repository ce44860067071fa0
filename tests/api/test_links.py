"""Click tracking's routes over a real store: `/l/{token}` records the click and redirects,
`/o/{token}` records the open; refused tokens get a 404 and go nowhere.

Messages are sent by the real `DeliveryActivities` (with the outbox) under the same public URL
and key as the app, so the links clicked are the links the message carried. The last test runs a
journey on Temporal's time-skipping server that waits for `link_clicked`, and clicks through the
API to resume it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.send import DeliveryActivities
from cairn import links
from cairn.contact import ContactSnapshot
from cairn.contracts import SendRequest, StepContext
from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey import Send
from cairn.journey_run import JourneyResult
from cairn.reports import journey_report
from cairn.settings import Settings
from cairn.store import contacts
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryFeedback, Event
from starter.api.app import create_app
from starter.worker import journey_workers, running
from tests.api_support import api_client
from tests.engine_support import publish, terminate_leftovers, unique

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PUBLIC = "https://cairn.example.com"
SECRET = "test-workspace-key-0123456789"
TEMPLATE = {"email": {
    "subject": "Your cart",
    "html": '<a href="https://shop.example/cart?item=mug">View cart</a> '
            '<a href="https://shop.example/help">Help</a> '
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "body": "View cart: https://shop.example/cart?item=mug"}}
env = ActivityEnvironment()


@pytest.fixture
def settings(store: Store, tmp_path: Path) -> Settings:
    return Settings(database_url=store.url, home=tmp_path / "home", public_url=PUBLIC,
                    secret_key=SecretStr(SECRET))


@pytest.fixture
def activities(store: Store, settings: Settings) -> DeliveryActivities:
    return DeliveryActivities(store, public_url=settings.public_url,
                              signing_key=settings.signing_key())


@pytest_asyncio.fixture
async def inbox_client(store: Store, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A mail client: no API key at all, as a contact clicking in their inbox."""
    app = create_app(store, Ingest(store, None), settings=settings)
    async with api_client(app, scope=None) as client:
        yield client


async def add_contact(store: Store, contact_id: str) -> None:
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot.model_validate({
            "id": contact_id, "email": f"{contact_id}@example.com",
            "consent": {"marketing": True}}), NOW)


async def send_email(activities: DeliveryActivities, contact_id: str, *,
                     journey: str = "cart", track_opens: bool = False) -> Delivery:
    request = SendRequest(
        context=StepContext(workflow_id=f"journey/{journey}/{contact_id}", journey_key=journey,
                            contact_id=contact_id, step="email_reminder", now=NOW),
        send=Send(channel="email", template="cart-reminder", track_opens=track_opens),
        template=TEMPLATE,  # type: ignore[arg-type]
    )
    outcome = await env.run(activities.deliver_message, request)
    assert outcome.status == "sent", outcome
    async with activities.store.session() as s:
        row = await s.get(Delivery, outcome.delivery_id)
    assert row is not None
    return row


def tracked_links(row: Delivery) -> list[str]:
    """The click URLs in the message's HTML, in order."""
    html = row.rendered["html"]
    return [part.split('"', 1)[0] for part in html.split(f'href="{PUBLIC}/l/')[1:]]


async def clicks(store: Store, contact_id: str) -> list[Event]:
    async with store.session() as s:
        return list(await s.scalars(select(Event).where(
            Event.contact_id == contact_id, Event.name == links.LINK_CLICKED).order_by(Event.id)))


async def feedback_of(store: Store, delivery_id: int) -> list[DeliveryFeedback]:
    async with store.session() as s:
        return list(await s.scalars(select(DeliveryFeedback).where(
            DeliveryFeedback.delivery_id == delivery_id).order_by(DeliveryFeedback.id)))


async def test_a_click_redirects_at_once_and_is_recorded_as_event_and_feedback(
    store: Store, activities: DeliveryActivities, inbox_client: httpx.AsyncClient,
) -> None:
    await add_contact(store, "ana")
    row = await send_email(activities, "ana")
    view_cart, help_link = tracked_links(row)
    answer = await inbox_client.get(f"/l/{view_cart}")
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://shop.example/cart?item=mug"
    await inbox_client.get(f"/l/{help_link}")
    assert (await inbox_client.get(f"/l/{view_cart}")).status_code == 302

    [first, second, third] = await clicks(store, "ana")
    assert first.properties == {
        "journey": "cart", "step": "email_reminder", "template": "cart-reminder",
        "variant": None, "channel": "email", "link": "View cart",
        "url": "https://shop.example/cart?item=mug", "link_index": 0, "delivery_id": row.id}
    assert (second.properties["link"], second.properties["url"]) == (
        "Help", "https://shop.example/help")
    assert third.properties["link"] == "View cart"
    assert "ana@example.com" not in str([e.properties for e in (first, second, third)])
    reports = await feedback_of(store, row.id)
    assert [(f.kind, f.provider, f.contact_id, f.detail["link"]) for f in reports] == [
        ("clicked", "cairn", "ana", "View cart"), ("clicked", "cairn", "ana", "Help"),
        ("clicked", "cairn", "ana", "View cart")]


async def test_clicks_count_in_the_report_of_the_message_that_carried_them(
    store: Store, activities: DeliveryActivities, inbox_client: httpx.AsyncClient,
) -> None:
    await publish(store, {"key": "cart", "name": "Cart", "trigger": {"event": "cart_item_added"},
                          "steps": {"email_reminder": {"send": {
                              "channel": "email", "template": "cart-reminder"}, "next": "end"}},
                          "templates": {"cart-reminder": TEMPLATE}})
    for contact_id in ("ana", "bob", "cy"):
        await add_contact(store, contact_id)
    ana, bob, _ = [await send_email(activities, c) for c in ("ana", "bob", "cy")]
    for token in tracked_links(ana) + tracked_links(ana):  # two links, twice: one message
        await inbox_client.get(f"/l/{token}")
    await inbox_client.get(f"/l/{tracked_links(bob)[1]}")
    report = await journey_report(store, "cart", now=NOW)
    [email] = report.messages
    assert (email.step, email.template, email.sent, email.clicked) == (
        "email_reminder", "cart-reminder", 3, 2)
    assert email.rates.click == pytest.approx(2 / 3)


async def test_tampered_unknown_and_foreign_tokens_get_404_and_go_nowhere(
    store: Store, activities: DeliveryActivities, inbox_client: httpx.AsyncClient,
) -> None:
    await add_contact(store, "ana")
    row = await send_email(activities, "ana")
    token = tracked_links(row)[0]
    delivery, position, mac = token.split(".")
    refused = [
        f"{delivery}.1{position}.{mac}",                        # another link, same signature
        f"{delivery}.{position}.{mac[:-2]}AA",                  # signature changed
        links.link_token(row.id, 7, SECRET.encode()),           # signed, but no such link
        links.link_token(row.id + 100, 0, SECRET.encode()),     # signed, no such message
        links.link_token(row.id, 0, b"someone-elses-key"),      # another workspace's key
        "https://evil.example",                                 # an open-redirect attempt
    ]
    for bad in refused:
        answer = await inbox_client.get(f"/l/{bad}")
        assert answer.status_code == 404, bad
        assert "location" not in answer.headers
    assert (await inbox_client.get("/l/x/https://evil.example")).status_code == 404
    assert await clicks(store, "ana") == []
    assert await feedback_of(store, row.id) == []
    # the query string of a good token changes nothing: the stored address is the target
    good = await inbox_client.get(f"/l/{token}", params={"url": "https://evil.example"})
    assert good.headers["location"] == "https://shop.example/cart?item=mug"


async def test_the_open_pixel_records_an_open_of_the_message(
    store: Store, activities: DeliveryActivities, inbox_client: httpx.AsyncClient,
) -> None:
    await add_contact(store, "ana")
    row = await send_email(activities, "ana", track_opens=True)
    pixel = urlsplit(links.open_pixel_url(PUBLIC, row.id, SECRET.encode())).path
    assert pixel in row.rendered["html"]
    answer = await inbox_client.get(pixel)
    assert (answer.status_code, answer.headers["content-type"]) == (200, "image/gif")
    assert answer.content.startswith(b"GIF89a")
    assert [f.kind for f in await feedback_of(store, row.id)] == ["opened"]
    async with store.session() as s:
        [opened] = list(await s.scalars(select(Event).where(Event.name == "email_opened")))
    assert opened.properties["delivery_id"] == row.id
    assert (await inbox_client.get(pixel[:-1] + "A")).status_code == 404


CLICK_JOURNEY = {
    "name": "Cart reminder, waiting for the click",
    "trigger": {"event": "cart_item_added"},
    "steps": {
        "email_reminder": {"send": {"channel": "email", "template": "cart-reminder"},
                           "next": "wait_click"},
        "wait_click": {"wait_for_event": {"event": "link_clicked",
                                          "where": {"properties.link": {"eq": "View cart"}},
                                          "timeout": "2d"},
                       "then": "clicked", "timeout_next": "no_click"},
        "clicked": {"end": "clicked_cart"},
        "no_click": {"end": "no_click"},
    },
    "templates": {"cart-reminder": TEMPLATE},
}


async def test_a_journey_waiting_for_link_clicked_resumes_on_a_click_through_the_api(
    temporal_env: WorkflowEnvironment, store: Store, settings: Settings,
    activities: DeliveryActivities,
) -> None:
    key = unique("cart-click")
    await publish(store, {"key": key, **CLICK_JOURNEY})
    await add_contact(store, "ana")
    queue = unique("journeys")
    workers = journey_workers(temporal_env.client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery", delivery=activities)
    router = Router(temporal_env.client, store, task_queue=queue,
                    delivery_task_queue=f"{queue}-delivery")
    app = create_app(store, Ingest(store, router), settings=settings)
    async with running(workers), api_client(app) as backend, \
            api_client(app, scope=None) as inbox:
        try:
            started = await backend.post("/v1/track", json={
                "userId": "ana", "event": "cart_item_added"})
            assert started.status_code == 202
            async with asyncio.timeout(30):
                while True:
                    async with store.session() as s:
                        row = await s.scalar(select(Delivery).where(
                            Delivery.journey_key == key, Delivery.status == "sent"))
                    if row is not None:
                        break
                    await asyncio.sleep(0.05)
            view_cart, help_link = tracked_links(row)
            # a click on another link does not satisfy the wait's filter
            assert (await inbox.get(f"/l/{help_link}")).status_code == 302
            assert (await inbox.get(f"/l/{view_cart}")).status_code == 302
            handle = temporal_env.client.get_workflow_handle(
                f"journey/{key}/ana", result_type=JourneyResult)
            result = await handle.result()
            assert result.outcome == "ended:clicked_cart"
            assert [p.step for p in result.path] == [
                "email_reminder", "wait_click", "clicked"]
        finally:
            await terminate_leftovers(temporal_env.client, store)


async def test_erasing_the_contact_deletes_its_links_and_their_redirects(
    store: Store, settings: Settings, activities: DeliveryActivities,
    inbox_client: httpx.AsyncClient,
) -> None:
    await add_contact(store, "ana")
    await add_contact(store, "bob")
    ana, bob = await send_email(activities, "ana"), await send_email(activities, "bob")
    app = create_app(store, Ingest(store, None), settings=settings)
    async with api_client(app) as backend:
        answer = await backend.delete("/v1/contacts/ana")
    assert answer.status_code == 200, answer.text
    assert answer.json()["erased"]["links"] == 2
    assert (await inbox_client.get(f"/l/{tracked_links(ana)[0]}")).status_code == 404
    assert (await inbox_client.get(f"/l/{tracked_links(bob)[0]}")).status_code == 302
