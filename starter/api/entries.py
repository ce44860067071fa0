"""`POST /v1/journeys/{key}/entries`: a backend puts a contact into a journey directly.

For journeys whose trigger is `api: true` (a support tool enrolling a customer, a checkout service
starting an onboarding). The call is an event underneath: a `journey_entry_requested` event for the
contact with `{journey: key, ...given properties}`, stored once per `messageId` and routed like any
other, so entry rules (`reentry`, `min_interval`) apply and the properties are the trigger event
templates read (`{{ event.properties.order_id }}`).

Unlike `/v1/track`, the entry is routed before answering, so the answer says what happened
(started, signalled, or refused by an entry rule and why). When Temporal cannot be reached the
request is still accepted: the event waits in the store and the relay routes it later
(`routed: false`).

Failed entries: `GET /v1/entries?status=failed` lists the entries whose run failed, was
terminated or timed out (with the reason), and `POST /v1/entries/{id}/reenter` puts the contact
back into the journey after a fix (`cairn.reentry`). A failed entry does not count for the entry
rules, so the contact is never locked out by a broken run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from temporalio.service import RPCError

from cairn.events.calls import TrackCall, new_message_id
from cairn.events.ingest import Ingest
from cairn.events.router import RouteDecision
from cairn.journey import TRIGGER_EVENTS
from cairn.log import get_logger
from cairn.reentry import EntryNotFound, ReentryRefused, ReentryUnavailable, reenter
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from starter.api.auth import requires

log = get_logger(__name__)

ENTRY_REQUESTED = TRIGGER_EVENTS["api"]
"""`journey_entry_requested`: the event an entry request stores."""


class EntryRequest(BaseModel):
    """Who enters, with what properties (the trigger event's), and an optional dedup key."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", json_schema_extra={
        "examples": [{"userId": "c-1", "properties": {"order_id": "o-981", "plan": "pro"},
                      "messageId": "enrol-c-1-o-981"}]})

    user_id: str = Field(alias="userId", min_length=1, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    message_id: str = Field(default_factory=new_message_id, alias="messageId", min_length=1,
                            max_length=255, description="a repeated messageId enters once")
    timestamp: datetime | None = Field(default=None, description="default: now")


class EntryDecision(BaseModel):
    """What the router did for the journey."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    action: Literal["started", "signalled", "refused"]
    reason: str
    version: int | None = None
    workflow_id: str | None = Field(default=None, alias="workflowId")

    @classmethod
    def of(cls, decision: RouteDecision) -> EntryDecision:
        return cls(action=decision.action, reason=decision.reason, version=decision.version,
                   workflow_id=decision.workflow_id)


class EntryAccepted(BaseModel):
    """The request is stored; `decision` is null when it was not routed yet (or a duplicate
    whose entry is not on record)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True,
                              json_schema_extra={"examples": [{
                                  "messageId": "enrol-c-1-o-981", "journey": "onboarding",
                                  "duplicate": False, "routed": True,
                                  "decision": {"action": "started",
                                               "reason": "trigger api matched; entry: "
                                                         "after_exit, new entry",
                                               "version": 3,
                                               "workflowId": "journey/onboarding/c-1"}}]})

    message_id: str = Field(alias="messageId")
    journey: str
    duplicate: bool
    routed: bool
    decision: EntryDecision | None = None


class EntryJourneyError(LookupError):
    """The journey is not published, or its trigger is not `api: true`."""

    def __init__(self, message: str, *, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


async def check_api_journey(store: Store, key: str) -> None:
    """Raise `EntryJourneyError` unless `key` is published with `trigger: {api: true}`."""
    async with store.session() as session:
        journey = await journeys_repo.published_journey(session, key)
    if journey is None:
        raise EntryJourneyError(f"no published journey {key!r}; publish it first "
                                "(cairn publish)", unknown=True)
    if journey.trigger.kind != "api":
        raise EntryJourneyError(
            f"journey {key!r} starts on {journey.trigger.describe()}; only journeys with "
            "`trigger: {api: true}` accept entries through the API", unknown=False)


async def request_entry(ingest: Ingest, key: str, request: EntryRequest) -> EntryAccepted:
    """Store the entry request as an event and route it now; say what the router decided."""
    await check_api_journey(ingest.store, key)
    call = TrackCall(user_id=request.user_id, event=ENTRY_REQUESTED,
                     properties={**request.properties, "journey": key},
                     message_id=request.message_id, timestamp=request.timestamp)
    result = await ingest.track(call, route=True)
    decision: EntryDecision | None = None
    # The router lists trigger decisions before signals to listening entries: the first is it.
    mine = [d for d in result.routes if d.journey == key]
    if mine:
        decision = EntryDecision.of(mine[0])
    elif result.duplicate:
        async with ingest.store.session() as session:
            earlier = [e for e in await entries_repo.entries_for(session, key, request.user_id)
                       if e.trigger_message_id == request.message_id]
        if earlier:
            decision = EntryDecision(action="started", reason="already entered with this event",
                                     version=earlier[-1].version,
                                     workflow_id=earlier[-1].workflow_id)
    log.info("entry.requested", journey=key, contact=request.user_id,
             message_id=request.message_id, duplicate=result.duplicate, routed=result.routed,
             action=decision.action if decision else None)
    return EntryAccepted(message_id=result.message_id, journey=key, duplicate=result.duplicate,
                         routed=result.routed or result.duplicate, decision=decision)


class EntryView(BaseModel):
    """One contact's entry into a journey, as the entry rules read it."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": 42, "journey_key": "onboarding", "version": 3, "contact_id": "c-1",
        "workflow_id": "journey/onboarding/c-1", "trigger_message_id": "m-81",
        "entered_at": "2026-03-02T09:00:00Z", "ended_at": "2026-03-02T09:05:00Z",
        "outcome": "failed", "reason": "run terminated: stuck on a provider outage"}]})

    id: int
    journey_key: str
    version: int
    contact_id: str
    entry_key: str | None = None
    workflow_id: str
    trigger_message_id: str | None
    entered_at: datetime
    ended_at: datetime | None
    outcome: str | None
    reason: str | None = None


class ReentryAnswer(BaseModel):
    """What re-entering a failed entry did: the router's decision for its journey."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True,
                              json_schema_extra={"examples": [{
                                  "entryId": 42, "journey": "onboarding",
                                  "decision": {"action": "started",
                                               "reason": "trigger api matched; entry: "
                                                         "after_exit, new entry",
                                               "version": 4,
                                               "workflowId": "journey/onboarding/c-1"}}]})
    entry_id: int = Field(alias="entryId")
    journey: str
    decision: EntryDecision


async def list_entries(
    store: Store, status: Literal["failed", "open"], journey: str | None, limit: int,
) -> list[EntryView]:
    async with store.session() as session:
        if status == "failed":
            rows = await entries_repo.failed_entries(session, journey, limit)
        else:
            rows = (await entries_repo.open_entries(session, journey))[:limit]
    return [EntryView.model_validate(row) for row in rows]


def entries_router(ingest: Ingest) -> APIRouter:
    """The entry endpoint over one `Ingest` (whose router decides)."""
    router = APIRouter(tags=["journeys"])

    @router.post(
        "/v1/journeys/{key}/entries", dependencies=[requires("admin")],
        response_model=EntryAccepted, status_code=202,
        summary="Put a contact into a journey whose trigger is `api: true`",
        responses={404: {"description": "no published journey with this key"},
                   422: {"description": "the journey does not take API entries, or the body "
                                        "is malformed (`errors` names the field)"}},
    )
    async def enter(key: str, request: EntryRequest) -> EntryAccepted:
        """Stores a `journey_entry_requested` event (properties: the given ones plus `journey`)
        and routes it before answering; entry rules apply as for any trigger."""
        try:
            return await request_entry(ingest, key, request)
        except EntryJourneyError as error:
            raise HTTPException(status_code=404 if error.unknown else 422,
                                detail=str(error)) from error

    @router.get(
        "/v1/entries", dependencies=[requires("read")], response_model=list[EntryView],
        summary="List failed (or open) entries, newest failures first",
        responses={200: {"description": "the entries"},
                   422: {"description": "a query parameter is not allowed (`errors` names it)"}},
    )
    async def entries(
        status: Literal["failed", "open"] = Query(
            "failed", description="`failed`: runs that failed, were terminated or timed out and "
                                  "were not re-entered; `open`: runs in progress"),
        journey: str | None = Query(None, max_length=128, description="one journey key"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[EntryView]:
        return await list_entries(ingest.store, status, journey, limit)

    @router.post(
        "/v1/entries/{entry_id}/reenter", dependencies=[requires("admin")],
        response_model=ReentryAnswer, status_code=202,
        summary="Put the contact of a failed entry back into its journey",
        responses={
            404: {"description": "no entry with this id"},
            409: {"description": "the entry is not failed, its trigger event is gone, or its "
                                 "journey is not published (`detail` says which)"},
            422: {"description": "the id is not a positive integer"},
            503: {"description": "Temporal does not answer, or this API routes nothing"},
        },
    )
    async def reenter_entry(
        entry_id: int = Path(ge=1, le=2**31 - 1, description="the failed entry's id"),
    ) -> ReentryAnswer:
        """Routes the entry's trigger event into its journey again (the published version
        now); entry rules apply, except that the failed entry does not count."""
        try:
            done = await reenter(ingest.store, ingest.router, entry_id)
        except EntryNotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from error
        except ReentryRefused as error:
            raise HTTPException(status_code=409, detail=str(error)) from error
        except ReentryUnavailable as error:
            raise HTTPException(status_code=503, detail=str(error)) from error
        except RPCError as error:
            raise HTTPException(status_code=503, detail=f"Temporal did not answer: "
                                f"{error.message}; try again") from error
        return ReentryAnswer(entry_id=entry_id, journey=done.entry.journey_key,
                             decision=EntryDecision.of(done.decision))

    return router


__all__ = ["ENTRY_REQUESTED", "EntryAccepted", "EntryRequest", "EntryView", "entries_router",
           "request_entry"]
