"""The routing process: `cairn api` routes what it accepts in a process of its own.

Storing a call and routing it (deciding segments, entry rules, signal-with-start) compete for one
interpreter when they share a process: measured with `benchmarks/ingest.py`, routing took about
four fifths of the API's CPU, so the API accepted a fraction of what it can store. With
`CAIRN_ROUTING_PROCESS=true` (the default) the API process only stores and answers; this module's
process routes: its relay (`cairn.events.relay`) polls the store every `POLL` for accepted events
and routes them, each contact's in order, claimed so that no event is routed twice. Nothing is
lost when either process dies: an accepted event is in the store until it is routed, and the API
starts a new routing process when its own ends.

This module starts, watches and stops the process; what routing does is `cairn.events.ingest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from cairn.log import configure, get_logger
from cairn.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client

    from cairn.events.ingest import Ingest
    from cairn.store.db import Store

log = get_logger(__name__)

POLL = timedelta(milliseconds=50)
"""The pause between the routing process's relay passes while nothing is waiting: an accepted
event is routed about this long after the API's answer, at most."""

RESTART_AFTER = timedelta(seconds=1)
"""The pause before a routing process that ended is started again."""


def catalog_ingest(settings: Settings, store: Store, client: Client, **options: Any) -> Ingest:
    """The `Ingest` Cairn's processes run (`cairn dev`, `cairn api`, the routing process): a
    router on the settings' task queues, the profile rules and geofences of the journeys folder,
    trait changes announced; `options` are `Ingest`'s others. Gives `store` the settings' address
    key (`cairn.store.suppressions`)."""
    from cairn.events.geofencing import Geofencing
    from cairn.events.ingest import Ingest
    from cairn.events.profile_rules import ProfileRules
    from cairn.events.router import Router

    # identify calls that bring back an erased contact's suppressed address are suppressed again
    store.use_address_key(settings.address_key())
    router = Router(client, store, task_queue=settings.journey_task_queue,
                    delivery_task_queue=settings.delivery_task_queue)
    return Ingest(store, router,
                  profile_rules=ProfileRules.from_folder(store, settings.journeys_dir),
                  geofencing=Geofencing.from_folder(store, settings.journeys_dir),
                  attribute_changes=True, **options)


def route_forever(settings: Settings) -> None:
    """The routing process's main: route accepted events until terminated."""
    # Ctrl-C in a terminal reaches the whole process group; the API stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(settings.log_level, json=settings.log_json)
    asyncio.run(_route(settings))


async def _route(settings: Settings) -> None:
    from cairn.events.ingest import QUIET_DECISIONS_EVERY
    from cairn.events.relay import EventRelay
    from cairn.store.db import Store
    from starter.temporal import connect

    client = await connect(settings)
    store = await Store.open(settings.store_url, migrate=False)
    try:
        ingest = catalog_ingest(settings, store, client,
                                quiet_decisions_every=QUIET_DECISIONS_EVERY)
        log.info("routing.started")
        await EventRelay(ingest, store, interval=POLL, grace=timedelta(0)).run()
    finally:
        await store.close()


class RoutingProcess:
    """The routing process of a running API: started again whenever it ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: BaseProcess | None = None
        self.restarts = 0

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.process = context.Process(target=route_forever, args=(self.settings,),
                                       name="cairn-routing", daemon=True)
        self.process.start()

    async def watch(self) -> None:
        """Start the process again whenever it ended (checked every `RESTART_AFTER`)."""
        while True:
            await asyncio.sleep(RESTART_AFTER.total_seconds())
            if self.process is not None and not self.process.is_alive():
                log.warning("routing.restarted", exit_code=self.process.exitcode)
                self.restarts += 1
                await asyncio.to_thread(self.start)

    async def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()


@contextlib.asynccontextmanager
async def routing_process(settings: Settings) -> AsyncIterator[RoutingProcess]:
    """Run the routing process while the block runs, starting it again whenever it ends."""
    routing = RoutingProcess(settings)
    await asyncio.to_thread(routing.start)
    watching = asyncio.create_task(routing.watch(), name="cairn-routing-watch")
    try:
        yield routing
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await routing.stop()
