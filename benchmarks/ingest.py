"""Ingest throughput: Cairn's API against a plain FastAPI + pydantic + SQLAlchemy app, same run.

Both servers are started here, each in a process of its own on loopback (uvicorn), on SQLite files
in a temporary folder:

* **plain**: `/v1/track` and `/v1/batch` validated by small pydantic models, then the same rows
  Cairn writes (the event, its contact inserted if new and marked seen) inserted with SQLAlchemy
  in one transaction per request. Nothing else.
* **cairn**: what `cairn api` runs (`starter.cli.runtime.run_api`): the real API with its keys
  (the load sends a write key), `Ingest` with the profile rules, geofencing and attribute changes
  of the catalog in `journeys/` (published first), and its routing process (`starter.routing`),
  against a Temporal dev server started here.

The events are ones no journey or rule uses (`bench_noop`), so the figures measure the door and
the routing path, not journeys. One load generator (httpx) sends, per phase, a bounded number of
events within a time limit:

1. `/v1/batch` with 100 calls per request (one client);
2. `/v1/track` with 8 clients at once;
3. for Cairn, stored -> routed: from the first call of a phase until its last event is routed
   (`routed_at` set), read from Cairn's store.

Each phase runs in `--rounds` rounds; a round sends its share of the calls to each side, the side
that goes first alternating, because the load of a shared machine drifts. It prints both sides,
the ratio, the servers' CPU per 1000 events (Cairn's includes its routing process) and the drain
rate. It asserts nothing. `--profile FILE` records the Cairn server and its routing process with
py-spy.

    python benchmarks/ingest.py [--batches 40] [--tracks 2000] [--seconds 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, DateTime, Integer, String, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROOT = Path(__file__).resolve().parents[1]
EVENT = "bench_noop"
CONTACTS = 2000
"""Distinct contacts the events are spread over (each phase creates and then touches them)."""


# --------------------------------------------------------------------------- the plain app


class PlainBase(DeclarativeBase):
    pass


class PlainEvent(PlainBase):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    contact_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlainContact(PlainBase):
    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlainTrack(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    type: str = "track"
    user_id: str = Field(alias="userId", min_length=1)
    event: str = Field(min_length=1)
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    message_id: str = Field(default_factory=lambda: str(uuid.uuid4()), alias="messageId")


class PlainBatch(BaseModel):
    batch: list[PlainTrack] = Field(min_length=1)


def plain_app(db_url: str) -> FastAPI:
    """FastAPI + pydantic + SQLAlchemy: validate, insert the event and its contact, answer 202."""
    Base, Event, Contact = PlainBase, PlainEvent, PlainContact
    engine = create_async_engine(db_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()

    @app.on_event("startup")
    async def create() -> None:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            await connection.run_sync(Base.metadata.create_all)

    async def store(calls: list[PlainTrack]) -> None:
        now = datetime.now(UTC)
        rows = [{"message_id": c.message_id, "type": c.type, "contact_id": c.user_id,
                 "name": c.event, "properties": c.properties, "timestamp": c.timestamp or now,
                 "received_at": now} for c in calls]
        ids = sorted({c.user_id for c in calls})
        async with sessions() as session, session.begin():
            await session.execute(sqlite_insert(Event).on_conflict_do_nothing(), rows)
            known = set(await session.scalars(select(Contact.id).where(Contact.id.in_(ids))))
            new = [{"id": i, "first_seen_at": now, "last_seen_at": now}
                   for i in ids if i not in known]
            if new:
                await session.execute(insert(Contact), new)
            if known:
                await session.execute(update(Contact).where(Contact.id.in_(known))
                                      .values(last_seen_at=now))

    @app.post("/v1/track", status_code=202)
    async def track(call: PlainTrack) -> dict[str, Any]:
        await store([call])
        return {"messageId": call.message_id, "duplicate": False}

    @app.post("/v1/batch", status_code=202)
    async def batch(call: PlainBatch) -> list[dict[str, Any]]:
        await store(call.batch)
        return [{"messageId": c.message_id, "duplicate": False} for c in call.batch]

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_plain(db_file: str, port: int) -> None:
    import uvicorn

    uvicorn.run(plain_app(f"sqlite+aiosqlite:///{db_file}"), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def serve_cairn(db_file: str, port: int, temporal_address: str, home: str) -> None:
    from cairn.settings import Settings
    from starter.cli.runtime import run_api

    settings = Settings(database_url=f"sqlite+aiosqlite:///{db_file}", api_host="127.0.0.1",
                        api_port=port, temporal_address=temporal_address, home=Path(home),
                        journeys_dir=ROOT / "journeys")
    from cairn.log import configure

    configure(settings.log_level)  # INFO, as `cairn api` logs by default
    asyncio.run(run_api(settings))


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def server_process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, __file__, *args], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"server exited ({process.returncode}): {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/v1/health")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer within 60 s: {log.read_text()[-2000:]}")


# --------------------------------------------------------------------------- load


KEY_HEADERS: dict[str, str] = {}
"""The write key both servers are sent (Cairn checks it, as it does every client's)."""


def call(run: str, n: int) -> dict[str, Any]:
    return {"type": "track", "userId": f"bench-{n % CONTACTS}", "event": EVENT,
            "messageId": f"{run}-{n}", "properties": {"n": n, "plan": "free"}}


@dataclass
class Phase:
    events: int
    seconds: float
    failures: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def batches(url: str, run: str, count: int, limit: float) -> Phase:
    sent = failures = 0
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=KEY_HEADERS) as http:
        for b in range(count):
            if time.monotonic() - started > limit:
                break
            body = {"batch": [call(run, b * 100 + i) for i in range(100)]}
            try:
                answer = await http.post("/v1/batch", json=body)
            except httpx.TransportError as error:
                failures += 1
                print(f"batch {b} to {url}: {type(error).__name__}: {error}", file=sys.stderr)
                continue
            if answer.is_success:  # Cairn answers a batch 200, a single call 202
                sent += 100
            else:
                failures += 1
                print(f"batch {b} to {url}: {answer.status_code} {answer.text[:200]}",
                      file=sys.stderr)
    return Phase(sent, time.monotonic() - started, failures)


async def tracks(url: str, run: str, count: int, limit: float, clients: int = 8) -> Phase:
    counter = iter(range(count))
    sent = failures = 0
    started = time.monotonic()

    async def client() -> None:
        nonlocal sent, failures
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=KEY_HEADERS) as http:
            for n in counter:
                if time.monotonic() - started > limit:
                    return
                try:
                    answer = await http.post("/v1/track", json=call(run, n))
                except httpx.TransportError:
                    failures += 1
                    continue
                if answer.is_success:
                    sent += 1
                else:
                    failures += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return Phase(sent, time.monotonic() - started, failures)


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU time a process, its threads and (with `children`) its child processes
    (Cairn's routing process) used so far (Linux /proc)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    tree, total = {pid}, 0.0
    for _ in range(3 if children else 0):  # children, grandchildren
        tree |= {p for p, fields in stats.items() if int(fields[1]) in tree}
    for p in tree:
        if p in stats:
            total += int(stats[p][11]) + int(stats[p][12])
    return total / os.sysconf("SC_CLK_TCK")


def routed_count(db_file: Path, prefix: str) -> tuple[int, int]:
    """(stored, routed) events of a phase in Cairn's store."""
    with contextlib.closing(sqlite3.connect(db_file, timeout=30)) as db:
        stored, routed = db.execute(
            "SELECT count(*), count(routed_at) FROM events WHERE message_id LIKE ?",
            (f"{prefix}-%",)).fetchone()
    return int(stored), int(routed)


async def drain(db_file: Path, prefix: str, started: float, expected: int,
                limit: float) -> float | None:
    """Seconds from the phase's start until all its events were routed (None: not within limit)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, routed = routed_count(db_file, prefix)
        if routed >= expected:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


# --------------------------------------------------------------------------- the run


@contextlib.asynccontextmanager
async def temporal(folder: Path) -> AsyncIterator[str]:
    from cairn.settings import Settings
    from starter.dev import DevServer, free_port

    server = DevServer(db_file=folder / "temporal.db", log_file=folder / "temporal.log",
                       port=free_port(), headless=True)
    await server.start(Settings(home=folder))
    try:
        yield server.address
    finally:
        await server.stop()


async def publish(db_file: Path) -> int:
    """Publish the catalog into Cairn's store, and make the write key the load sends."""
    from cairn.catalog import publish_catalog
    from cairn.events.ingest import utc_now
    from cairn.log import configure
    from cairn.store import keys
    from cairn.store.db import Store

    configure("WARNING")
    store = await Store.open(f"sqlite+aiosqlite:///{db_file}")
    try:
        async with store.session() as s, s.begin():
            secret = await keys.create_key(s, "benchmark", "write", utc_now())
        KEY_HEADERS["authorization"] = f"Bearer {secret}"  # the plain server ignores it
        return len(await publish_catalog(store, ROOT / "journeys"))
    finally:
        await store.close()


def line(name: str, plain: Phase, cairn: Phase) -> str:
    ratio = cairn.rate / plain.rate if plain.rate else 0.0
    failed = f" (failed requests: plain {plain.failures}, cairn {cairn.failures})" \
        if plain.failures or cairn.failures else ""
    return (f"{name:<22} plain {plain.rate:8.0f} ev/s ({plain.events} in {plain.seconds:.1f}s)"
            f"   cairn {cairn.rate:8.0f} ev/s ({cairn.events} in {cairn.seconds:.1f}s)"
            f"   ratio {ratio:.2f}x{failed}")


async def main(batch_count: int, track_count: int, limit: float,
               profile: Path | None = None, rounds: int = 3) -> None:
    from starter.dev import free_port

    with tempfile.TemporaryDirectory(prefix="cairn-ingest-bench-") as tmp:
        folder = Path(tmp)
        async with temporal(folder) as address:
            cairn_db, plain_db = folder / "cairn.db", folder / "plain.db"
            journeys = await publish(cairn_db)
            plain_port, cairn_port = free_port(), free_port()
            with server_process(["--serve", "plain", str(plain_db), str(plain_port)],
                                folder / "plain.log") as plain_process, \
                 server_process(["--serve", "cairn", str(cairn_db), str(cairn_port), address,
                                 str(folder)], folder / "cairn.log") as cairn_process:
                plain_url = f"http://127.0.0.1:{plain_port}"
                cairn_url = f"http://127.0.0.1:{cairn_port}"
                await wait_healthy(plain_url, plain_process, folder / "plain.log")
                await wait_healthy(cairn_url, cairn_process, folder / "cairn.log")
                spy = (subprocess.Popen(["py-spy", "record", "--subprocesses",
                                         "--pid", str(cairn_process.pid),
                                         "--output", str(profile), "--format",
                                         {".json": "speedscope", ".txt": "raw"}.get(
                                             profile.suffix, "flamegraph")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                       if profile is not None else None)
                print(f"{journeys} journeys published from journeys/, events '{EVENT}' (used by "
                      f"no journey or rule) over {CONTACTS} contacts; {os.cpu_count()} CPUs, "
                      f"Python {sys.version.split()[0]}, SQLite files, Temporal dev server")
                # Warm up both (imports, first pages, contacts created).
                await batches(plain_url, "warm", 2, limit)
                await batches(cairn_url, "warm", 2, limit)
                await drain(cairn_db, "warm", time.monotonic(), 200, limit)

                cpu = {"plain": plain_process.pid, "cairn": cairn_process.pid}
                urls = {"plain": plain_url, "cairn": cairn_url}
                phases = {"batch": (batches, batch_count, "/v1/batch (100/call)"),
                          "track": (tracks, track_count, "/v1/track (8 clients)")}
                cairn_phase: dict[str, Phase] = {}
                drained: dict[str, float | None] = {}
                for name, (send, count, title) in phases.items():
                    totals = {side: Phase(0, 0.0, 0) for side in urls}
                    spent = dict.fromkeys(urls, 0.0)
                    api_spent = 0.0  # Cairn's API process alone (without its routing process)
                    drained[name] = 0.0
                    for r in range(rounds):
                        # Alternate which side goes first: the machine's load drifts.
                        for side in (("plain", "cairn") if r % 2 == 0 else ("cairn", "plain")):
                            prefix = f"{name}{r}"
                            before, started = cpu_seconds(cpu[side]), time.monotonic()
                            api_before = cpu_seconds(cpu[side], children=False)
                            phase = await send(urls[side], prefix, count // rounds, limit)
                            if side == "cairn":
                                routed_in = await drain(cairn_db, prefix, started, phase.events,
                                                        limit)
                                drained[name] = (None if routed_in is None or drained[name] is None
                                                 else drained[name] + routed_in)
                            spent[side] += cpu_seconds(cpu[side]) - before
                            if side == "cairn":
                                api_spent += cpu_seconds(cpu[side], children=False) - api_before
                            total = totals[side]
                            totals[side] = Phase(total.events + phase.events,
                                                 total.seconds + phase.seconds,
                                                 total.failures + phase.failures)
                    print(line(title, totals["plain"], totals["cairn"]))
                    per_1000 = {side: 1000 * spent[side] / max(totals[side].events, 1)
                                for side in urls}
                    print(f"{'':22} server CPU per 1000 events: plain {per_1000['plain']:.2f} s, "
                          f"cairn {per_1000['cairn']:.2f} s (stored and routed; the API "
                          f"{1000 * api_spent / max(totals['cairn'].events, 1):.2f} s)")
                    cairn_phase[name] = totals["cairn"]

                for name, phase in cairn_phase.items():
                    seconds = drained[name]
                    if not phase.events:
                        continue
                    if seconds is None:
                        print(f"stored -> routed ({name}): not all routed within {limit:.0f}s")
                        continue
                    kept_up = seconds <= phase.seconds * 1.1 + 0.5 * rounds
                    print(f"stored -> routed ({name}):  {phase.events / seconds:8.0f} ev/s "
                          f"(each round's events all routed {seconds / rounds:.1f}s after its "
                          f"first call on average; accepted at {phase.rate:.0f} ev/s, so routing "
                          f"{'kept up' if kept_up else 'lagged'})")
                if spy is not None:  # py-spy writes its profile when interrupted
                    spy.send_signal(2)
                    spy.wait(60)
                for name, process in (("plain", plain_process), ("cairn", cairn_process)):
                    if process.poll() is not None:
                        print(f"the {name} server died ({process.returncode}):\n"
                              f"{(folder / f'{name}.log').read_text()[-3000:]}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sys.path.insert(0, str(ROOT))
        if sys.argv[2] == "plain":
            serve_plain(sys.argv[3], int(sys.argv[4]))
        else:
            serve_cairn(sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="batch requests of 100 per side")
    parser.add_argument("--tracks", type=int, default=2000, help="track calls per side")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="time limit per phase and side (and for draining)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the Cairn API with py-spy (pip install py-spy) into this "
                             "file (.svg flame graph, or .json for speedscope)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per phase; each sends its share of the calls to both "
                             "sides, the side that goes first alternating (load drifts)")
    options = parser.parse_args()
    asyncio.run(main(options.batches, options.tracks, options.seconds, options.profile,
                     options.rounds))
