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
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from cairn.events.calls import TrackCall, new_message_id
from cairn.events.ingest import Ingest
from cairn.events.router import RouteDecision
from cairn.journey import TRIGGER_EVENTS
from cairn.log import get_logger
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store

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
        row = await journeys_repo.get_version(session, key)
    if row is None:
        raise EntryJourneyError(f"no published journey {key!r}; publish it first "
                                "(cairn publish)", unknown=True)
    journey = journeys_repo.journey_of(row)
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


def entries_router(ingest: Ingest) -> APIRouter:
    """The entry endpoint over one `Ingest` (whose router decides)."""
    router = APIRouter(tags=["journeys"])

    @router.post(
        "/v1/journeys/{key}/entries", response_model=EntryAccepted, status_code=202,
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

    return router


__all__ = ["ENTRY_REQUESTED", "EntryAccepted", "EntryRequest", "entries_router", "request_entry"]
