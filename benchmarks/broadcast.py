"""Broadcasts: a schedule's occurrence over a segment against raw per-contact fan-out.

One `temporal server start-dev` (started here, SQLite file in a temporary folder), one store
(a SQLite file, or the empty database of `--database-url`), and `--workers` worker processes
(each a process of its own, started here), for three sides over the same N contacts:

* **raw**: the script starts N workflows (`start_workflow`, 64 at a time) of a hand-written
  workflow that runs one activity writing one ledger row; measured until the N rows are there.
* **send**: a published journey `trigger: schedule over segment readers -> send email -> end`;
  one `ScheduledEntryWorkflow` occurrence (what the journey's Temporal Schedule starts) enters
  the N members, measured until the occurrence ends and the N ledger rows are `sent`.
* **import**: `import_csv` (what `cairn import --journey` and `POST /v1/imports` run) of a CSV
  naming the N contacts into a journey `trigger: imported -> send email -> end`, measured until
  the N ledger rows are `sent` (the rows stored and the traits routed in this process, the
  entries entered by an `ImportEntryWorkflow` on the workers).
* **wait**: the same as **send** with `wait 30d -> send email`: every contact gets its own run,
  measured until the occurrence ends (N entries recorded, N runs started) and a probe run
  queued behind them on the journey queue has finished (so the runs' first workflow tasks, up
  to their timers, are done too, within a few tasks).

Each worker process runs Cairn's workers (`starter.worker.journey_workers`: the interpreter and
its activities, the delivery queue) and the raw workflow's worker. It prints, per side, contacts
and contacts per second, and the ratio of each Cairn side to raw (raw is measured before and
after the Cairn sides, and the mean taken, since a shared machine's load drifts). It asserts
nothing.

    python benchmarks/broadcast.py [--contacts 2000] [--workers 1] [--batch-size 250]
                                   [--parallel 8] [--database-url URL]
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import contextlib
    import os
    import subprocess
    import sys
    import tempfile
    import time
    import uuid
    from pathlib import Path

    from sqlalchemy import func, select
    from temporalio.client import Client
    from temporalio.worker import Worker

    from cairn.catalog import publish_catalog
    from cairn.events.imports import import_csv
    from cairn.events.ingest import Ingest
    from cairn.events.router import Router
    from cairn.log import configure
    from cairn.settings import Settings
    from cairn.store import contacts as contacts_repo
    from cairn.store import deliveries
    from cairn.store import segments as segments_repo
    from cairn.store.db import Store
    from cairn.store.schema import Delivery
    from cairn.sweeps import SCHEDULED_ENTRY_WORKFLOW, ScheduleInput, SweepConfig, SweepResult
    from starter.dev import DevServer, free_port
    from starter.temporal import connect
    from starter.worker import journey_workers, running, workflow_runner

JOURNEY_QUEUE, DELIVERY_QUEUE, RAW_QUEUE = "bench-journeys", "bench-delivery", "bench-raw"
SEGMENT = "readers"
PROBE_WAIT = 300

SEND_JOURNEY = """\
key: bcast-send
name: Broadcast, one email
trigger: {schedule: {cron: "0 9 1 * *", segment: readers}}
steps:
  mail: {send: {channel: email, template: bcast-news}, next: end}
"""
WAIT_JOURNEY = """\
key: bcast-wait
name: Broadcast, wait then email
trigger: {schedule: {cron: "0 9 1 * *", segment: readers}}
steps:
  pause: {wait: 30d, next: mail}
  mail: {send: {channel: email, template: bcast-news}, next: end}
"""
IMPORT_JOURNEY = """\
key: bcast-import
name: Imported, one email
trigger: {imported: true}
steps:
  mail: {send: {channel: email, template: bcast-news}, next: end}
"""
TEMPLATE = """\
email: {subject: "News for {{ contact.first_name }}", body: "Hello {{ contact.first_name }}."}
"""


class RawActivities:
    """The raw side's one activity: the same ledger row a send writes, nothing around it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="raw_send")
    async def send(self, run_id: str) -> int:
        contact_id = run_id.split("/")[-1]
        async with self.store.session() as session, session.begin():
            now = datetime.now(UTC)
            row, _ = await deliveries.record_delivery(
                session, idempotency_key=f"raw/{run_id}/mail/1", kind="send",
                workflow_id=f"raw/{run_id}", journey_key="raw", step="mail",
                contact_id=contact_id, channel="email", provider="outbox", template="bcast-news",
                category="marketing", status="sent", rendered={"subject": "News"},
                created_at=now, sent_at=now)
            await session.flush()
            return row.id


@workflow.defn(name="RawBroadcast")
class RawBroadcast:
    @workflow.run
    async def run(self, run_id: str) -> int:
        result: int = await workflow.execute_activity(
            "raw_send", run_id, start_to_close_timeout=timedelta(seconds=30))
        return result


# --------------------------------------------------------------------------- worker process


async def serve(address: str, database_url: str, home: str) -> None:
    """A worker process: Cairn's workers and the raw side's, until killed.

    Its client reads the data keys where the benchmark's own client wrote them (`home`): a
    worker with keys of its own cannot decode the runs' payloads."""
    configure("WARNING")
    client = await connect(Settings(home=Path(home)), address=address)
    store = await Store.open(database_url)
    raw = RawActivities(store)
    workers = [*journey_workers(client, store, journey_queue=JOURNEY_QUEUE,
                                delivery_queue=DELIVERY_QUEUE),
               Worker(client, task_queue=RAW_QUEUE, workflows=[RawBroadcast],
                      activities=[raw.send], workflow_runner=workflow_runner())]
    async with running(workers):
        print("ready", flush=True)
        await asyncio.Event().wait()


# --------------------------------------------------------------------------- measuring


async def seed(store: Store, count: int) -> None:
    now = datetime.now(UTC)
    async with store.session() as session, session.begin():
        for i in range(count):
            cid = f"r-{i:06d}"
            await contacts_repo.identify(session, cid, {
                "email": f"{cid}@example.com", "first_name": "Ana",
                "consent": {"marketing": True}}, now)
            await segments_repo.enter_segment(session, cid, SEGMENT, now)


async def count_rows(store: Store, journey_key: str) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.journey_key == journey_key, Delivery.status == "sent")) or 0)


async def until_rows(store: Store, journey_key: str, count: int) -> None:
    while await count_rows(store, journey_key) < count:
        await asyncio.sleep(0.1)


async def measure_raw(client: Client, store: Store, count: int, round_: int) -> float:
    gate = asyncio.Semaphore(64)
    before = await count_rows(store, "raw")

    async def start(i: int) -> None:
        run_id = f"{round_}/r-{i:06d}"
        async with gate:
            await client.start_workflow(RawBroadcast.run, run_id, id=f"raw/{run_id}",
                                        task_queue=RAW_QUEUE)

    began = time.monotonic()
    await asyncio.gather(*(start(i) for i in range(count)))
    await until_rows(store, "raw", before + count)
    return time.monotonic() - began


async def measure_broadcast(client: Client, store: Store, key: str, count: int,
                            config: SweepConfig, *, sends: bool,
                            ) -> tuple[float, float, SweepResult]:
    data = ScheduleInput(config=config, journey=key, segment=SEGMENT,
                         occurrence=datetime.now(UTC).replace(microsecond=0))
    began = time.monotonic()
    result: SweepResult = await client.execute_workflow(
        SCHEDULED_ENTRY_WORKFLOW, data, id=f"broadcast/{key}/{uuid.uuid4().hex[:8]}",
        task_queue=JOURNEY_QUEUE, result_type=SweepResult)
    entered = time.monotonic() - began
    if sends:
        await until_rows(store, key, count)
    else:
        # A probe behind the runs on the same queue: an occurrence over an empty segment.
        probe = ScheduleInput(config=config, journey=key, segment="nobody",
                              occurrence=datetime.now(UTC))
        try:
            await asyncio.wait_for(client.execute_workflow(
                SCHEDULED_ENTRY_WORKFLOW, probe, id=f"probe/{uuid.uuid4().hex[:8]}",
                task_queue=JOURNEY_QUEUE, result_type=SweepResult), PROBE_WAIT)
        except TimeoutError:
            print(f"wait   the runs' first workflow tasks did not drain within {PROBE_WAIT} s "
                  "(workers stopped polling the journey queue; see README)", flush=True)
    return entered, time.monotonic() - began, result


async def measure_import(client: Client, store: Store, count: int,
                         config: SweepConfig) -> tuple[float, float]:
    """`cairn import --journey bcast-import` of a CSV naming the N contacts, in this process:
    rows stored (traits and entry events), the traits routed, the entries handed to an
    `ImportEntryWorkflow` on the workers; until the N ledger rows are there."""
    ingest = Ingest(store, Router(client, store, task_queue=JOURNEY_QUEUE,
                                  delivery_task_queue=DELIVERY_QUEUE))
    rows = "userId,first_name\n" + "".join(f"r-{i:06d},Ana\n" for i in range(count))
    began = time.monotonic()
    await import_csv(ingest, rows, journey="bcast-import", entries=config)
    stored = time.monotonic() - began
    await until_rows(store, "bcast-import", count)
    return stored, time.monotonic() - began


def start_workers(count: int, address: str, database_url: str,
                  home: Path) -> list[subprocess.Popen[str]]:
    here = Path(__file__).resolve()
    procs = []
    for _ in range(count):
        proc = subprocess.Popen(
            [sys.executable, str(here), "--serve", address, "--database-url", database_url,
             "--home", str(home)],
            stdout=subprocess.PIPE, text=True, cwd=here.parent.parent)
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"a worker process did not start (said {line!r})")
    return procs


async def main(contacts: int, workers: int, batch_size: int, parallel: int,
               database_url: str | None) -> None:
    configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="cairn-broadcast-") as tmp:
        folder = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{folder / 'cairn.db'}"
        server = DevServer(db_file=folder / "temporal.db", log_file=folder / "temporal.log",
                           port=free_port(), headless=True)
        client = await server.start(Settings(home=folder))
        store = await Store.open(url)
        procs: list[subprocess.Popen[str]] = []
        try:
            if await count_rows(store, "raw"):
                raise SystemExit(f"{url.split('@')[-1]} already holds a run of this benchmark: "
                                 "give each run an empty database (its entry rules would keep "
                                 "the contacts of the last run out, and the run would wait "
                                 "forever)")
            catalog = folder / "journeys"
            (catalog / "templates").mkdir(parents=True)
            (catalog / "bcast-send.yaml").write_text(SEND_JOURNEY)
            (catalog / "bcast-wait.yaml").write_text(WAIT_JOURNEY)
            (catalog / "bcast-import.yaml").write_text(IMPORT_JOURNEY)
            (catalog / "templates" / "bcast-news.yaml").write_text(TEMPLATE)
            await publish_catalog(store, catalog)
            await seed(store, contacts)
            procs = start_workers(workers, server.address, url, folder)
            print(f"temporal dev server {server.address} (SQLite file), store "
                  f"{store.url.split('://')[0]}, {workers} worker process(es), "
                  f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {contacts} contacts, "
                  f"batches of {batch_size}, {parallel} side by side", flush=True)
            config = SweepConfig(journeys_dir=str(catalog), journey_task_queue=JOURNEY_QUEUE,
                                 delivery_task_queue=DELIVERY_QUEUE, batch_size=batch_size,
                                 parallel_batches=parallel)
            first_raw = await measure_raw(client, store, contacts, 1)
            print(f"raw    {contacts:>7} workflows   {first_raw:>7.1f} s  "
                  f"{contacts / first_raw:>8.1f} contacts/s  (before)", flush=True)
            measured = []
            for key, sends in (("bcast-send", True), ("bcast-wait", False)):
                entered, seconds, result = await measure_broadcast(
                    client, store, key, contacts, config, sends=sends)
                measured.append(("send" if sends else "wait", entered, seconds, result))
                print(f"{measured[-1][0]:<6} {contacts:>7} contacts    {seconds:>7.1f} s  "
                      f"{contacts / seconds:>8.1f} contacts/s", flush=True)
            imported, seconds = await measure_import(client, store, contacts, config)
            measured.append(("import", imported, seconds,
                             SweepResult(contacts=contacts, batches=0, emitted=0, runs=1)))
            print(f"import {contacts:>7} contacts    {seconds:>7.1f} s  "
                  f"{contacts / seconds:>8.1f} contacts/s", flush=True)
            second_raw = await measure_raw(client, store, contacts, 2)
            print(f"raw    {contacts:>7} workflows   {second_raw:>7.1f} s  "
                  f"{contacts / second_raw:>8.1f} contacts/s  (after)", flush=True)
            raw = (first_raw + second_raw) / 2
            print(f"raw    mean {contacts / raw:.1f} contacts/s", flush=True)
            for label, entered, seconds, result in measured:
                print(f"{label:<6} {result.contacts:>7} contacts    {seconds:>7.1f} s  "
                      f"{contacts / seconds:>8.1f} contacts/s  ratio to raw "
                      f"{raw / seconds:.2f}  ({result.batches} batches; "
                      f"{'rows stored' if label == 'import' else 'occurrence done'} after "
                      f"{entered:.1f} s)", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            await store.close()
            await server.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--parallel", type=int, default=8, help="batches side by side")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    code = 0
    try:
        if args.serve:
            asyncio.run(serve(args.serve, args.database_url, args.home))
        else:
            asyncio.run(main(args.contacts, args.workers, args.batch_size, args.parallel,
                             args.database_url))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import broadcast

    broadcast.cli()
