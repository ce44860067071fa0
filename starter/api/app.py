"""The HTTP API: Segment-style ingest (`/v1/track`, `/v1/identify`, `/v1/batch`) and read views.

Endpoints are thin: FastAPI validates the body against `cairn.events.calls`, one service call does
the work, a response model answers. Ingest answers 202 only once the call is committed to the
store; routing into Temporal runs after the answer (a background task), so a Temporal outage delays
journeys but never loses an accepted event (it stays unrouted in the store).

Malformed input gets a 422 whose `errors` list names each field path in words a developer can act
on (`body.batch[1].event: Field required`), beside FastAPI's usual `detail`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from temporalio.client import Client

from cairn import __version__
from cairn.events.calls import BatchCall, IdentifyCall, PageCall, TrackCall
from cairn.events.ingest import Ingest, IngestResult
from cairn.journey import Trigger
from cairn.log import get_logger
from cairn.settings import Settings, get_settings
from cairn.store import deliveries as deliveries_repo
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from cairn.traits import ContactTraitError
from starter.api.channels import delivery_router
from starter.api.contacts import contacts_router
from starter.api.entries import entries_router
from starter.api.imports import imports_router
from starter.api.tasks import tasks_router

log = get_logger(__name__)

_CALL_TAGS = ("track", "identify", "page")




# --------------------------------------------------------------------------- response models


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


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "store": "reachable", "version": "0.1.0"}]}
    )

    status: str
    store: str
    version: str


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


class TaskView(BaseModel):
    """A task for people (a call to make, a case to review), created by a journey's `task` step."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "queue": "sales-calls",
                    "title": "Call c-9: downloaded two whitepapers",
                    "note": None,
                    "contact_id": "c-9",
                    "journey_key": "whitepaper-calls",
                    "workflow_id": "journey/whitepaper-calls/c-9",
                    "step": "call_task",
                    "status": "open",
                    "due_at": "2026-03-03T09:00:00Z",
                    "created_at": "2026-03-02T09:00:00Z",
                }
            ]
        },
    )

    id: int
    queue: str
    title: str
    note: str | None
    contact_id: str | None
    journey_key: str | None
    workflow_id: str | None
    step: str | None
    status: str
    due_at: datetime | None
    created_at: datetime
    assignee: str | None = None
    claimed_at: datetime | None = None
    completed_at: datetime | None = None
    outcome: str | None = None


class ValidationProblem(BaseModel):
    """The body of a 422: readable `errors` plus FastAPI's structured `detail`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "errors": ["body.event: Field required"],
                    "detail": [{"type": "missing", "loc": ["body", "event"],
                                "msg": "Field required", "input": {"userId": "c-1"}}],
                }
            ]
        }
    )

    errors: list[str]
    detail: list[dict[str, Any]]


# --------------------------------------------------------------------------- read services


async def store_health(store: Store) -> Health:
    """Whether the store answers a trivial query."""
    async with store.session() as session:
        await session.execute(text("SELECT 1"))
    return Health(status="ok", store="reachable", version=__version__)


async def published_journeys(store: Store) -> list[JourneySummary]:
    """Published journeys (latest version per key) and their open entries."""
    async with store.session() as session:
        rows = await journeys_repo.published(session)
        open_rows = await entries_repo.open_entries(session)
    counts: dict[str, int] = {}
    for entry in open_rows:
        counts[entry.journey_key] = counts.get(entry.journey_key, 0) + 1
    summaries = []
    for row in rows:
        trigger = Trigger.model_validate(row.definition.get("trigger") or {}).describe()
        summaries.append(JourneySummary(
            key=row.key, version=row.version, name=row.name, trigger=trigger,
            published_at=row.published_at, source=row.source,
            open_entries=counts.get(row.key, 0),
        ))
    return summaries


async def latest_deliveries(store: Store, limit: int) -> list[DeliveryView]:
    async with store.session() as session:
        rows = await deliveries_repo.outbox(session, limit=limit)
    return [DeliveryView.model_validate(row) for row in rows]


async def task_list(store: Store, queue: str | None, status: str | None) -> list[TaskView]:
    async with store.session() as session:
        rows = await tasks_repo.list_tasks(session, queue=queue, status=status)
    return [TaskView.model_validate(row) for row in rows]


# --------------------------------------------------------------------------- errors


def readable_errors(errors: list[Any]) -> list[str]:
    """`body.batch[1].event: Field required` for each pydantic error.

    The discriminator tag pydantic puts after a batch index (`batch.1.track.event`) is left out:
    the index already says which item is wrong.
    """
    lines = []
    for error in errors:
        parts: list[str] = []
        previous: Any = None
        for part in error.get("loc", ()):
            if isinstance(part, int):
                parts[-1:] = [f"{parts[-1]}[{part}]" if parts else f"[{part}]"]
            elif isinstance(previous, int) and part in _CALL_TAGS:
                pass
            else:
                parts.append(str(part))
            previous = part
        where = ".".join(parts) or "body"
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return lines


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    log.info("api.rejected", path=request.url.path, errors=readable_errors(errors))
    return JSONResponse(
        status_code=422,
        content={"errors": readable_errors(errors), "detail": jsonable_encoder(errors)},
    )


async def _trait_refused(request: Request, exc: Exception) -> JSONResponse:
    """A trait the store cannot keep (unknown time zone, over-long phone): the caller's error."""
    message = f"body.traits.{exc}"
    log.info("api.rejected", path=request.url.path, errors=[message])
    return JSONResponse(status_code=422, content={"errors": [message], "detail": [message]})


# --------------------------------------------------------------------------- the app

_INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblem, "description": "malformed call; `errors` names each field"},
}


def create_app(
    store: Store,
    ingest: Ingest,
    *,
    settings: Settings | None = None,
    temporal: Client | None = None,
) -> FastAPI:
    """The API over one store; `ingest` decides whether and where events are routed.

    `temporal` lets erasure end a contact's journeys; without it the router's client is used.
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="Cairn",
        version=__version__,
        summary="Customer journeys as code, run durably on Temporal.",
        description=(
            "Send events in the Segment format (`/v1/track`, `/v1/identify`, `/v1/batch`); "
            "they start and advance journeys. Read journeys, contacts, deliveries and tasks."
        ),
    )
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(ContactTraitError, _trait_refused)

    @app.post("/v1/track", status_code=202, response_model=Accepted, tags=["ingest"],
              summary="Record an event (Segment track)", responses=_INGEST_RESPONSES)
    async def track(call: TrackCall, background: BackgroundTasks) -> Accepted:
        """Store the event once per messageId, create the contact if new, then route it."""
        result = await ingest.track(call, route=False)
        _route_later(background, ingest, [result])
        return Accepted.of(result)

    @app.post("/v1/identify", status_code=202, response_model=Accepted, tags=["ingest"],
              summary="Update a contact's traits (Segment identify)",
              responses=_INGEST_RESPONSES)
    async def identify(call: IdentifyCall, background: BackgroundTasks) -> Accepted:
        """Merge traits into the contact: email, phone, timezone, consent, push tokens, others."""
        result = await ingest.identify(call, route=False)
        _route_later(background, ingest, [result])
        return Accepted.of(result)

    @app.post("/v1/page", status_code=202, response_model=Accepted, tags=["ingest"],
              summary="Record a page view (Segment page)", responses=_INGEST_RESPONSES)
    async def page(call: PageCall, background: BackgroundTasks) -> Accepted:
        """Store the view as a `page_viewed` event (URL-visit segments read it), then route it."""
        result = await ingest.page(call, route=False)
        _route_later(background, ingest, [result])
        return Accepted.of(result)

    @app.post("/v1/batch", status_code=202, response_model=list[Accepted], tags=["ingest"],
              summary="Record several calls at once (Segment batch)",
              responses=_INGEST_RESPONSES)
    async def batch(call: BatchCall, background: BackgroundTasks) -> list[Accepted]:
        """All items (track, identify, page) are validated first and stored in one transaction,
        each as its own endpoint stores it; one answer per item."""
        results = await ingest.batch(call.batch, route=False)
        _route_later(background, ingest, results)
        return [Accepted.of(result) for result in results]

    @app.get("/v1/health", response_model=Health, tags=["operations"],
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

    @app.get("/v1/journeys", response_model=list[JourneySummary], tags=["journeys"],
             summary="List published journeys with their open entries")
    async def journeys() -> list[JourneySummary]:
        return await published_journeys(store)

    @app.get("/v1/outbox", response_model=list[DeliveryView], tags=["deliveries"],
             summary="Latest deliveries, newest first")
    async def outbox(
        limit: int = Query(50, ge=1, le=500, description="how many deliveries", examples=[20]),
    ) -> list[DeliveryView]:
        return await latest_deliveries(store, limit)

    @app.get("/v1/tasks", response_model=list[TaskView], tags=["tasks"],
             summary="Tasks for people created by journeys")
    async def tasks(
        queue: str | None = Query(None, description="only this queue", examples=["sales-calls"]),
        status: str | None = Query(None, description="open, claimed or done", examples=["open"]),
    ) -> list[TaskView]:
        return await task_list(store, queue, status)

    app.include_router(contacts_router(store, temporal or _router_client(ingest), ingest=ingest))
    app.include_router(imports_router(ingest))
    app.include_router(entries_router(ingest))
    app.include_router(delivery_router(store, ingest, settings))
    app.include_router(tasks_router(store, ingest))
    return app


def _router_client(ingest: Ingest) -> Client | None:
    return ingest.router.client if ingest.router is not None else None


def _route_later(background: BackgroundTasks, ingest: Ingest, results: list[IngestResult]) -> None:
    """Route new events after the answer; duplicates were routed when first accepted."""
    fresh = [event_id for result in results if not result.duplicate
             for event_id in (result.event_id, *result.derived)]
    if fresh:
        background.add_task(ingest.route_events, fresh)
