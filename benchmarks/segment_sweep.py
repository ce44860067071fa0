"""What a segment sweep costs: time and peak memory over 50,000 contacts.

It creates the contacts in a throwaway store (one in ten last seen 40 days ago, so they enter
`inactive_30d`; some with purchases, so `has_done` rules have rows to count; one in three with
a login, so the inactivity decay reads logins), then runs the sweep's batch activity
(`SweepActivities.sweep_segments`, 1,000 contacts a batch by default, keyset pagination) over
all of them directly, without Temporal: every time-based segment of the catalog decided per
contact, memberships and `segment_entered` events written, and the catalog's inactivity decay
(-10 after 7 days without login) applied to the contacts it is due for. The events stay
unrouted (routing is the router's cost, measured by engine_overhead.py). With `--workflow` it
also runs `SegmentSweepWorkflow` on a Temporal dev server (started here on a free port) with
the real worker, routing included.

Printed: contacts, batches, events emitted, decays applied, seconds, contacts per second, and
peak memory: the process's peak RSS, and with `--heap` the Python heap's peak from tracemalloc
during a third sweep (run apart because tracing slows a sweep several times).

The store is a SQLite file in a temporary folder, or the database of `--database-url` (any
async SQLAlchemy URL of an empty database, e.g. `postgresql+asyncpg://cairn:cairn@127.0.0.1/
bench`). With `CAIRN_BENCH_POSTGRES_URL` set (a `postgresql+asyncpg://` URL of an empty
database), the same runs on PostgreSQL after SQLite. It asserts nothing.

    python benchmarks/segment_sweep.py [--contacts 50000] [--batch-size 1000] [--heap]
                                       [--workflow] [--database-url URL] [--catalog DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from activities.sweeps import SweepActivities
from cairn.log import configure
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import Contact, Event, ScoreChangeRecord
from cairn.sweeps import (
    SEGMENT_SWEEP_WORKFLOW,
    SweepBatch,
    SweepConfig,
    SweepInput,
    SweepResult,
)

CATALOG = Path(__file__).resolve().parent.parent / "journeys"
POSTGRES_VARIABLE = "CAIRN_BENCH_POSTGRES_URL"


@dataclass
class Figures:
    label: str
    contacts: int
    batches: int
    emitted: int
    decays: int
    seconds: float
    heap_peak_mb: float | None

    def show(self) -> None:
        rate = self.contacts / self.seconds if self.seconds else 0.0
        heap = f"{self.heap_peak_mb:.1f} MB" if self.heap_peak_mb is not None else "n/a"
        print(f"{self.label:<28} {self.contacts:>7} contacts  {self.batches:>4} batches  "
              f"{self.emitted:>6} events  {self.decays:>5} decays  {self.seconds:>7.1f} s  "
              f"{rate:>7.0f} contacts/s  heap peak {heap}  "
              f"process peak RSS {peak_rss_mb():.0f} MB", flush=True)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def fill(store: Store, count: int, now: datetime) -> None:
    """`count` contacts in chunks; one in ten inactive for 40 days, one in five a buyer, one in
    three logged in when last seen."""
    chunk = 5000
    for start in range(0, count, chunk):
        contacts, events = [], []
        for i in range(start, min(start + chunk, count)):
            contact_id = f"c{i:07d}"
            seen = now - timedelta(days=40 if i % 10 == 0 else 1)
            contacts.append({
                "id": contact_id, "timezone": "Europe/Bucharest", "attributes": {"plan": "free"},
                "first_seen_at": seen, "last_seen_at": seen, "created_at": seen,
                "updated_at": seen, "push_tokens": [], "web_push": [], "consent": {},
                "suppressed": [], "tags": [],
            })
            if i % 5 == 0:
                events.append({
                    "message_id": f"bench-{contact_id}", "type": "track",
                    "contact_id": contact_id, "name": "purchase",
                    "properties": {"total": 60}, "timestamp": seen, "received_at": seen,
                })
            if i % 3 == 0:
                events.append({
                    "message_id": f"bench-login-{contact_id}", "type": "track",
                    "contact_id": contact_id, "name": "login", "properties": {},
                    "timestamp": seen, "received_at": seen,
                })
        async with store.session() as s, s.begin():
            await s.execute(insert(Contact), contacts)
            if events:
                await s.execute(insert(Event), events)


async def sweep_directly(store: Store, config: SweepConfig, now: datetime, label: str,
                         *, heap: bool = False) -> Figures:
    """Batches one after another, as the workflow runs them; `heap` traces Python allocations
    (tracemalloc slows the sweep several times, so it gets a run of its own)."""
    sweeps = SweepActivities(store)
    batch = SweepBatch(config=config, now=now, sweep_id=f"bench-{uuid.uuid4().hex[:8]}")
    contacts = batches = emitted = 0
    if heap:
        tracemalloc.start()
    started = time.perf_counter()
    while True:
        result = await sweeps.sweep_segments(batch)
        batches += 1
        contacts += result.contacts
        emitted += result.emitted
        if result.finished(config.batch_size):
            break
        batch.after = result.last
    seconds = time.perf_counter() - started
    heap_peak: float | None = None
    if heap:
        heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return Figures(label, contacts, batches, emitted, await decays(store, batch.sweep_id),
                   seconds, heap_peak)


async def decays(store: Store, sweep_id: str) -> int:
    """Score changes the sweep `sweep_id` applied (inactivity decays)."""
    async with store.session() as s:
        found = await s.scalar(select(func.count()).select_from(ScoreChangeRecord)
                               .where(ScoreChangeRecord.source == f"sweep:{sweep_id}"))
    return int(found or 0)


async def sweep_on_temporal(store: Store, config: SweepConfig, now: datetime,
                            folder: Path) -> Figures:
    from starter.dev import DevServer, free_port
    from starter.worker import journey_workers, running

    server = DevServer(db_file=None, log_file=folder / "temporal.log", port=free_port(),
                       headless=True)
    client = await server.start(Settings(home=folder))
    try:
        workers = journey_workers(client, store, journey_queue=config.journey_task_queue,
                                  delivery_queue=f"{config.journey_task_queue}-delivery")
        workflow_id = f"bench-sweep-{uuid.uuid4().hex[:8]}"  # also the sweep id
        async with running(workers):
            started = time.perf_counter()
            result: SweepResult = await client.execute_workflow(
                SEGMENT_SWEEP_WORKFLOW, SweepInput(config=config, now=now),
                id=workflow_id, task_queue=config.journey_task_queue,
                result_type=SweepResult,
            )
            seconds = time.perf_counter() - started
    finally:
        await server.stop()
    return Figures(f"workflow ({result.runs} runs)", result.contacts, result.batches,
                   result.emitted, await decays(store, workflow_id), seconds, None)


async def bench(url: str, name: str, args: argparse.Namespace, folder: Path) -> None:
    now = datetime.now(UTC)
    store = await Store.open(url)
    try:
        started = time.perf_counter()
        await fill(store, args.contacts, now)
        print(f"{name}: {args.contacts} contacts created in {time.perf_counter() - started:.1f} s")
        config = SweepConfig(journeys_dir=str(args.catalog), batch_size=args.batch_size,
                             journey_task_queue=f"bench-{uuid.uuid4().hex[:8]}")
        (await sweep_directly(store, config, now, f"{name} activity, 1st sweep")).show()
        # The second sweep changes nothing: the steady-state cost of an hourly sweep.
        (await sweep_directly(store, config, now, f"{name} activity, 2nd sweep")).show()
        if args.heap:
            (await sweep_directly(store, config, now, f"{name} 3rd, heap traced",
                                  heap=True)).show()
        if args.workflow:
            later = now + timedelta(minutes=1)
            (await sweep_on_temporal(store, config, later, folder)).show()
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int,
                        default=SweepConfig.model_fields["batch_size"].default,
                        help="contacts per batch (default: the sweeps' own, %(default)s)")
    parser.add_argument("--catalog", type=Path, default=CATALOG,
                        help="journeys folder whose segments/ are swept (default: the bundled one)")
    parser.add_argument("--heap", action="store_true",
                        help="a third sweep with tracemalloc on: the Python heap's peak")
    parser.add_argument("--workflow", action="store_true",
                        help="also run SegmentSweepWorkflow on a Temporal dev server")
    parser.add_argument("--database-url", default=None,
                        help="run on this (empty) database instead of a throwaway SQLite file, "
                             "e.g. postgresql+asyncpg://cairn:cairn@127.0.0.1:5432/bench")
    args = parser.parse_args()
    configure("WARNING", False)

    async def everything() -> None:
        with tempfile.TemporaryDirectory(prefix="cairn-sweep-bench-") as tmp:
            folder = Path(tmp)
            if args.database_url:
                backend = make_url(args.database_url).get_backend_name()
                await bench(args.database_url, backend, args, folder)
                return
            await bench(f"sqlite+aiosqlite:///{folder / 'cairn.db'}", "sqlite", args, folder)
            postgres = os.environ.get(POSTGRES_VARIABLE, "").strip()
            if postgres:
                await bench(postgres, "postgresql", args, folder)
            else:
                print(f"postgresql: skipped (set {POSTGRES_VARIABLE} to an empty database's URL)")

    asyncio.run(everything())
    sys.stdout.flush()
    os._exit(0)  # the Temporal SDK may abort at interpreter exit (see starter/cli.py)


if __name__ == "__main__":
    main()
