"""`cairn dev`, `cairn worker` and `cairn api`: the long-running processes.

`dev` runs everything on a laptop in one terminal; `worker` and `api` run one part each against
any Temporal (address, namespace, TLS or API key from `CAIRN_*` settings). Each stops cleanly on
Ctrl-C or SIGTERM and exits 0. Heavy imports stay inside the commands so `cairn --help` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from starter.cli.app import app
from starter.cli.common import errors, load_settings, output, run_job

if TYPE_CHECKING:
    from cairn.settings import Settings
    from cairn.store.db import Store


def _announce(settings: Settings, temporal: str) -> None:
    """Name the store and the Temporal this process uses, first thing, on stderr.

    The default store lives under CAIRN_HOME, which is relative to the working directory: a
    process started in another folder would use another store without a word.
    """
    from sqlalchemy.engine import make_url

    store = make_url(settings.store_url).render_as_string(hide_password=True)
    errors.print(f"Store: {store}", highlight=False, soft_wrap=True)
    errors.print(f"Temporal: {temporal}, namespace {settings.temporal_namespace}",
                 highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C or SIGTERM before the job's own handlers are in place ends the command with 0.

    Nothing has started yet at that point (the job installs its handlers first thing), so there
    is nothing to stop, and an interrupted start is not a failure.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("Interrupted before start-up; nothing left running.", err=True)


def _run(job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a long-running job; known start-up failures become one red line and exit code 1."""
    from cairn.search_attribute_setup import SearchAttributeError
    from cairn.store.db import StoreError
    from starter.dev import DevError
    from starter.temporal import TemporalConnectionError

    run_job(job(), DevError, StoreError, TemporalConnectionError, SearchAttributeError)


@app.command()
def dev(
    port: Annotated[int | None, typer.Option(
        help="Temporal gRPC port (default: CAIRN_TEMPORAL_PORT or 7233)")] = None,
    ui_port: Annotated[int | None, typer.Option(
        help="Temporal UI port (default: CAIRN_UI_PORT or 8233)")] = None,
    api_port: Annotated[int | None, typer.Option(
        help="HTTP API port (default: CAIRN_API_PORT or 8000)")] = None,
    journeys: Annotated[Path | None, typer.Option(
        help="folder of journeys to publish (default: CAIRN_JOURNEYS_DIR or journeys/)")] = None,
    no_publish: Annotated[bool, typer.Option(
        "--no-publish", help="do not publish the journeys folder at start")] = False,
) -> None:
    """Run Temporal's dev server, the worker and the API in one terminal (Ctrl-C stops all)."""
    with _interruptible():
        from starter.dev import dev_server_for, run_dev

        settings = load_settings(chatty=True, temporal_port=port, ui_port=ui_port,
                                 api_port=api_port, journeys_dir=journeys)
        _announce(settings, f"{dev_server_for(settings).address} (the dev server)")
        _run(lambda: run_dev(settings, publish=not no_publish, console=output()))


@app.command()
def worker() -> None:
    """Run the journey and delivery workers against the Temporal of CAIRN_TEMPORAL_ADDRESS."""
    with _interruptible():
        from starter.worker import run_worker

        settings = load_settings(chatty=True)
        _announce(settings, settings.temporal_address)
        _run(lambda: run_worker(settings))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="address to listen on (CAIRN_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on (CAIRN_API_PORT)")] = None,
) -> None:
    """Serve the HTTP API (ingest, journeys, runs) against CAIRN_TEMPORAL_ADDRESS."""
    with _interruptible():
        settings = load_settings(chatty=True, api_host=host, api_port=port)
        _announce(settings, settings.temporal_address)
        _run(lambda: run_api(settings))


async def _usable_keys(store: Store) -> int:
    from cairn.store import keys as keys_repo

    async with store.session() as s:
        return sum(1 for key in await keys_repo.all_keys(s) if key.revoked_at is None)


async def run_api(settings: Settings) -> None:
    """`cairn api`: route ingested events into Temporal; serve until Ctrl-C or SIGTERM."""
    from cairn.events.relay import EventRelay, relaying
    from cairn.store.db import Store
    from starter.api.app import create_app
    from starter.dev import start_api, stop_api
    from starter.routing import catalog_ingest, routing_process
    from starter.temporal import connect
    from starter.worker import stop_on_signals

    stop = asyncio.Event()
    stop_on_signals(stop)
    client = await connect(settings)
    store = await Store.open(settings.store_url)
    try:
        ingest = catalog_ingest(settings, store, client,
                                background_routing=not settings.routing_process)
        async with (routing_process(settings) if settings.routing_process
                    else relaying(EventRelay(ingest, store))):
            handle = await start_api(create_app(store, ingest, settings=settings),
                                     settings.api_host, settings.api_port)
            output().print(f"API on {handle.url} (docs: {handle.url}/docs). "
                           "Press Ctrl-C to stop.")
            if not await _usable_keys(store):
                errors.print("No API keys yet: every call but the probes is refused with 401. "
                             "Make one with `cairn keys create NAME --scope write|read|admin`.")
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({stopped, handle.task}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            await stop_api(handle)
        if handle.task.done() and not handle.task.cancelled():
            handle.task.result()  # an API that died on its own reports why
    finally:
        await store.close()
