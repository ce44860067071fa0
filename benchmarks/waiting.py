"""What many waiting runs cost a worker: Cairn journeys waiting 30 days against raw one-timers.

One `temporal server start-dev` (started here, SQLite file in a temporary folder) and, for each
side in turn, a worker in a process of its own, so its memory and CPU can be read from /proc:

* **raw**: `N` hand-written workflows started with `start_workflow`, each sleeping 30 days (one
  timer), sandboxed like Cairn's, on a worker with the same workflow cache size.
* **cairn**: `N` contacts entering the journey `trigger wait30_go -> wait 30d -> end` through
  `Ingest.track` (event stored, contact touched, entry rules, entry recorded, signal-with-start),
  run by `cairn worker`'s journey worker (`starter.worker.journey_workers`).

For each it prints: entered runs per second (starts returned), seconds until the worker has taken
every run's first workflow task (its CPU goes quiet and, for Cairn, visibility shows every run in
the wait), the worker's resident memory (VmRSS) before and with every run waiting, worker CPU per
waiting run; then the ratios Cairn / raw. With every Cairn run waiting it also times the operator
views over them, as an operator runs them (a new process each, start-up included): `cairn runs
--journey wait30` (a page of 50 and the total) and `cairn journeys` (counts per step). It asserts
nothing.

    python benchmarks/waiting.py --runs 20000        # --runs 2000 for a quick check
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

# The sandbox re-imports this file for each raw run; what it needs from outside passes through.
with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    import uuid
    from dataclasses import dataclass
    from pathlib import Path

    from temporalio.client import Client
    from temporalio.worker import Worker

    from cairn.catalog import publish_catalog
    from cairn.events.calls import TrackCall
    from cairn.events.ingest import Ingest
    from cairn.events.router import Router
    from cairn.log import configure
    from cairn.settings import Settings
    from cairn.store.db import Store
    from starter.dev import DevServer, free_port
    from starter.temporal import connect
    from starter.worker import DEFAULT_CACHED_RUNS, journey_workers, running, workflow_runner

WAIT_JOURNEY = """\
key: wait30
name: Thirty days of waiting
trigger: {event: wait30_go}
steps:
  wait_30d: {wait: 30d, next: end}
"""

RAW_QUEUE = "bench-raw-wait"
CAIRN_QUEUE = "bench-cairn-wait"
QUIET_SECONDS = 3.0
"""The worker is done with the first tasks when its CPU stays this long under 2% of a core."""


@workflow.defn(name="RawWait")
class RawWait:
    """One timer of 30 days, written by hand."""

    @workflow.run
    async def run(self, contact_id: str) -> str:
        await workflow.sleep(timedelta(days=30))
        return contact_id


# --------------------------------------------------------------------------- the worker process


async def serve(side: str, address: str, store_url: str, cached: int, home: str) -> None:
    """The worker of one side, until SIGTERM; prints `ready` once it polls.

    Its client reads the data keys where the benchmark's own client wrote them (`home`): a
    worker with keys of its own cannot decode the runs' payloads."""
    configure("WARNING")
    client = await connect(Settings(temporal_address=address, home=Path(home)))
    store: Store | None = None
    if side == "raw":
        workers = [Worker(client, task_queue=RAW_QUEUE, workflows=[RawWait],
                          workflow_runner=workflow_runner(), max_cached_workflows=cached)]
    else:
        store = await Store.open(store_url, migrate=False)
        workers = journey_workers(client, store, journey_queue=CAIRN_QUEUE,
                                  delivery_queue=f"{CAIRN_QUEUE}-delivery", cached_runs=cached,
                                  share_workflow_code=not Settings().worker_strict_sandbox)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with running(workers):
        print("ready", flush=True)
        await stop.wait()
    if store is not None:
        await store.close()


# --------------------------------------------------------------------------- measuring


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    name: str
    runs: int
    cached: int
    enter_seconds: float
    settle_seconds: float
    rss_before: float
    rss_after: float
    cpu_seconds: float

    @property
    def entered_per_second(self) -> float:
        return self.runs / self.enter_seconds

    @property
    def cpu_ms_per_run(self) -> float:
        return self.cpu_seconds * 1000 / self.runs

    @property
    def kb_per_cached_run(self) -> float:
        return (self.rss_after - self.rss_before) * 1024 / min(self.runs, self.cached)


async def wait_quiet(pid: int) -> None:
    """Until the worker's CPU stays under 2% of a core for QUIET_SECONDS."""
    last, quiet_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        await asyncio.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last > 0.01:
            quiet_since = time.monotonic()
        last = now


async def waiting_count(client: Client) -> int:
    return (await client.count_workflows(
        "CairnJourney = 'wait30' AND CairnStep = 'wait_30d' AND ExecutionStatus = 'Running'")).count


async def measure(side: str, client: Client, ingest: Ingest, address: str, store_url: str,
                  home: Path, runs: int, cached: int, concurrency: int) -> Figures:
    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", side, "--address", address, "--store", store_url,
         "--cached", str(cached), "--home", str(home)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        line = await asyncio.to_thread(worker.stdout.readline)
        assert line.strip() == "ready", f"the {side} worker did not start"
        await asyncio.sleep(2)
        rss_before, cpu_before = rss_mb(worker.pid), cpu_seconds(worker.pid)
        tag = uuid.uuid4().hex[:6]
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            contact_id = f"{side}-{tag}-{index:06d}"
            async with gate:
                if side == "raw":
                    await client.start_workflow(RawWait.run, contact_id, id=f"raw/{contact_id}",
                                                task_queue=RAW_QUEUE)
                else:
                    result = await ingest.track(TrackCall(user_id=contact_id, event="wait30_go"))
                    assert result.routes and result.routes[0].action == "started", result.routes

        begin = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(runs)))
        enter_seconds = time.monotonic() - begin
        await wait_quiet(worker.pid)
        if side == "cairn":
            while await waiting_count(client) < runs:
                await asyncio.sleep(1)
                await wait_quiet(worker.pid)
        settle_seconds = time.monotonic() - begin - QUIET_SECONDS
        return Figures(side, runs, cached, enter_seconds, settle_seconds, rss_before,
                       rss_mb(worker.pid), cpu_seconds(worker.pid) - cpu_before)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(worker.wait, 30)
        except subprocess.TimeoutExpired:
            worker.kill()


VIEWS = (("cairn runs --journey wait30", ["runs", "--journey", "wait30"]),
         ("cairn journeys", ["journeys"]))


def time_views(address: str, store_url: str, home: Path) -> list[tuple[str, float]]:
    """Seconds each operator view takes, a new `cairn` process each (start-up included)."""
    env = {**os.environ, "CAIRN_TEMPORAL_ADDRESS": address, "CAIRN_DATABASE_URL": store_url,
           "CAIRN_HOME": str(home), "COLUMNS": "200"}
    cairn = [sys.executable, "-m", "starter.cli.main"]
    timed = []
    for label, args in VIEWS:
        begin = time.monotonic()
        done = subprocess.run([*cairn, *args], env=env, capture_output=True, text=True,
                              check=False)
        timed.append((label, time.monotonic() - begin))
        if done.returncode != 0 or "wait30" not in done.stdout:
            raise RuntimeError(f"{label} failed ({done.returncode}): {done.stderr[-500:]}")
    return timed


def report(raw: Figures, cairn: Figures) -> None:
    print()
    print(f"{raw.runs} runs per side waiting 30 days, workflow cache {raw.cached} runs per worker")
    print(f"{'':6} {'entered/s':>9} {'all waiting s':>13} {'RSS before MB':>13} "
          f"{'RSS waiting MB':>14} {'KB/cached run':>13} {'CPU ms/run':>10}")
    for f in (raw, cairn):
        print(f"{f.name:6} {f.entered_per_second:>9.1f} {f.settle_seconds:>13.1f} "
              f"{f.rss_before:>13.0f} {f.rss_after:>14.0f} {f.kb_per_cached_run:>13.0f} "
              f"{f.cpu_ms_per_run:>10.2f}")
    print(f"ratios cairn / raw: entered/s {cairn.entered_per_second / raw.entered_per_second:.2f}, "
          f"worker RSS waiting {cairn.rss_after / raw.rss_after:.2f} (goal <= 1.5), "
          f"CPU per waiting run {cairn.cpu_ms_per_run / raw.cpu_ms_per_run:.2f} (goal <= 2)")


async def main(runs: int, cached: int, concurrency: int, sides: list[str]) -> None:
    configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="cairn-wait-") as tmp:
        folder = Path(tmp)
        server = DevServer(db_file=folder / "temporal.db", log_file=folder / "temporal.log",
                           port=free_port(), headless=True)
        client = await server.start(Settings(home=folder))
        store_url = f"sqlite+aiosqlite:///{folder / 'cairn.db'}"
        store = await Store.open(store_url)
        try:
            print(f"temporal dev server {server.address} (SQLite file), store {store_url}, "
                  f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
            (folder / "journeys").mkdir()
            (folder / "journeys" / "wait30.yaml").write_text(WAIT_JOURNEY)
            await publish_catalog(store, folder / "journeys")
            ingest = Ingest(store, Router(client, store, task_queue=CAIRN_QUEUE,
                                          delivery_task_queue=f"{CAIRN_QUEUE}-delivery"))
            figures = {}
            for side in sides:
                figures[side] = await measure(side, client, ingest, server.address, store_url,
                                              folder, runs, cached, concurrency)
                f = figures[side]
                print(f"{side}: {f.runs} entered in {f.enter_seconds:.1f} s, all waiting after "
                      f"{f.settle_seconds:.1f} s, RSS {f.rss_before:.0f} -> {f.rss_after:.0f} MB, "
                      f"CPU {f.cpu_seconds:.1f} s", flush=True)
                if side == "cairn":
                    for label, seconds in time_views(server.address, store_url, folder):
                        print(f"cairn: `{label}` over {f.runs} waiting runs answered in "
                              f"{seconds:.2f} s (goal < 2 s)", flush=True)
            if len(figures) == 2:
                report(figures["raw"], figures["cairn"])
        finally:
            await store.close()
            await server.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000, help="runs per side (default 20000)")
    parser.add_argument("--cached", type=int, default=DEFAULT_CACHED_RUNS,
                        help=f"workflow cache per worker, both sides (default {DEFAULT_CACHED_RUNS}"
                             ", Cairn's CAIRN_WORKER_CACHED_RUNS default)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="runs being started at the same time (default 50)")
    parser.add_argument("--side", choices=["raw", "cairn"], action="append",
                        help="measure only this side (repeatable; default both)")
    parser.add_argument("--worker", choices=["raw", "cairn"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    code = 0
    try:
        if args.worker:
            asyncio.run(serve(args.worker, args.address, args.store, args.cached, args.home))
        else:
            asyncio.run(main(args.runs, args.cached, args.concurrency,
                             args.side or ["raw", "cairn"]))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    # Temporal's runtime can abort while the interpreter finalizes; leave with the real status.
    os._exit(code)


if __name__ == "__main__":
    # Run under the module's importable name: the sandbox then re-imports a cached module per
    # run instead of recompiling `__main__` from source each time.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import waiting

    waiting.cli()
