"""`/v1/health` and `/v1/ready`: whether the API process is alive, and whether it can work.

`/v1/health` is a liveness probe: it answers 200 from the process alone, touching neither the
store nor Temporal, so a supervisor restarts the process only when the process itself is stuck.
`/v1/ready` is a readiness probe: it asks the store for `SELECT 1` and Temporal for its health,
and answers 503 naming each one that is down, so a load balancer stops sending traffic that would
fail. Not here: the worker's health (Temporal's own UI shows its pollers).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from temporalio.client import Client

from cairn import __version__
from cairn.log import get_logger
from cairn.store.db import Store

log = get_logger(__name__)

CHECK_TIMEOUT_SECONDS = 3.0
"""How long a readiness check waits for the store or Temporal before calling it down."""


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "version": "0.1.0"}]}
    )

    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [
            {"status": "ready", "store": "reachable", "temporal": "reachable",
             "version": "0.1.0", "down": []},
            {"status": "unavailable", "store": "reachable",
             "temporal": "unreachable: RPCError", "version": "0.1.0", "down": ["temporal"]},
        ]}
    )

    status: Literal["ready", "unavailable"]
    store: str
    temporal: str
    version: str
    down: list[str]


async def _store_answers(store: Store) -> None:
    async with store.session() as session:
        await session.execute(text("SELECT 1"))


async def _temporal_answers(client: Client) -> None:
    if not await client.service_client.check_health():
        raise ConnectionError("Temporal reports itself not serving")


async def _check(name: str, probe: asyncio.Future[None] | object) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)  # type: ignore[arg-type]
    except Exception as error:  # any failure means "not reachable"; say which
        log.warning("api.not_ready", part=name, error=str(error))
        return f"unreachable: {type(error).__name__}"
    return "reachable"


async def readiness(store: Store, temporal: Client | None) -> Readiness:
    """Ask the store and Temporal (when the API routes through one) whether they answer."""
    store_state = await _check("store", _store_answers(store))
    temporal_state = ("not used: this API does not route to Temporal" if temporal is None
                      else await _check("temporal", _temporal_answers(temporal)))
    down = [name for name, state in (("store", store_state), ("temporal", temporal_state))
            if state.startswith("unreachable")]
    return Readiness(status="unavailable" if down else "ready", store=store_state,
                     temporal=temporal_state, version=__version__, down=down)


def health_router(store: Store, temporal: Client | None = None) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/v1/health", response_model=Health,
                summary="Check that the API process is alive (touches nothing else)",
                responses={200: {"description": "the process answers"}})
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    @router.get("/v1/ready", response_model=Readiness,
                summary="Check that the store and Temporal answer",
                responses={
                    200: {"description": "the store and Temporal answer"},
                    503: {"model": Readiness,
                          "description": "the store or Temporal does not answer; `down` names "
                                         "which"},
                })
    async def ready() -> Readiness | JSONResponse:
        answer = await readiness(store, temporal)
        if answer.down:
            return JSONResponse(status_code=503, content=answer.model_dump())
        return answer

    return router
