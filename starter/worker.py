"""The worker: the journey interpreter and its activities on one task queue, sends on another.

Sends run on their own queue (`cairn-delivery`) so they can be rate-limited and scaled apart from
the interpreter. This module only builds and runs workers; what the workflows and activities do
lives in `workflows/` and `activities/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from cairn.journey_run import DELIVERY_TASK_QUEUE, JOURNEY_TASK_QUEUE
from cairn.log import configure, get_logger
from cairn.settings import Settings
from starter.worker_metrics import ActivityFailures, serve_worker_metrics

if TYPE_CHECKING:
    from activities.send import DeliveryActivities
    from cairn.channels.base import Provider
    from cairn.channels.registry import ChannelSet
    from cairn.delivery_policy import DeliveryPolicy
    from cairn.events.ingest import Ingest
    from cairn.store.db import Store

log = get_logger(__name__)

PASSTHROUGH_MODULES = (
    "pydantic",
    "pydantic_core",
    "cairn",
    "structlog",
    "yaml",
    "annotated_types",
    "typing_extensions",
)
"""Imported once outside the sandbox instead of per workflow run.

Workflow code imports only `cairn` models and pure helpers; re-importing pydantic and the models
for every run would cost far more than the interpreter itself, and they keep no per-run state.
"""


ACTIVITY_SLOTS = 16
"""Activities (and, apart, local activities) a worker runs at once on each of its queues."""

STORE_POOL_SIZE = ACTIVITY_SLOTS
"""Store connections a worker process keeps (opened when first needed), besides the pool's
overflow of 10: about one per activity running at once, so activities rarely open and close an
overflow connection. Not more: SQLite serialises writers, and many connections waiting on its
lock time out sooner than the same work queued for a connection in the pool."""


DEFAULT_CACHED_RUNS = Settings.model_fields["worker_cached_runs"].default
"""Journey runs kept in a worker's memory unless CAIRN_WORKER_CACHED_RUNS says otherwise."""


SHARED_WORKFLOW_MODULES = ("workflows",)
"""Cairn's own workflow code, imported once and shared by every run in production workers.

The strict sandbox imports the interpreter's modules afresh for each run it starts and keeps
them while the run is cached: about 190 KB of module objects and bytecode per cached run, where
a hand-written one-timer costs a few KB, and 24 ms of CPU per new run. The interpreter keeps no
state in its modules (everything a run knows is in its `JourneyRun`), so sharing them changes
nothing a run does; what the strict sandbox adds is catching a non-deterministic call (the
clock, random, I/O) in workflow code. Tests and simulations keep running the interpreter in
the strict sandbox, so such a call still fails there, and the replay tests hold every saved
history.
"""


def workflow_runner(*, share_workflow_code: bool = False) -> SandboxedWorkflowRunner:
    """The sandbox every journey runs in, with Cairn's heavy pure modules passed through; with
    `share_workflow_code`, the interpreter's own modules too (see SHARED_WORKFLOW_MODULES)."""
    modules = PASSTHROUGH_MODULES + (SHARED_WORKFLOW_MODULES if share_workflow_code else ())
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*modules)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def compile_workflow_code() -> None:
    """Write the bytecode of the workflow modules where it is missing or stale.

    The sandbox imports a workflow's modules afresh for every new run; without cached bytecode
    (an editable install run with PYTHONDONTWRITEBYTECODE=1, say) each of those imports compiles
    the source again, a large share of a short run's cost. A wheel install has it already;
    where the folder is not writable this does nothing.
    """
    import compileall

    import workflows

    with contextlib.suppress(OSError):
        compileall.compile_dir(Path(workflows.__file__).parent, quiet=2)


def journey_workers(
    client: Client,
    store: Store,
    *,
    journey_queue: str = JOURNEY_TASK_QUEUE,
    delivery_queue: str = DELIVERY_TASK_QUEUE,
    delivery: DeliveryActivities | None = None,
    ingest: Ingest | None = None,
    cached_runs: int = DEFAULT_CACHED_RUNS,
    share_workflow_code: bool = False,
) -> list[Worker]:
    """One worker for the interpreter and its activities, one for deliveries; not yet running.

    `delivery` carries the channel providers and the delivery policy; without it every channel
    goes to the local outbox (tests, simulations). `cached_runs` is how many runs the journey
    worker keeps in memory (CAIRN_WORKER_CACHED_RUNS); the rest wait on Temporal alone.
    `share_workflow_code` imports the interpreter once for all runs (production workers; see
    SHARED_WORKFLOW_MODULES); tests and simulations leave it off.
    """
    from activities import delivery_activities, journey_activities
    from activities.failures import ScrubFailures
    from workflows import WORKFLOWS

    compile_workflow_code()

    journey_worker = Worker(
        client,
        task_queue=journey_queue,
        workflows=list(WORKFLOWS),
        activities=journey_activities(store, delivery, ingest),
        workflow_runner=workflow_runner(share_workflow_code=share_workflow_code),
        max_cached_workflows=cached_runs,
        interceptors=[ActivityFailures(), ScrubFailures(store)],
        max_concurrent_activities=ACTIVITY_SLOTS,
        max_concurrent_local_activities=ACTIVITY_SLOTS,
    )
    delivery_worker = Worker(
        client,
        task_queue=delivery_queue,
        activities=delivery_activities(store, delivery),
        interceptors=[ActivityFailures(), ScrubFailures(store)],
        max_concurrent_activities=ACTIVITY_SLOTS,
    )
    return [journey_worker, delivery_worker]


@contextlib.asynccontextmanager
async def running(workers: list[Worker]) -> AsyncIterator[list[Worker]]:
    """Run the workers in the background; on exit, shut each down (running tasks are cancelled)."""
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        yield workers


@contextlib.asynccontextmanager
async def simulation_workers(
    client: Client, store: Store, *, journey_queue: str, delivery_queue: str,
    channels: ChannelSet | None, policy: DeliveryPolicy | None, ingest: Ingest,
) -> AsyncIterator[list[Worker]]:
    """Cairn's workers for one simulation run (`cairn.simulation.engine.RunWorkers`)."""
    from activities.send import DeliveryActivities

    delivery = DeliveryActivities(store, channels, policy)
    workers = journey_workers(client, store, journey_queue=journey_queue,
                              delivery_queue=delivery_queue, delivery=delivery, ingest=ingest)
    async with running(workers):
        yield workers


def stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set `stop` instead of raising, so shutdown runs in order and exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """`cairn worker`: connect, check search attributes, open the existing store, run until
    stopped."""
    from cairn.search_attribute_setup import ensure_search_attributes
    from starter.temporal import connect

    configure(settings.log_level, settings.log_json)
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    endpoint = (serve_worker_metrics(settings.worker_metrics_port, settings.worker_metrics_host)
                if settings.worker_metrics_port else None)
    try:
        client = await connect(settings, runtime=endpoint.runtime if endpoint else None)
        await ensure_search_attributes(client)
        store = await open_existing_store(settings.store_url)
        store.use_address_key(settings.address_key())
    except BaseException:
        if endpoint is not None:
            endpoint.close()
        raise
    bound = log.bind(address=settings.temporal_address, namespace=settings.temporal_namespace)
    delivery = delivery_for(settings, store)
    try:
        workers = journey_workers(
            client,
            store,
            journey_queue=settings.journey_task_queue,
            delivery_queue=settings.delivery_task_queue,
            delivery=delivery,
            cached_runs=settings.worker_cached_runs,
            share_workflow_code=not settings.worker_strict_sandbox,
        )
        async with running(workers):
            bound.info("worker.started", queues=[settings.journey_task_queue,
                                                 settings.delivery_task_queue],
                       cached_runs=workers[0].config().get("max_cached_workflows"))
            await stop.wait()
            bound.info("worker.stopping")
    finally:
        await delivery.channels.aclose()
        await store.close()
        if endpoint is not None:
            endpoint.close()
    bound.info("worker.stopped")


async def open_existing_store(url: str) -> Store:
    """The store at `url`, brought to the current schema, provided it was created before.

    A worker never creates a store: one started in another folder (the default store is under
    CAIRN_HOME, relative to the working directory) would otherwise work on a new, empty store
    and every run would fail on contacts it cannot find. `cairn publish`, `cairn api` and
    `cairn dev` create the store.
    """
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.engine import make_url

    from cairn.store.db import Store, StoreError

    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    missing = StoreError(
        f"the store {shown} has no Cairn tables, so it is not the store the API and the catalog "
        "use. Point the worker at that store (CAIRN_HOME as an absolute path, or "
        "CAIRN_DATABASE_URL), or create this one first with `cairn publish` run with the same "
        "settings"
    )
    database = parsed.database or ""
    if (parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
            and not database.startswith("file:") and not Path(database).exists()):
        raise missing  # checked before opening: opening a SQLite file creates it
    store = await Store.open(url, migrate=False, pool_size=STORE_POOL_SIZE)
    try:
        async with store.engine.connect() as connection:
            revision = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision())
        if revision is None:
            raise missing
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store


def delivery_for(
    settings: Settings, store: Store, *, email: Provider | None = None,
) -> DeliveryActivities:
    """Delivery activities with the configured providers and the delivery policy
    (`journeys/policies/delivery.yaml`); `email` overrides the email provider, as `cairn dev`
    does with its SMTP sink."""
    from activities.send import DeliveryActivities
    from cairn.catalog_folder import load_policy
    from cairn.channels.registry import build_channels

    return DeliveryActivities(
        store, build_channels(settings, store, email=email), load_policy(settings.journeys_dir),
        public_url=settings.public_url, signing_key=settings.signing_key(),
    )
