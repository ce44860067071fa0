"""`/v1/outbox`: the delivery ledger, newest first (sends, alerts, webhooks, audience changes).

`status` is the ledger's (`activities.ledger`): `sent`, `unconfirmed` (the provider call was
interrupted and its outcome is unknown), `failed`, `sending`, `skipped:*`, `recorded`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from cairn.store import deliveries as deliveries_repo
from cairn.store.db import Store
from starter.api.auth import requires


class DeliveryView(BaseModel):
    """One entry of the delivery ledger (a send, alert, webhook call or audience change)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "kind": "send",
                    "workflow_id": "journey/cart-abandonment/c-1",
                    "journey_key": "cart-abandonment",
                    "step": "push_reminder",
                    "contact_id": "c-1",
                    "channel": "push",
                    "provider": "outbox",
                    "provider_message_id": "outbox-3f2a9c1d7e5b4a6f8c0d2e1f",
                    "template": "cart-reminder",
                    "category": "marketing",
                    "status": "sent",
                    "reason": None,
                    "rendered": {"title": "Your cart", "body": "2 items are waiting"},
                    "created_at": "2026-03-02T11:00:00Z",
                    "sent_at": "2026-03-02T11:00:00Z",
                    "planned_at": "2026-03-02T11:00:00Z",
                    "accepted_at": "2026-03-02T11:00:01Z",
                }
            ]
        },
    )

    id: int
    kind: str
    workflow_id: str | None
    journey_key: str | None
    step: str | None
    contact_id: str | None
    channel: str | None
    provider: str | None
    provider_message_id: str | None = None
    template: str | None
    category: str | None
    status: str
    reason: str | None
    rendered: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None
    planned_at: datetime | None = None
    accepted_at: datetime | None = None


async def latest_deliveries(
    store: Store, limit: int, status: str | None = None,
) -> list[DeliveryView]:
    async with store.session() as session:
        rows = await deliveries_repo.outbox(session, limit=limit, status=status)
    return [DeliveryView.model_validate(row) for row in rows]


def outbox_router(store: Store) -> APIRouter:
    router = APIRouter(tags=["deliveries"])

    @router.get("/v1/outbox", dependencies=[requires("read")], response_model=list[DeliveryView],
                summary="Latest deliveries, newest first",
                responses={200: {"description": "the latest ledger rows"},
                           422: {"description": "a query parameter is out of range"}})
    async def outbox(
        limit: int = Query(50, ge=1, le=500, description="how many deliveries", examples=[20]),
        status: str | None = Query(None, max_length=32, examples=["unconfirmed"],
                                   description="only rows with this status"),
    ) -> list[DeliveryView]:
        return await latest_deliveries(store, limit, status)

    return router
