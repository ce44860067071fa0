"""Segment-format ingest: `/v1/track`, `/v1/identify`, `/v1/page` and `/v1/batch`.

Each call is validated against `cairn.events.calls`, stored by `cairn.events.ingest` and answered
202 only once it is committed; routing into Temporal runs after the answer (a background task), so
a Temporal outage delays journeys but never loses an accepted event (it stays unrouted in the store
and the relay routes it).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks
from pydantic import BaseModel, ConfigDict, Field

from cairn.events.calls import BatchCall, IdentifyCall, PageCall, TrackCall
from cairn.events.ingest import Ingest, IngestResult
from starter.api.errors import ValidationProblem


class Accepted(BaseModel):
    """The call is stored; `duplicate` says its messageId had been seen (stored once, not again)."""

    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={"examples": [{"messageId": "msg-0001", "duplicate": False}]},
    )

    message_id: str = Field(alias="messageId")
    duplicate: bool

    @classmethod
    def of(cls, result: IngestResult) -> Accepted:
        return cls(message_id=result.message_id, duplicate=result.duplicate)


INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblem, "description": "malformed call; `errors` names each field"},
}


def ingest_router(ingest: Ingest) -> APIRouter:
    """The Segment calls, stored through `ingest` and routed after the answer."""
    router = APIRouter(tags=["ingest"])

    @router.post("/v1/track", status_code=202, response_model=Accepted, 
              summary="Record an event (Segment track)", responses=INGEST_RESPONSES)
    async def track(call: TrackCall, background: BackgroundTasks) -> Accepted:
        """Store the event once per messageId, create the contact if new, then route it."""
        result = await ingest.track(call, route=False)
        _route_later(background, ingest, [result])
        return Accepted.of(result)

    @router.post("/v1/identify", status_code=202, response_model=Accepted, 
              summary="Update a contact's traits (Segment identify)",
              responses=INGEST_RESPONSES)
    async def identify(call: IdentifyCall, background: BackgroundTasks) -> Accepted:
        """Merge traits into the contact: email, phone, timezone, consent, push tokens, others."""
        result = await ingest.identify(call, route=False)
        _route_later(background, ingest, [result])
        return Accepted.of(result)

    @router.post("/v1/page", status_code=202, response_model=Accepted, 
              summary="Record a page view (Segment page)", responses=INGEST_RESPONSES)
    async def page(call: PageCall, background: BackgroundTasks) -> Accepted:
        """Store the view as a `page_viewed` event (URL-visit segments read it), then route it."""
        result = await ingest.page(call, route=False)
        _route_later(background, ingest, [result])
        return Accepted.of(result)

    @router.post("/v1/batch", status_code=202, response_model=list[Accepted], 
              summary="Record several calls at once (Segment batch)",
              responses=INGEST_RESPONSES)
    async def batch(call: BatchCall, background: BackgroundTasks) -> list[Accepted]:
        """All items (track, identify, page) are validated first and stored in one transaction,
        each as its own endpoint stores it; one answer per item."""
        results = await ingest.batch(call.batch, route=False)
        _route_later(background, ingest, results)
        return [Accepted.of(result) for result in results]

    return router


def _route_later(background: BackgroundTasks, ingest: Ingest, results: list[IngestResult]) -> None:
    """Route new events after the answer; duplicates were routed when first accepted."""
    fresh = [event_id for result in results if not result.duplicate
             for event_id in (result.event_id, *result.derived)]
    if fresh:
        background.add_task(ingest.route_soon, fresh)
