"""Click tracking at send time: which links are rewritten, how tokens are signed, what is stored.

The rewriting functions are checked on known texts; sends go through the real
`DeliveryActivities` (in Temporal's ActivityEnvironment) with the outbox, on a real store, and
what is asserted is what the ledger and `delivery_links` hold afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities.send import DeliveryActivities
from cairn import links
from cairn.contact import ContactSnapshot
from cairn.contracts import SendRequest, StepContext
from cairn.journey import Send
from cairn.store import contacts
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryLink

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PUBLIC = "https://cairn.example.com"
KEY = b"test-workspace-key"
env = ActivityEnvironment()


def numbered(position: int) -> str:
    return f"{PUBLIC}/l/T{position}"


# ------------------------------------------------------------------ rewriting


def test_html_hrefs_are_rewritten_with_their_labels_and_text_urls_reuse_them() -> None:
    parts = {
        "subject": "See https://shop.example/subject-stays",
        "html": ('<p>Hi</p><a class="btn" href="https://shop.example/cart?utm=a&amp;x=1">'
                 '<b>View</b> cart</a> or <a data-label="Logo" href=\'https://shop.example/\'>'
                 '<img src="https://cdn.example/logo.png" alt="Shop"></a> '
                 '<a href="https://shop.example/help"><img alt="Help"></a> '
                 '<a href="mailto:help@shop.example">mail</a> '
                 '<a href="https://shop.example/legal" data-track="false">Legal</a>'),
        "body": ("View cart: https://shop.example/cart?utm=a&x=1.\n"
                 "(more at https://shop.example/more)"),
    }
    done = links.rewrite_links("email", parts, redirect=numbered)
    assert done.links == [
        links.Link("https://shop.example/cart?utm=a&x=1", "View cart"),
        links.Link("https://shop.example/", "Logo"),
        links.Link("https://shop.example/help", "Help"),
        links.Link("https://shop.example/more", None),
    ]
    html = done.parts["html"]
    assert f'href="{PUBLIC}/l/T0"' in html and f'href="{PUBLIC}/l/T1"' in html
    assert f'href="{PUBLIC}/l/T2"' in html
    assert 'class="btn"' in html and "<b>View</b> cart" in html
    # images, mailto: and links marked data-track="false" are left as written
    assert 'src="https://cdn.example/logo.png"' in html
    assert 'href="mailto:help@shop.example"' in html
    assert 'href="https://shop.example/legal"' in html
    # the text part's URL is the HTML's "View cart" link; the full stop stays outside the URL
    assert done.parts["body"] == (f"View cart: {PUBLIC}/l/T0.\n(more at {PUBLIC}/l/T3)")
    assert done.parts["subject"] == parts["subject"]


def test_sms_and_push_links_are_rewritten_and_kept_links_are_not() -> None:
    unsubscribe = f"{PUBLIC}/v1/unsubscribe?token=abc"
    done = links.rewrite_links(
        "sms", {"body": f"Cart: https://shop.example/c STOP? {unsubscribe}"},
        redirect=numbered, keep=lambda url: url == unsubscribe)
    assert done.parts["body"] == f"Cart: {PUBLIC}/l/T0 STOP? {unsubscribe}"
    assert done.links == [links.Link("https://shop.example/c")]

    push = links.rewrite_links("push", {"title": "https://x.example/t", "body": "Tap",
                                        "url": "https://shop.example/app/cart"},
                               redirect=numbered)
    assert push.parts == {"title": "https://x.example/t", "body": "Tap",
                          "url": f"{PUBLIC}/l/T0"}
    # channels without tracked parts keep everything
    inbox = links.rewrite_links("in_app", {"body": "https://shop.example"}, redirect=numbered)
    assert inbox.parts == {"body": "https://shop.example"} and inbox.links == []


def test_tokens_are_signed_and_refuse_any_change() -> None:
    token = links.link_token(1234, 2, KEY)
    assert len(token) < 30
    assert links.verify_link_token(token, KEY) == (1234, 2)
    delivery, position, mac = token.split(".")
    for forged in (f"{delivery}.3.{mac}", f"{links.link_token(1235, 2, KEY)[:-1]}A",
                   f"{delivery}.{position}", token + ".x", "", "..",
                   links.link_token(1234, 2, b"another-key"),
                   links.open_token(1234, KEY)):
        with pytest.raises(links.LinkTokenError):
            links.verify_link_token(forged, KEY)
    assert links.verify_open_token(links.open_token(77, KEY), KEY) == 77
    with pytest.raises(links.LinkTokenError):
        links.verify_open_token(links.link_token(77, 0, KEY).rsplit(".", 2)[0] + ".x", KEY)


def test_the_open_pixel_goes_before_the_end_of_the_body() -> None:
    with_body = links.add_open_pixel("<html><body><p>Hi</p></body></html>", f"{PUBLIC}/o/x")
    assert with_body.endswith(f'<img src="{PUBLIC}/o/x" width="1" height="1" alt="" '
                              'style="display:block;border:0;width:1px;height:1px"></body></html>')
    assert links.add_open_pixel("<p>Hi</p>", "u").startswith("<p>Hi</p><img src=\"u\"")


# ------------------------------------------------------------------ at send time


TEMPLATE = {
    "email": {"subject": "Your cart",
              "html": '<a href="https://shop.example/cart">View cart</a> '
                      '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
              "body": "View cart: https://shop.example/cart\nUnsubscribe: {{ unsubscribe_url }}"},
    "sms": {"body": "Your cart: https://shop.example/cart"},
}


async def add_ana(store: Store) -> None:
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot.model_validate({
            "id": "ana", "email": "ana@example.com", "phone": "+40722000111",
            "consent": {"marketing": True}}), NOW)


def request(channel: str, step: str, *, journey: dict[str, Any] | None = None,
            **send: Any) -> SendRequest:
    return SendRequest(
        context=StepContext(workflow_id="journey/cart/ana", journey_key="cart",
                            contact_id="ana", step=step, now=NOW),
        send=Send.model_validate({"channel": channel, "template": "cart", **send}),
        template=TEMPLATE,  # type: ignore[arg-type]
        **(journey or {}),
    )


async def sent(store: Store, activities: DeliveryActivities,
               req: SendRequest) -> tuple[Delivery, list[DeliveryLink]]:
    outcome = await env.run(activities.deliver_message, req)
    assert outcome.status == "sent", outcome
    async with store.session() as s:
        row = await s.get(Delivery, outcome.delivery_id)
        found = list(await s.scalars(select(DeliveryLink).where(
            DeliveryLink.delivery_id == outcome.delivery_id).order_by(DeliveryLink.position)))
    assert row is not None
    return row, found


async def test_a_sent_email_links_to_signed_redirects_and_keeps_its_unsubscribe_link(
    store: Store,
) -> None:
    await add_ana(store)
    activities = DeliveryActivities(store, public_url=PUBLIC, signing_key=KEY)
    row, stored = await sent(store, activities, request("email", "email_reminder"))
    assert [(link.position, link.url, link.label, link.contact_id) for link in stored] == [
        (0, "https://shop.example/cart", "View cart", "ana")]
    tracked = links.click_url(PUBLIC, row.id, 0, KEY)
    assert f'href="{tracked}">View cart</a>' in row.rendered["html"]
    assert row.rendered["body"].startswith(f"View cart: {tracked}\n")
    assert "shop.example" not in row.rendered["html"] + row.rendered["body"]
    # the unsubscribe link is the signed unsubscribe link, untouched, in both parts
    assert row.rendered["html"].count(f"{PUBLIC}/v1/unsubscribe?token=") == 1
    assert f"Unsubscribe: {PUBLIC}/v1/unsubscribe?token=" in row.rendered["body"]
    assert "/o/" not in row.rendered["html"]  # opens are not tracked unless asked

    sms, sms_links = await sent(store, activities, request("sms", "sms_reminder"))
    assert sms.rendered["body"] == f"Your cart: {links.click_url(PUBLIC, sms.id, 0, KEY)}"
    assert [link.label for link in sms_links] == [None]


async def test_tracking_is_switched_off_per_send_or_per_journey_and_opens_switched_on(
    store: Store,
) -> None:
    await add_ana(store)
    activities = DeliveryActivities(store, public_url=PUBLIC, signing_key=KEY)
    off, none = await sent(store, activities, request("email", "a", track_links=False))
    assert none == [] and '<a href="https://shop.example/cart">' in off.rendered["html"]

    journey_off, none = await sent(store, activities,
                                   request("sms", "b", journey={"track_links": False}))
    assert none == [] and journey_off.rendered["body"] == "Your cart: https://shop.example/cart"

    # the send's own choice wins over the journey's; opens add the pixel
    on, stored = await sent(store, activities, request(
        "email", "c", journey={"track_links": False}, track_links=True, track_opens=True))
    assert len(stored) == 1
    pixel = links.open_pixel_url(PUBLIC, on.id, KEY)
    assert on.rendered["html"].endswith(f'<img src="{pixel}" width="1" height="1" alt="" '
                                        'style="display:block;border:0;width:1px;height:1px">')
    opens_only, none = await sent(store, activities, request(
        "email", "d", journey={"track_opens": True, "track_links": False}))
    assert none == [] and "/o/" in opens_only.rendered["html"]
