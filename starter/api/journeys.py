"""`/v1/journeys`: the published journeys (latest version of each) and who is in them now."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from cairn.journey import Trigger
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from starter.api.auth import requires


class JourneySummary(BaseModel):
    """A published journey version, with how many contacts are in it now."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "cart-abandonment",
                    "version": 2,
                    "name": "Reduce cart abandonment",
                    "trigger": "event cart_item_added",
                    "published_at": "2026-03-01T08:00:00Z",
                    "source": "journeys/cart-abandonment.yaml",
                    "open_entries": 14,
                }
            ]
        }
    )

    key: str
    version: int
    name: str
    trigger: str
    published_at: datetime
    source: str | None
    open_entries: int


async def published_journeys(store: Store) -> list[JourneySummary]:
    """Published journeys (latest version per key) and their open entries."""
    async with store.session() as session:
        rows = await journeys_repo.published(session)
        counts = await entries_repo.open_entry_counts(session)
    summaries = []
    for row in rows:
        trigger = Trigger.model_validate(row.definition.get("trigger") or {}).describe()
        summaries.append(JourneySummary(
            key=row.key, version=row.version, name=row.name, trigger=trigger,
            published_at=row.published_at, source=row.source,
            open_entries=counts.get(row.key, 0),
        ))
    return summaries


def journeys_router(store: Store) -> APIRouter:
    router = APIRouter(tags=["journeys"])

    @router.get("/v1/journeys", dependencies=[requires("read")],
                response_model=list[JourneySummary], 
             summary="List published journeys with their open entries")
    async def journeys() -> list[JourneySummary]:
        return await published_journeys(store)

    return router
