"""The HTTP API: one FastAPI app over one store, assembled from a router per resource.

- `starter.api.ingest`: Segment-format calls (`/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`,
  `/v1/group`, `/v1/batch`, `/v1/import`); `starter.api.rejected`: batch items refused;
- `starter.api.contacts`: read, change, erase and alias contacts;
- `starter.api.journeys`, `starter.api.outbox`, `starter.api.tasks`: read views and task work;
  `starter.api.reports`: a journey's funnel and message metrics;
- `starter.api.entries`, `starter.api.imports`: putting contacts into journeys directly or by CSV;
- `starter.api.channels`: unsubscribe links, the in-app inbox and provider callbacks;
- `starter.api.links`: click tracking's redirects (`/l/{token}`) and open pixel (`/o/{token}`);
- `starter.api.keys`: API keys (`starter.api.auth` checks them on every other route);
- `starter.api.codec`: Temporal's remote codec (`/codec/decode`, `/codec/encode`) for UI and CLI;
- `starter.api.health`: whether the API is alive (`/v1/health`) and ready (`/v1/ready`);
  `starter.api.metrics`: Prometheus counters (`/metrics`);
- `starter.console`: the operator console's pages at `/console` (a session cookie from a key).

Endpoints are thin: a pydantic model validates the body, one service call from `cairn` does the
work, a response model answers. Malformed input gets a 422 naming each field (`starter.api.errors`).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client

from cairn import __version__
from cairn.events.ingest import Ingest
from cairn.settings import Settings, get_settings
from cairn.store.db import Store
from cairn.traits import ContactTraitError
from starter.api.auth import Keyring, document_keys
from starter.api.channels import channels_router
from starter.api.codec import CodecCors, api_data_keys, codec_router
from starter.api.contacts import contacts_router
from starter.api.entries import entries_router
from starter.api.errors import (
    http_refusal,
    nested_too_deeply,
    number_too_large,
    trait_refused,
    validation_failed,
)
from starter.api.health import health_router
from starter.api.imports import imports_router
from starter.api.ingest import ingest_router
from starter.api.journeys import journeys_router
from starter.api.keys import keys_router
from starter.api.links import links_router
from starter.api.metrics import metrics_router
from starter.api.outbox import outbox_router
from starter.api.quarantine import quarantine_router
from starter.api.rejected import rejected_router
from starter.api.reports import reports_router
from starter.api.tasks import tasks_router
from starter.console.pages import install_console
from starter.schedules import entry_config


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
            "Send events in the Segment format (`/v1/track`, `/v1/identify`, `/v1/page`, "
            "`/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch`); "
            "they start and advance journeys. Read journeys, contacts, deliveries and tasks."
        ),
    )
    app.state.settings = settings
    app.state.store = store
    if store.address_key is None:  # erasure keeps suppressions hashed under it
        store.use_address_key(settings.address_key())
    app.state.keyring = Keyring(store)
    if settings.cors_origins:
        # Closed unless origins are listed: a web page of another origin can neither read an
        # answer nor send a call with an Authorization header (its preflight is refused).
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["authorization", "content-type", "content-encoding"],
                           max_age=600)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(ContactTraitError, trait_refused)
    app.add_exception_handler(OverflowError, number_too_large)
    app.add_exception_handler(DBAPIError, number_too_large)  # other database errors: re-raised
    app.add_exception_handler(RecursionError, nested_too_deeply)
    app.add_exception_handler(StarletteHTTPException, http_refusal)
    app.include_router(ingest_router(ingest))
    app.include_router(rejected_router(store))
    app.include_router(health_router(store, temporal or _router_client(ingest)))
    app.include_router(journeys_router(store))
    app.include_router(reports_router(store))
    app.include_router(outbox_router(store))
    app.include_router(tasks_router(store, ingest))
    app.include_router(quarantine_router(store))
    app.include_router(contacts_router(store, temporal or _router_client(ingest), ingest=ingest))
    app.include_router(imports_router(ingest, entry_config(settings) if settings else None))
    app.include_router(entries_router(ingest))
    app.include_router(channels_router(store, ingest, settings))
    app.include_router(links_router(store, ingest, settings))
    app.include_router(keys_router(store))
    app.include_router(codec_router(
        api_data_keys(settings, store, temporal or _router_client(ingest)),
        encrypt=settings.payload_encryption))
    app.add_middleware(CodecCors, origins=settings.codec_cors_origins)
    app.include_router(metrics_router())
    install_console(app, store, ingest, settings)
    document_keys(app)
    return app


def _router_client(ingest: Ingest) -> Client | None:
    return ingest.router.client if ingest.router is not None else None
