"""`/v1/health`: whether the API process and its store answer."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

from cairn import __version__
from cairn.log import get_logger
from cairn.store.db import Store

log = get_logger(__name__)


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "store": "reachable", "version": "0.1.0"}]}
    )

    status: str
    store: str
    version: str


async def store_health(store: Store) -> Health:
    """Whether the store answers a trivial query."""
    async with store.session() as session:
        await session.execute(text("SELECT 1"))
    return Health(status="ok", store="reachable", version=__version__)


def health_router(store: Store) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/v1/health", response_model=Health, 
             summary="Check that the API and its store answer",
             responses={503: {"description": "the store does not answer"}})
    async def health() -> Health | JSONResponse:
        try:
            return await store_health(store)
        except Exception as error:  # any failure means "not healthy"; say which
            log.warning("api.unhealthy", error=str(error))
            return JSONResponse(status_code=503, content={
                "status": "unavailable", "store": f"unreachable: {type(error).__name__}",
                "version": __version__})

    return router
