"""Quarantined events: list the events whose routing kept failing, and re-drive them.

An event is quarantined after its last failed routing attempt (`cairn.events.ingest`); it never
holds back other contacts' events. After fixing the cause, `POST /v1/quarantine/{id}/retry` (or
`/v1/quarantine/retry` for all) puts it back in line and the relay routes it within seconds.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from cairn.events import quarantine
from cairn.events.quarantine import QuarantinedEvent
from cairn.store.db import Store
from starter.api.auth import requires


class QuarantinedView(QuarantinedEvent):
    """An event set aside after repeated routing failures, with the last error."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{
            "id": 41, "message_id": "m-0001", "contact_id": "c-1", "event": "cart_item_added",
            "timestamp": "2026-03-02T09:00:00Z", "received_at": "2026-03-02T09:00:01Z",
            "attempts": 5, "error": "OverflowError: date value out of range",
            "quarantined_at": "2026-03-02T09:00:31Z",
        }]},
    )


class Released(BaseModel):
    """The events put back in line; the relay routes them on its next pass."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"released": [41]}]})

    released: list[int] = Field(description="ids of the events released from quarantine")


def quarantine_router(store: Store) -> APIRouter:
    router = APIRouter(tags=["quarantine"])

    @router.get("/v1/quarantine", dependencies=[requires("read")],
                response_model=list[QuarantinedView],
                summary="Events whose routing kept failing",
                responses={200: {"description": "quarantined events, oldest first"}})
    async def listed(
        limit: int = Query(100, ge=1, le=1000, description="at most this many"),
        after: int = Query(0, ge=0, le=2**53, description="only ids after this one (paging)"),
    ) -> list[QuarantinedView]:
        found = await quarantine.quarantined(store, limit=limit, after_id=after)
        return [QuarantinedView.model_validate(event.model_dump()) for event in found]

    @router.post("/v1/quarantine/retry", dependencies=[requires("admin")], response_model=Released,
                 summary="Put every quarantined event back in line",
                 responses={200: {"description": "the ids released (may be empty)"}})
    async def retry_all() -> Released:
        return Released(released=await quarantine.release(store))

    @router.post("/v1/quarantine/{event_id}/retry", dependencies=[requires("admin")],
                 response_model=Released,
                 summary="Put one quarantined event back in line",
                 responses={200: {"description": "released; the relay routes it next pass"},
                            404: {"description": "no quarantined event with this id"}})
    async def retry(event_id: int) -> Released:
        if not 0 < event_id <= 2**53:
            raise HTTPException(404, f"no quarantined event {event_id}")
        released = await quarantine.release(store, [event_id])
        if not released:
            raise HTTPException(404, f"no quarantined event {event_id}")
        return Released(released=released)

    return router
