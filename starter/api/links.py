"""Endpoints of click tracking: the signed redirects links in messages point to, and the pixel.

- `GET /l/{token}`: a contact clicked a tracked link. Records the click (`cairn.links`) and
  redirects at once (302) to the address the message linked to.
- `GET /o/{token}`: the open pixel of an email (when the journey tracks opens): records the
  open and answers a 1x1 transparent GIF.

Both are public, as the unsubscribe link is: they are clicked from an inbox, and the signed
token is the credential. A token that was altered, or names no link Cairn sent, answers 404
and redirects nowhere: the target address is never read from the request.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cairn.events.ingest import Ingest, utc_now
from cairn.links import (
    LinkTokenError,
    record_click,
    record_open,
    verify_link_token,
    verify_open_token,
)
from cairn.log import get_logger
from cairn.settings import Settings
from cairn.store.db import Store

log = get_logger(__name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A 1x1 transparent GIF."""
_NO_STORE = {"Cache-Control": "no-store, max-age=0"}
_NOT_FOUND = ("<!doctype html><html><head><meta charset='utf-8'><title>Link not found</title>"
              "</head><body><h1>Link not found</h1><p>This link is not valid: use the link from "
              "the message as it is.</p></body></html>")


def links_router(store: Store, ingest: Ingest, settings: Settings) -> APIRouter:
    router = APIRouter()
    key = settings.signing_key()

    @router.get("/l/{token}", tags=["tracking"], response_class=RedirectResponse,
                status_code=302,
                summary="A tracked link: records `link_clicked` and redirects to the link",
                responses={302: {"description": "to the address the message linked to",
                                 "headers": {"Location": {
                                     "description": "the link's address, as the message had it",
                                     "schema": {"type": "string",
                                                "example": "https://shop.example.com/cart"}}}},
                           404: {"description": "the token was altered or names no link",
                                 "content": {"text/html": {}}}})
    async def click(token: str) -> Response:
        """The link in a message (rewritten at send time) points here. The click is stored as
        a `clicked` feedback of the message (the journey report's clicked column) and as a
        `link_clicked` event of the contact (journey, step, template, variant, link, url),
        which journeys can be triggered by, wait for, or have as a goal."""
        try:
            delivery_id, position = verify_link_token(token, key)
        except LinkTokenError:
            return HTMLResponse(_NOT_FOUND, status_code=404, headers=_NO_STORE)
        found = await record_click(store, ingest, delivery_id, position, utc_now())
        if found is None:
            log.warning("link.unknown", delivery_id=delivery_id, position=position)
            return HTMLResponse(_NOT_FOUND, status_code=404, headers=_NO_STORE)
        log.info("link.clicked", contact=found.contact_id, delivery_id=delivery_id,
                 position=position, label=found.label)
        return RedirectResponse(found.url, status_code=302, headers=_NO_STORE)

    @router.get("/o/{token}", tags=["tracking"], response_class=Response,
                summary="The open pixel of an email: records `email_opened`",
                responses={200: {"content": {"image/gif": {
                                     "schema": {"type": "string", "format": "binary"},
                                     "example": "GIF89a... (a 1x1 transparent GIF, 43 bytes)"}},
                                 "description": "a 1x1 transparent GIF"},
                           404: {"description": "the token was altered or names no message"}})
    async def opened(token: str) -> Response:
        """Loaded by the mail client when it shows the message's images: an `opened`
        feedback of the message and an `email_opened` event of the contact."""
        try:
            delivery_id = verify_open_token(token, key)
        except LinkTokenError:
            return Response(status_code=404, headers=_NO_STORE)
        result = await record_open(store, ingest, delivery_id, utc_now())
        if result is None:
            return Response(status_code=404, headers=_NO_STORE)
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    return router
