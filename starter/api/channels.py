"""Endpoints of the channels: unsubscribe links, the in-app inbox, and provider callbacks.

- `/v1/unsubscribe`: the signed link in every marketing message. GET shows a page with a button
  (mail scanners follow links; RFC 8058 forbids acting on GET); POST acts, including the one-click
  POST mail providers send from the List-Unsubscribe header.
- `/v1/contacts/{id}/inbox`: in-app and on-site messages for the product's front end, with read
  and dismiss, which become `in_app_read` / `in_app_dismissed` events journeys can wait for.
- `/v1/feedback/postmark`, `/v1/feedback/twilio/status`, `/v1/feedback/twilio/inbound`: provider
  webhooks, authenticated (Postmark: Basic auth in the webhook URL; Twilio: X-Twilio-Signature),
  turned into feedback by `cairn.events.feedback`.
"""

from __future__ import annotations

import hashlib
import html
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict

from cairn import inbox_tokens
from cairn.channels.base import FeedbackEvent, FeedbackRejected
from cairn.events.calls import TrackCall
from cairn.events.feedback import FeedbackResult, record_feedback
from cairn.events.ingest import Ingest, utc_now
from cairn.log import get_logger
from cairn.settings import Settings
from cairn.store import inbox as inbox_repo
from cairn.store import suppressions
from cairn.store.db import Store
from cairn.unsubscribe import UnsubscribeScope, UnsubscribeTokenError, verify
from starter.api.auth import InboxAccess, requires

log = get_logger(__name__)

UNSUBSCRIBED_EVENT = "unsubscribed"
_PAGE_EXAMPLE = ("<!doctype html><html>...<h1>Unsubscribe</h1><p>Stop receiving marketing on "
                 "email?</p><form method='post'>...</form></html>")
_DONE_EXAMPLE = "<!doctype html><html>...<h1>You are unsubscribed</h1>...</html>"
_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_POSTMARK_CHALLENGE = {"WWW-Authenticate": 'Basic realm="cairn postmark webhooks"'}
MAX_INBOX_LIMIT = 200
"""At most this many messages per inbox call (PostgreSQL refuses a negative LIMIT outright)."""


class InboxItem(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": 7, "channel": "in_app", "journey_key": "free-trial-to-paid",
        "template": "trial-upgrade", "parts": {"title": "Your trial", "body": "3 days left"},
        "created_at": "2026-03-02T09:00:00Z", "read_at": None, "dismissed_at": None}]})

    id: int
    channel: str
    journey_key: str | None
    template: str | None
    parts: dict[str, Any]
    created_at: datetime
    read_at: datetime | None
    dismissed_at: datetime | None


class InboxToken(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "contact_id": "c-1", "token": "inbox.eyJjIjoiYy0xIiwiZSI6MTc3MjQ0MzcwMH0.3q2-7w",
        "expires_at": "2026-03-02T09:15:00Z"}]})

    contact_id: str
    token: str
    expires_at: datetime


class FeedbackAnswer(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "feedback_id": 12, "duplicate": False, "contact_id": "c-1", "event": "email_opened"}]})

    feedback_id: int | None
    duplicate: bool = False
    contact_id: str | None = None
    event: str | None = None


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def _answer(result: FeedbackResult | None) -> FeedbackAnswer:
    if result is None:
        return FeedbackAnswer(feedback_id=None)
    return FeedbackAnswer(feedback_id=result.feedback_id, duplicate=result.duplicate,
                          contact_id=result.contact_id, event=result.event)


def channels_router(store: Store, ingest: Ingest, settings: Settings) -> APIRouter:
    router = APIRouter()
    key = settings.signing_key()
    _NO_MESSAGE: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such message in this contact's inbox"}}
    _TWILIO_REFUSALS: dict[int | str, dict[str, Any]] = {
        400: {"description": "the callback is not one Cairn reads"},
        403: {"description": "no CAIRN_TWILIO_AUTH_TOKEN, or X-Twilio-Signature does not match"}}

    # ------------------------------------------------------------------ unsubscribe

    def scope_of(token: str) -> UnsubscribeScope:
        try:
            return verify(token, key)
        except UnsubscribeTokenError as error:
            raise HTTPException(400, f"{error}: use the link from the message as it is") from error

    @router.get("/v1/unsubscribe", response_class=HTMLResponse, tags=["consent"],
                summary="The unsubscribe page a marketing message links to",
                responses={200: {"content": {"text/html": {"example": _PAGE_EXAMPLE}}},
                           400: {"description": "the link is not valid (a page that says so)",
                                 "content": {"text/html": {}}}})
    async def unsubscribe_page(token: str) -> HTMLResponse:
        try:
            scope = verify(token, key)
        except UnsubscribeTokenError:
            return _page("This link is not valid",
                         "<p>Use the unsubscribe link from the message as it is.</p>", 400)
        return _page(
            "Unsubscribe",
            f"<p>Stop receiving {html.escape(scope.describe())}?</p>"
            f"<form method='post'><input type='hidden' name='token' "
            f"value='{html.escape(token)}'><button type='submit'>Unsubscribe</button></form>",
        )

    @router.post("/v1/unsubscribe", tags=["consent"],
                 summary="Unsubscribe (the page's button, or RFC 8058 one-click)",
                 response_class=HTMLResponse,
                 responses={200: {"description": "unsubscribed (also when already)",
                                  "content": {"text/html": {"example": _DONE_EXAMPLE}}},
                            400: {"description": "the token is not valid"}})
    async def unsubscribe(request: Request, token: str | None = None) -> Response:
        """Withdraw marketing consent on the link's channel (or its topic only), and record an
        `unsubscribed` event, once per link, so journeys can react."""
        form = await request.form()
        token = token or str(form.get("token") or "")
        scope = scope_of(token)
        now = utc_now()
        async with store.session() as s, s.begin():
            changed = await suppressions.unsubscribe(s, scope.contact_id, scope.channel,
                                                     scope.topic, now)
        if changed:
            digest = hashlib.sha256(token.encode()).hexdigest()[:32]
            properties: dict[str, Any] = {"channel": scope.channel, "source": "link"}
            if scope.topic:
                properties["topic"] = scope.topic
            await ingest.track(TrackCall(
                userId=scope.contact_id, event=UNSUBSCRIBED_EVENT, properties=properties,
                timestamp=now, messageId=f"unsubscribe/{digest}",
            ))
        log.info("consent.unsubscribed", contact=scope.contact_id, channel=scope.channel,
                 topic=scope.topic, changed=changed,
                 one_click=form.get("List-Unsubscribe") == "One-Click")
        return _page("You are unsubscribed",
                     f"<p>You will no longer receive {html.escape(scope.describe())}.</p>")

    # ------------------------------------------------------------------ inbox

    @router.post("/v1/contacts/{contact_id}/inbox-token", response_model=InboxToken,
                 dependencies=[requires("read")], tags=["inbox"],
                 summary="A short-lived token for a front end to read this contact's inbox")
    async def inbox_token(contact_id: str) -> InboxToken:
        """Your backend calls this for the signed-in contact and hands the token to its front
        end, which sends it as `Authorization: Bearer TOKEN` to this contact's inbox routes
        (and no others) until `expires_at` (`CAIRN_INBOX_TOKEN_SECONDS`, default 15 minutes)."""
        token, expires = inbox_tokens.issue(
            contact_id, utc_now(), timedelta(seconds=settings.inbox_token_seconds), key)
        return InboxToken(contact_id=contact_id, token=token, expires_at=expires)

    @router.get("/v1/contacts/{contact_id}/inbox", response_model=list[InboxItem],
                dependencies=[Depends(InboxAccess("read", key))],
                tags=["inbox"], summary="In-app and on-site messages of a contact, newest first")
    async def inbox(contact_id: str, channel: Literal["in_app", "on_site"] | None = None,
                    include_dismissed: bool = False,
                    limit: Annotated[int, Query(ge=1, le=MAX_INBOX_LIMIT)] = 50,
                    ) -> list[InboxItem]:
        async with store.session() as s:
            rows = await inbox_repo.inbox_of(s, contact_id, channel=channel,
                                             include_dismissed=include_dismissed, limit=limit)
        return [InboxItem.model_validate(row) for row in rows]

    async def mark(contact_id: str, message_id: int, action: str) -> InboxItem:
        now = utc_now()
        async with store.session() as s, s.begin():
            row = await inbox_repo.find_message(s, contact_id, message_id)
            if row is None:
                raise HTTPException(404, f"no inbox message {message_id} for {contact_id!r}")
            changed = await inbox_repo.mark(row, action, now)
            item = InboxItem.model_validate(row)
        if changed:
            kind = "read" if action == "read" else "dismissed"
            await ingest.track(TrackCall(
                userId=contact_id, event=f"{item.channel}_{kind}",
                properties={"inbox_message_id": item.id, "template": item.template,
                            "journey": item.journey_key},
                timestamp=now, messageId=f"inbox/{item.id}/{kind}",
            ))
        return item

    @router.post("/v1/contacts/{contact_id}/inbox/{message_id}/read", response_model=InboxItem,
                 dependencies=[Depends(InboxAccess("write", key))], tags=["inbox"],
                 summary="Mark a message read (emits `<channel>_read`)",
                 responses=_NO_MESSAGE)
    async def read(contact_id: str, message_id: int) -> InboxItem:
        return await mark(contact_id, message_id, "read")

    @router.post("/v1/contacts/{contact_id}/inbox/{message_id}/dismiss",
                 response_model=InboxItem, tags=["inbox"],
                 dependencies=[Depends(InboxAccess("write", key))],
                 summary="Dismiss a message (emits `<channel>_dismissed`)",
                 responses=_NO_MESSAGE)
    async def dismiss(contact_id: str, message_id: int) -> InboxItem:
        return await mark(contact_id, message_id, "dismiss")

    # ------------------------------------------------------------------ provider feedback

    async def record(report: FeedbackEvent | None) -> FeedbackAnswer:
        if report is None:
            return _answer(None)
        return _answer(await record_feedback(store, ingest, report))

    @router.post("/v1/feedback/postmark", response_model=FeedbackAnswer, tags=["feedback"],
                 summary="Postmark webhooks: delivery, bounce, spam complaint, open, click",
                 responses={400: {"description": "the body is not a Postmark webhook"},
                            401: {"description": "the webhook's credentials do not match"},
                            403: {"description": "refused: CAIRN_POSTMARK_WEBHOOK_USERNAME and "
                                                 "CAIRN_POSTMARK_WEBHOOK_PASSWORD are not set"}})
    async def postmark(request: Request) -> FeedbackAnswer:
        """Credentials are checked before the body is read: a caller without them learns
        nothing about what the endpoint accepts, and always gets 401."""
        from cairn.channels.postmark import (
            PostmarkSettings,
            check_basic_auth,
            parse_postmark_webhook,
        )

        postmark_settings = PostmarkSettings()
        if not (postmark_settings.webhook_username and postmark_settings.webhook_password
                and postmark_settings.webhook_password.get_secret_value()):
            raise HTTPException(403, "Postmark webhooks are refused until "
                                     "CAIRN_POSTMARK_WEBHOOK_USERNAME and "
                                     "CAIRN_POSTMARK_WEBHOOK_PASSWORD are set (Postmark sends "
                                     "them as Basic credentials from the webhook URL)")
        authorization = request.headers.get("authorization")
        try:
            check_basic_auth(authorization, postmark_settings)
        except FeedbackRejected as error:
            raise HTTPException(401, str(error), headers=_POSTMARK_CHALLENGE) from error
        try:
            body = await request.json()
        except ValueError as error:
            raise HTTPException(400, f"Postmark webhook body is not JSON: {error}") from error
        try:
            report = parse_postmark_webhook(body, authorization, postmark_settings)
        except FeedbackRejected as error:
            raise HTTPException(400, str(error)) from error
        return await record(report)

    async def twilio_form(request: Request) -> dict[str, str]:
        from cairn.channels.twilio import TwilioSettings, validate_twilio_signature

        form = await request.form()
        params = {k: str(v) for k, v in form.multi_items()}
        twilio = TwilioSettings()
        token = twilio.auth_token.get_secret_value() if twilio.auth_token else ""
        if not token:
            raise HTTPException(403, "Twilio callbacks are refused until CAIRN_TWILIO_AUTH_TOKEN "
                                     "is set (it checks X-Twilio-Signature)")
        url = settings.public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        if not validate_twilio_signature(url, form, request.headers.get("x-twilio-signature", ""),
                                         token):
            raise HTTPException(403, f"X-Twilio-Signature does not match {url}: check "
                                     "CAIRN_PUBLIC_URL and CAIRN_TWILIO_AUTH_TOKEN")
        return params

    @router.post("/v1/feedback/twilio/status", response_model=FeedbackAnswer,
                 tags=["feedback"], summary="Twilio status callbacks (delivered, failed, read)",
                 responses=_TWILIO_REFUSALS)
    async def twilio_status(request: Request) -> FeedbackAnswer:
        from cairn.channels.twilio import parse_status_callback

        params = await twilio_form(request)
        try:
            report = parse_status_callback(params)
        except FeedbackRejected as error:
            raise HTTPException(400, str(error)) from error
        return await record(report)

    @router.post("/v1/feedback/twilio/inbound", tags=["feedback"],
                 summary="Inbound SMS/WhatsApp: replies, STOP and START keywords",
                 response_class=Response,
                 responses={200: {"content": {"application/xml": {"example": _TWIML}}},
                            **_TWILIO_REFUSALS})
    async def twilio_inbound(request: Request) -> Response:
        from cairn.channels.twilio import parse_inbound_message

        params = await twilio_form(request)
        try:
            report = parse_inbound_message(params)
        except FeedbackRejected as error:
            raise HTTPException(400, str(error)) from error
        await record(report)
        # An empty TwiML answer: Twilio itself replies to STOP/START as the number is set up.
        return Response(_TWIML, media_type="application/xml")

    return router
