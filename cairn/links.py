"""Click tracking: links in messages rewritten to short signed redirects, and what a click does.

At send time (`activities.send`), every `http(s)` link of a message is replaced by
`<public url>/l/<token>`: the `href`s of an email's `html` part, bare URLs in its text `body`,
in SMS and WhatsApp bodies and in push bodies, and a push's `url` part. The token names only
the delivery (the ledger row) and the link's position in it, signed with HMAC-SHA256 under the
workspace key (the one that signs unsubscribe links, separated by purpose): a few dozen
characters, so an SMS stays short. The address and the link's label (the anchor's text, or
its `data-label`) are kept in `delivery_links`; a token that was altered, or names no stored
link, finds nothing, so the redirect can never send a browser to an address of the caller's
choosing. Unsubscribe links, `mailto:`/`tel:` links and anchors marked `data-track="false"`
are left alone.

A click (`record_click`) stores a `clicked` feedback on the delivery (the journey report's
clicked column) and a `link_clicked` event of the contact through the normal ingest path, so
it triggers journeys, satisfies `wait_for_event`, exit goals and `has_done` conditions. An
optional open pixel (`/o/<token>`, for email sent over SMTP) does the same with `opened` and
`email_opened`.

Not here: the HTTP routes (`starter.api.links`), nor choosing whether to track (the send
step's and the journey's `track_links` / `track_opens`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest, IngestResult
from cairn.store.db import Store
from cairn.store.schema import Delivery, DeliveryFeedback, DeliveryLink

LINK_CLICKED = "link_clicked"
EMAIL_OPENED = "email_opened"
CLICK_PATH = "/l/"
OPEN_PATH = "/o/"
_MAC_BYTES = 12
"""96 bits of signature: no one guesses a token, and an SMS link stays short."""
_LABEL_CHARS = 120

_TEXT_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("body",),
    "sms": ("body",),
    "whatsapp": ("body",),
    "push": ("body",),
    "web_push": ("body",),
}
"""Parts whose bare URLs are rewritten, per channel."""
_HTML_PARTS: dict[str, tuple[str, ...]] = {"email": ("html",)}
"""Parts whose anchors' `href`s are rewritten (never their visible text)."""
_URL_PARTS: dict[str, tuple[str, ...]] = {"push": ("url",), "web_push": ("url",)}
"""Parts that are one link as a whole (where a tap on the notification goes)."""
TRACKED_CHANNELS = frozenset(_TEXT_PARTS) | frozenset(_HTML_PARTS) | frozenset(_URL_PARTS)

_BARE_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
_ANCHOR = re.compile(r"<a\b(?P<attrs>[^>]*)>(?P<inner>.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.IGNORECASE)
_DATA_LABEL = re.compile(r"""\bdata-label\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_NO_TRACK = re.compile(r"""\bdata-track\s*=\s*["']?(false|off|no)\b""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_IMG_ALT = re.compile(r"""<img\b[^>]*\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)


class LinkTokenError(ValueError):
    """A token that was altered, truncated or signed with another key."""


# ------------------------------------------------------------------ tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(purpose: bytes, message: str, key: bytes) -> str:
    digest = hmac.new(key, purpose + b"\x00" + message.encode(), hashlib.sha256).digest()
    return _b64(digest[:_MAC_BYTES])


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return text


def _number(text: str) -> int:
    if not text or not text.isalnum() or not text.isascii() or text != text.lower():
        raise LinkTokenError("link token is malformed")
    return int(text, 36)


def link_token(delivery_id: int, position: int, key: bytes) -> str:
    """`<delivery id>.<position>.<signature>` (base 36 numbers), e.g. `2s.0.vQ3...`."""
    body = f"{_base36(delivery_id)}.{_base36(position)}"
    return f"{body}.{_mac(b'cairn-link', body, key)}"


def open_token(delivery_id: int, key: bytes) -> str:
    body = _base36(delivery_id)
    return f"{body}.{_mac(b'cairn-open', body, key)}"


def _check(purpose: bytes, body: str, given: str, key: bytes) -> None:
    if not hmac.compare_digest(_mac(purpose, body, key), given):
        raise LinkTokenError("link token signature does not match")


def verify_link_token(token: str, key: bytes) -> tuple[int, int]:
    """(delivery id, position) of a click token; `LinkTokenError` when it is not ours."""
    pieces = token.split(".")
    if len(pieces) != 3:
        raise LinkTokenError("link token is malformed")
    delivery, position, mac = pieces
    _check(b"cairn-link", f"{delivery}.{position}", mac, key)
    return _number(delivery), _number(position)


def verify_open_token(token: str, key: bytes) -> int:
    """The delivery id of an open-pixel token; `LinkTokenError` when it is not ours."""
    pieces = token.split(".")
    if len(pieces) != 2:
        raise LinkTokenError("open token is malformed")
    _check(b"cairn-open", pieces[0], pieces[1], key)
    return _number(pieces[0])


def click_url(public_url: str, delivery_id: int, position: int, key: bytes) -> str:
    return f"{public_url.rstrip('/')}{CLICK_PATH}{link_token(delivery_id, position, key)}"


def open_pixel_url(public_url: str, delivery_id: int, key: bytes) -> str:
    return f"{public_url.rstrip('/')}{OPEN_PATH}{open_token(delivery_id, key)}"


# ------------------------------------------------------------------ rewriting


@dataclass(frozen=True)
class Link:
    """One tracked link of a message: where it goes and what it is called (None: unnamed)."""

    url: str
    label: str | None = None


@dataclass
class Rewritten:
    parts: dict[str, str]
    links: list[Link] = field(default_factory=list)


def _label(text: str | None) -> str | None:
    if text is None:
        return None
    collapsed = " ".join(html.unescape(_TAG.sub(" ", text)).split())
    return collapsed[:_LABEL_CHARS] or None


def _anchor_label(attrs: str, inner: str) -> str | None:
    named = _DATA_LABEL.search(attrs)
    if named:
        return _label(named.group(1) if named.group(1) is not None else named.group(2))
    text = _label(inner)
    if text:
        return text
    alt = _IMG_ALT.search(inner)
    if alt:
        return _label(alt.group(1) if alt.group(1) is not None else alt.group(2))
    return None


def _split_trailing(url: str) -> tuple[str, str]:
    """A URL at the end of a sentence (`... at https://x.example/a.`) ends before the dot."""
    end = len(url)
    while end > 0 and url[end - 1] in _TRAILING:
        if url[end - 1] == ")" and url[:end].count("(") >= url[:end].count(")"):
            break
        end -= 1
    return url[:end], url[end:]


class LinkRewriter:
    """Rewrites one message's links; `redirect(position)` is the tracked URL of link `position`.

    `keep(url)` says a link stays as it is (the unsubscribe link, the tracker's own links). A
    URL that appears more than once under the same label (the text and the HTML part of an
    email) is one link; a bare URL reuses the label an anchor gave the same address.
    """

    def __init__(self, redirect: Callable[[int], str], keep: Callable[[str], bool]) -> None:
        self.redirect = redirect
        self.keep = keep
        self.links: list[Link] = []

    def _position(self, url: str, label: str | None) -> int:
        for position, link in enumerate(self.links):
            if link.url == url and (label is None or link.label == label):
                return position
        self.links.append(Link(url=url, label=label))
        return len(self.links) - 1

    def _tracked(self, url: str) -> bool:
        return url.lower().startswith(("http://", "https://")) and not self.keep(url)

    def text(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            url, trailing = _split_trailing(match.group(0))
            if not self._tracked(url):
                return match.group(0)
            return self.redirect(self._position(url, None)) + trailing
        return _BARE_URL.sub(replace, text)

    def html(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            attrs, inner = match.group("attrs"), match.group("inner")
            href = _HREF.search(attrs)
            if href is None or _NO_TRACK.search(attrs):
                return match.group(0)
            raw = next(g for g in href.groups()[1:] if g is not None)
            url = html.unescape(raw).strip()
            if not self._tracked(url):
                return match.group(0)
            target = self.redirect(self._position(url, _anchor_label(attrs, inner)))
            new_attrs = attrs[:href.start()] + f'{href.group(1)}"{target}"' + attrs[href.end():]
            return f"<a{new_attrs}>{inner}</a>"
        return _ANCHOR.sub(replace, text)

    def whole(self, text: str) -> str:
        url = text.strip()
        if not self._tracked(url):
            return text
        return self.redirect(self._position(url, None))

    def message(self, channel: str, parts: dict[str, str]) -> dict[str, str]:
        """The parts with their links rewritten; HTML first, so its labels name the links."""
        out = dict(parts)
        for name in _HTML_PARTS.get(channel, ()):
            if out.get(name):
                out[name] = self.html(out[name])
        for name in _TEXT_PARTS.get(channel, ()):
            if out.get(name):
                out[name] = self.text(out[name])
        for name in _URL_PARTS.get(channel, ()):
            if out.get(name):
                out[name] = self.whole(out[name])
        return out


def rewrite_links(
    channel: str, parts: dict[str, str], *, redirect: Callable[[int], str],
    keep: Callable[[str], bool] = lambda url: False,
) -> Rewritten:
    """A message's parts with every trackable link replaced by `redirect(position)`."""
    rewriter = LinkRewriter(redirect, keep)
    rewritten = rewriter.message(channel, parts)
    return Rewritten(parts=rewritten, links=rewriter.links)


def add_open_pixel(html_body: str, pixel_url: str) -> str:
    """A 1x1 image at the end of the HTML body (before `</body>` when there is one)."""
    image = (f'<img src="{pixel_url}" width="1" height="1" alt="" '
             'style="display:block;border:0;width:1px;height:1px">')
    closing = html_body.lower().rfind("</body>")
    if closing < 0:
        return html_body + image
    return html_body[:closing] + image + html_body[closing:]


# ------------------------------------------------------------------ clicks and opens


@dataclass(frozen=True)
class Click:
    """What a click did: the link followed, and the event it became."""

    delivery_id: int
    position: int
    url: str
    label: str | None
    contact_id: str
    feedback_id: int
    event: IngestResult


async def stored_link(store: Store, delivery_id: int, position: int) -> DeliveryLink | None:
    async with store.session() as s:
        return await s.get(DeliveryLink, (delivery_id, position))


def click_properties(delivery: Delivery, link: DeliveryLink) -> dict[str, Any]:
    """The `link_clicked` event's properties: which message and which link, nothing personal
    beyond the link's address as the template wrote it."""
    return {"journey": delivery.journey_key, "step": delivery.step,
            "template": delivery.template, "variant": delivery.variant, "channel": delivery.channel,
            "link": link.label, "url": link.url, "link_index": link.position,
            "delivery_id": delivery.id}


async def _feedback(
    store: Store, delivery_id: int, position: int | None, kind: str, now: datetime,
) -> tuple[Delivery, DeliveryLink | None, int] | None:
    """Store one `clicked`/`opened` report of a delivery; None when the link or message is
    unknown."""
    async with store.session() as s, s.begin():
        link = None
        if position is not None:
            link = await s.get(DeliveryLink, (delivery_id, position))
            if link is None:
                return None
        delivery = await s.get(Delivery, delivery_id)
        if delivery is None or delivery.contact_id is None or delivery.kind != "send":
            return None
        detail: dict[str, Any] = {"source": "tracking"}
        if link is not None:
            detail.update(link=link.label, url=link.url, link_index=link.position)
        # Every click and open is news (a message clicked twice): no two share a key.
        row = DeliveryFeedback(
            dedupe_key=f"tracking/{kind}/{delivery_id}/{uuid.uuid4().hex}",
            delivery_id=delivery.id, contact_id=delivery.contact_id, provider="cairn",
            provider_message_id=None, kind=kind, channel=delivery.channel or "",
            recipient=None, permanent=False, detail=detail, occurred_at=now, received_at=now,
        )
        s.add(row)
        await s.flush()
        return delivery, link, row.id


async def record_click(
    store: Store, ingest: Ingest, delivery_id: int, position: int, now: datetime,
    *, route: bool = True,
) -> Click | None:
    """A click on link `position` of a delivery: a `clicked` feedback attributed to the
    message, then a `link_clicked` event of the contact (stored, then routed). None when no
    such link was sent."""
    found = await _feedback(store, delivery_id, position, "clicked", now)
    if found is None:
        return None
    delivery, link, feedback_id = found
    assert link is not None and delivery.contact_id is not None
    result = await ingest.track(TrackCall(
        userId=delivery.contact_id, event=LINK_CLICKED,
        properties=click_properties(delivery, link), timestamp=now,
        messageId=f"click-{feedback_id}",
    ), route=route)
    return Click(delivery_id=delivery.id, position=link.position, url=link.url,
                 label=link.label, contact_id=delivery.contact_id, feedback_id=feedback_id,
                 event=result)


async def record_open(
    store: Store, ingest: Ingest, delivery_id: int, now: datetime,
) -> IngestResult | None:
    """The open pixel was loaded: an `opened` feedback and an `email_opened` event."""
    found = await _feedback(store, delivery_id, None, "opened", now)
    if found is None:
        return None
    delivery, _, feedback_id = found
    assert delivery.contact_id is not None
    return await ingest.track(TrackCall(
        userId=delivery.contact_id, event=EMAIL_OPENED,
        properties={"journey": delivery.journey_key, "step": delivery.step,
                    "template": delivery.template, "variant": delivery.variant,
                    "channel": delivery.channel, "delivery_id": delivery.id,
                    "provider": "cairn"},
        timestamp=now, messageId=f"open-{feedback_id}",
    ))


async def links_of(store: Store, delivery_ids: list[int]) -> list[DeliveryLink]:
    """The tracked links of these deliveries, in order."""
    if not delivery_ids:
        return []
    async with store.session() as s:
        rows = await s.scalars(select(DeliveryLink)
                               .where(DeliveryLink.delivery_id.in_(delivery_ids))
                               .order_by(DeliveryLink.delivery_id, DeliveryLink.position))
        return list(rows)


__all__ = [
    "CLICK_PATH", "EMAIL_OPENED", "LINK_CLICKED", "OPEN_PATH", "TRACKED_CHANNELS", "Click",
    "Link", "LinkRewriter", "LinkTokenError", "Rewritten", "add_open_pixel", "click_url",
    "link_token", "links_of", "open_pixel_url", "open_token", "record_click", "record_open",
    "rewrite_links", "stored_link", "verify_link_token", "verify_open_token",
]
