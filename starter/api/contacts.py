"""Contact endpoints: read, change preferences, erase, and alias an anonymous visitor to a user.

`GET /v1/contacts/{id}` shows what journeys see; `PATCH` changes profile, channels, consent and
subscription preferences per channel and category (a preference centre, a support agent), and
announces each trait it changes as an `attribute_changed` event, as an identify would;
`DELETE` erases the contact after ending the journeys it is in; `POST /v1/alias` (Segment `alias`)
folds an anonymous visitor into the user it signed up as, so events from before sign-up count.

Endpoints are thin: a pydantic model validates the body (a 422 names the field), one service
function below does the work against the store (and Temporal, for erasure).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio.client import Client

from cairn.contact import ContactSnapshot, WebPushSubscription
from cairn.contact_timeline import ContactTimeline, UnknownContact, contact_timeline
from cairn.events import attribute_changes
from cairn.events.calls import new_message_id
from cairn.journey import CHANNELS, Channel
from cairn.local_time import is_timezone
from cairn.log import get_logger
from cairn.privacy import erasure
from cairn.privacy.erasure import TemporalUnavailableError
from cairn.reachability import normalised_phone, valid_email
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import identity
from cairn.store.db import Store
from cairn.traits import ContactTraitError
from starter.api.auth import requires

if TYPE_CHECKING:
    from cairn.events.ingest import Ingest

log = get_logger(__name__)

CATEGORIES = ("marketing", "transactional")

ConsentAnswer = bool | dict[Literal["marketing", "transactional"], bool]


# --------------------------------------------------------------------------- request models


class ContactPatch(BaseModel):
    """Changes to one contact; fields left out stay as they are, `null` clears a field.

    `consent` merges per key: `{"marketing": true}` is the general marketing answer,
    `{"email": {"marketing": false}}` unsubscribes from marketing email only, `{"sms": false}`
    refuses marketing SMS. `attributes` merges per name; an attribute set to `null` is removed.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "email": "ana@example.com",
            "timezone": "Europe/Bucharest",
            "consent": {"marketing": True, "sms": {"marketing": False}},
            "attributes": {"first_name": "Ana", "plan": None},
            "add_tags": ["vip"],
        }]},
    )

    email: str | None = None
    phone: str | None = Field(default=None, description="E.164, e.g. +40721000000")
    timezone: str | None = Field(default=None, description="IANA name, e.g. Europe/Bucharest")
    push_tokens: list[str] | None = Field(default=None, description="replaces the device tokens")
    web_push: list[WebPushSubscription] | None = Field(
        default=None, description="replaces the web push subscriptions")
    consent: dict[str, ConsentAnswer] | None = Field(
        default=None, description="per category (`marketing`) or per channel, merged per key")
    suppressed: list[Channel] | None = Field(
        default=None, description="channels blocked (bounce, complaint, unsubscribe); replaces")
    attributes: dict[str, Any] | None = Field(
        default=None, description="merged per name; `null` removes the attribute")
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not valid_email(value):
            raise ValueError(f"{value!r} is not a usable email address (local@domain.tld)")
        return value.strip() if value else value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        phone = normalised_phone(value)
        if phone is None:
            raise ValueError("a phone number in E.164 form is needed: + and 8-15 digits")
        return phone

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None and not is_timezone(value):
            raise ValueError(f"{value!r} is not a known time zone; use an IANA name such as "
                             "'Europe/Bucharest'")
        return value

    @field_validator("consent")
    @classmethod
    def _consent(cls, value: dict[str, ConsentAnswer] | None) -> dict[str, ConsentAnswer] | None:
        for key, answer in (value or {}).items():
            if key in CHANNELS:
                continue
            if key == "marketing" and isinstance(answer, bool):
                continue
            raise ValueError(
                f"consent.{key}: not a channel ({', '.join(CHANNELS)}) nor `marketing: bool`"
            )
        return value


class AliasCall(BaseModel):
    """Segment `alias`: `previousId` (an anonymous id) is the same person as `userId`."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        json_schema_extra={"examples": [{
            "previousId": "anon-7f3a", "userId": "c-1", "messageId": "msg-0003"}]},
    )

    type: Literal["alias"] = "alias"
    previous_id: str = Field(alias="previousId", min_length=1, max_length=255)
    user_id: str = Field(alias="userId", min_length=1, max_length=255)
    message_id: str = Field(default_factory=new_message_id, alias="messageId", min_length=1,
                            max_length=255)
    timestamp: datetime | None = None


# --------------------------------------------------------------------------- response models


class AliasResult(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={"examples": [{"messageId": "msg-0003", "duplicate": False,
                                         "userId": "c-1", "eventsMoved": 4}]},
    )

    message_id: str = Field(alias="messageId")
    duplicate: bool
    user_id: str = Field(alias="userId")
    events_moved: int = Field(alias="eventsMoved")


class ErasureReport(BaseModel):
    """What an erasure removed, and the journeys it ended first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "contact_id": "c-1", "journeys_ended": ["journey/cart-abandonment/c-1"],
        "journeys_terminated": [], "journeys_still_ending": [],
        "erased": {"contacts": 1, "events": 12, "deliveries": 3, "scores": 1,
                   "score_changes": 4, "memberships": 2, "tasks": 0, "entries": 1,
                   "inbox_messages": 0, "feedback": 1, "rejected_calls": 0},
        "data_key_destroyed": True}]})

    contact_id: str
    journeys_ended: list[str] = Field(description="exited on their own when asked")
    journeys_terminated: list[str] = Field(
        default_factory=list, description="did not exit within a second: terminated")
    journeys_still_ending: list[str] = Field(
        description="being terminated in the background (Temporal did not confirm in time)")
    erased: dict[str, int]
    data_key_destroyed: bool = Field(
        default=False, description="the contact's payload key is gone: what histories still "
                                   "hold of the contact cannot be decrypted any more")


# --------------------------------------------------------------------------- services


def _now() -> datetime:
    return datetime.now(UTC)


def _not_found(contact_id: str) -> HTTPException:
    return HTTPException(
        status_code=404,
        detail=f"no contact {contact_id!r}: send a track or identify call for it first",
    )


def patch_paths(patch: ContactPatch) -> tuple[dict[str, Any], list[str]]:
    """The patch as the dotted `set` and `unset` paths of a profile update."""
    given = patch.model_fields_set
    set_: dict[str, Any] = {}
    unset: list[str] = []
    for column in ("email", "phone", "timezone", "push_tokens", "suppressed"):
        if column in given:
            set_[column] = getattr(patch, column)
    if "web_push" in given:
        subs = patch.web_push
        set_["web_push"] = None if subs is None else [s.model_dump(mode="json") for s in subs]
    if "consent" in given:
        if patch.consent is None:
            set_["consent"] = {}
        for key, answer in (patch.consent or {}).items():
            if isinstance(answer, dict):
                for category, flag in answer.items():
                    set_[f"consent.{key}.{category}"] = flag
            else:
                set_[f"consent.{key}"] = answer
    for name, value in (patch.attributes or {}).items():
        if value is None:
            unset.append(f"attributes.{name}")
        else:
            set_[f"attributes.{name}"] = value
    return set_, unset


@dataclass(frozen=True)
class ContactUpdate:
    """A PATCH applied: the contact as it is now, and the `attribute_changed` events it stored."""

    snapshot: ContactSnapshot
    changes: list[int]


async def update_contact(store: Store, contact_id: str, patch: ContactPatch) -> ContactUpdate:
    """Apply a PATCH in one transaction, with an `attribute_changed` event per trait it changes
    (stored unrouted in the same commit); 404 for an unknown contact."""
    set_, unset = patch_paths(patch)
    now = _now()
    async with store.session() as session, session.begin():
        if await contacts_repo.get_contact(session, contact_id) is None:
            raise _not_found(contact_id)
        try:
            _, changes = await attribute_changes.update_profile(
                session, contact_id, set_, unset, patch.add_tags, patch.remove_tags, now=now,
                source_message_id=f"patch/{new_message_id()}", received_at=now)
        except ContactTraitError as error:
            raise HTTPException(status_code=422, detail=f"body.{error}") from error
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact_id)
    assert snapshot is not None
    log.info("contact.updated", contact=contact_id, paths=sorted([*set_, *unset]),
             changes=len(changes))
    return ContactUpdate(snapshot=snapshot, changes=changes)


async def erase(
    store: Store, client: Client | None, contact_id: str, *, erased_by: str | None = None
) -> ErasureReport:
    """End the contact's runs (terminating those that do not exit within a second), delete
    everything stored about it and destroy its data key: `cairn.privacy.erasure`."""
    try:
        done = await erasure.erase_contact(store, client, contact_id, erased_by=erased_by)
    except erasure.ContactNotFoundError as error:
        raise _not_found(contact_id) from error
    return ErasureReport(
        contact_id=contact_id, journeys_ended=done.journeys_ended,
        journeys_terminated=done.journeys_terminated,
        journeys_still_ending=done.journeys_still_ending, erased=done.erased,
        data_key_destroyed=done.data_key_destroyed)


async def alias(store: Store, call: AliasCall) -> AliasResult:
    """Record the alias once per messageId and fold the anonymous contact into the user."""
    now = _now()
    async with store.session() as session, session.begin():
        row, new = await events_repo.record_event(
            session, message_id=call.message_id, type="alias", contact_id=call.user_id,
            name="alias", properties={"previousId": call.previous_id},
            timestamp=call.timestamp or now, received_at=now)
        moved = 0
        if new:
            try:
                result = await identity.alias_contact(
                    session, call.previous_id, call.user_id, call.timestamp or now)
            except identity.AliasError as error:
                raise HTTPException(status_code=422, detail=f"body: {error}") from error
            moved = result.events
            # The alias is bookkeeping, not something journeys hear: nothing to route.
            await events_repo.mark_routed(session, [row.id], now)
    log.info("contact.aliased" if new else "contact.alias_duplicate", contact=call.user_id,
             previous_id=call.previous_id, events_moved=moved, message_id=call.message_id)
    return AliasResult(message_id=call.message_id, duplicate=not new, user_id=call.user_id,
                       events_moved=moved)


# --------------------------------------------------------------------------- the router

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {
    "description": "no such contact",
    "content": {"application/json": {"example": {
        "detail": "no contact 'c-404': send a track or identify call for it first"}}}}}

_SNAPSHOT_EXAMPLE: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {
    "example": {"id": "c-1", "timezone": "Europe/Bucharest", "email": "ana@example.com",
                "consent": {"marketing": True}, "attributes": {"first_name": "Ana"},
                "scores": {"global": 35}, "segments": ["buyers"]}}}}}


def contacts_router(
    store: Store, temporal: Client | None, *, ingest: Ingest | None = None
) -> APIRouter:
    """The contact endpoints over one store; `temporal` ends journeys on erasure.

    `ingest` routes the `attribute_changed` events of a PATCH right after the answer (scoring,
    segments, then journeys, as for an identify); without it they wait in the store for the
    relay (`cairn.events.relay`), which routes them the same way a few seconds later.
    """
    router = APIRouter(tags=["contacts"])

    @router.get("/v1/contacts/{contact_id}", dependencies=[requires("read")],
                response_model=ContactSnapshot,
                summary="Read a contact: profile, channels, consent, scores, segments",
                responses={**_NOT_FOUND, **_SNAPSHOT_EXAMPLE})
    async def read_contact(contact_id: str) -> ContactSnapshot:
        async with store.session() as session:
            snapshot = await contacts_repo.snapshot(session, contact_id)
        if snapshot is None:
            raise _not_found(contact_id)
        return snapshot

    @router.get("/v1/contacts/{contact_id}/timeline", dependencies=[requires("read")],
                response_model=ContactTimeline,
                summary="A contact's timeline: events, entries, steps, messages and why not",
                responses=_NOT_FOUND)
    async def read_timeline(
        contact_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="items of each kind at most")]
        = 200,
    ) -> ContactTimeline:
        """Newest first: the contact's events (names only), journey entries and how they ended
        (with the reason), each step its runs reached (when, and how it was left: the route,
        where to, or the exit goal caught there), messages with their ledger status, the
        providers' feedback and, for a message that did not go, why (consent, unreachable,
        frequency cap, quiet hours, unconfirmed, refused); score changes with their reason;
        tasks."""
        try:
            return await contact_timeline(store, contact_id, limit=limit)
        except UnknownContact as error:
            raise HTTPException(404, str(error)) from error

    @router.patch("/v1/contacts/{contact_id}", dependencies=[requires("admin")],
                  response_model=ContactSnapshot,
                  summary="Change profile, channels, consent and subscription preferences",
                  responses={**_NOT_FOUND, **_SNAPSHOT_EXAMPLE,
                             422: {"description": "a field is invalid; `errors` names it"}})
    async def patch_contact(
        contact_id: str, patch: ContactPatch, background: BackgroundTasks
    ) -> ContactSnapshot:
        """Fields left out stay; `null` clears; consent and attributes merge per key. Each trait
        whose value changes is announced as an `attribute_changed` event (`from`, `to`), so
        journeys triggered by that change start as they would after an identify."""
        update = await update_contact(store, contact_id, patch)
        if update.changes and ingest is not None:
            background.add_task(ingest.route_events, update.changes)
        return update.snapshot

    @router.delete("/v1/contacts/{contact_id}", dependencies=[requires("admin")],
                   response_model=ErasureReport,
                   summary="Erase a contact: end its journeys, delete all its data",
                   responses={**_NOT_FOUND, 503: {
                       "description": "journeys are running and Temporal is not reachable"}})
    async def delete_contact(contact_id: str, request: Request) -> ErasureReport:
        """Ends every running journey of the contact (exit reason "contact erased"; a run that
        does not end within a second is terminated), then deletes profile, events, deliveries,
        scores, segment memberships, tasks, entries, inbox, delivery feedback and refused calls,
        and destroys the contact's data key, so its payloads left in Temporal histories cannot
        be read. An audit record keeps that it happened, without personal data. Answers within
        2 s."""
        # The name of the API key that called (the keys' dependency sets it), for the audit.
        caller = getattr(request.state, "caller", None)
        erased_by = caller.name if caller is not None else None
        try:
            return await erase(store, temporal, contact_id, erased_by=erased_by)
        except TemporalUnavailableError as error:
            raise HTTPException(status_code=503, detail=str(error)) from error

    @router.post("/v1/alias", dependencies=[requires("write")],
                 response_model=AliasResult, status_code=200,
                 summary="Link an anonymous id to a user id (Segment alias)",
                 responses={422: {"description": "malformed call; `errors` names each field"}})
    async def alias_call(call: AliasCall) -> AliasResult:
        """Events recorded under `previousId` become the user's (they count for has_done), and
        the anonymous contact's traits fill the gaps in the user's profile."""
        return await alias(store, call)

    return router
