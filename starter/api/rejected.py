"""`GET /v1/rejected`: the batch items the API refused while storing the rest of their batch.

Read-only: a refused call is fixed at its source and sent again, not replayed from here.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cairn.store import rejected as rejected_repo
from cairn.store.db import Store
from starter.api.auth import requires


class RejectedCallView(BaseModel):
    """One refused call: the endpoint, its index in the batch, the reason, the call as sent."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={"examples": [{
            "id": 7, "endpoint": "/v1/batch", "batch_index": 1, "message_id": "msg-0002",
            "reason": "body.batch[1].event: Field required",
            "call": '{"type": "track", "userId": "c-1", "messageId": "msg-0002"}',
            "received_at": "2026-03-02T09:00:00Z"}]},
    )

    id: int
    endpoint: str
    batch_index: int | None = Field(description="the call's position in its batch, from 0")
    message_id: str | None
    reason: str
    call: str = Field(description="the call as received, JSON text")
    received_at: datetime


def rejected_router(store: Store) -> APIRouter:
    """The rejected-calls view over one store."""
    router = APIRouter(tags=["ingest"])

    @router.get("/v1/rejected", dependencies=[requires("read")],
                response_model=list[RejectedCallView],
                summary="List batch items that were refused, newest first",
                responses={422: {"description": "`limit` or `endpoint` is invalid"}})
    async def list_rejected(
        limit: int = Query(50, ge=1, le=1000, description="how many, newest first"),
        endpoint: str | None = Query(None, max_length=64, examples=["/v1/batch"],
                                     description="only calls refused by this endpoint"),
    ) -> list[RejectedCallView]:
        """Each refused item of a `/v1/batch` or `/v1/import` whose valid neighbours were
        stored: why it was refused and the call as sent, to fix at the source."""
        async with store.session() as session:
            rows = await rejected_repo.latest_rejected(session, limit=limit, endpoint=endpoint)
        return [RejectedCallView.model_validate(row) for row in rows]

    return router
