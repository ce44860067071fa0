"""Several processes at once (a Temporal dev server, two `cairn worker`, two `cairn api`; ~40 s).

Two API processes (each with its routing process) take the same calls, twice over, and two
worker processes share the journeys' runs and a schedule's batches; the store is one SQLite file,
and one PostgreSQL database when `CAIRN_TEST_POSTGRES_URL` is set. Whoever takes a call or a
batch, every contact enters each journey once and gets each message once, the schedule
registered from two places exists once, and its occurrence runs once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import func, select

from cairn.catalog import publish_catalog
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import Delivery, Entry, Event, SegmentMembership
from starter.dev import DevServer, dev_server_for, free_port
from starter.schedules import journey_schedule_id, register_schedules
from starter.temporal import connect
from tests.api_support import new_key

T = TypeVar("T")
CONTACTS = 24


def catalog(folder: Path) -> Path:
    journeys = folder / "journeys"
    for sub in ("templates", "segments"):
        (journeys / sub).mkdir(parents=True)
    (journeys / "welcome.yaml").write_text(
        "key: welcome\nname: Welcome\ntrigger: {event: signed_up}\nentry: {reentry: never}\n"
        "steps:\n  mail: {send: {channel: email, template: hello, category: transactional},"
        " next: end}\n")
    (journeys / "news.yaml").write_text(
        "key: news\nname: News\ntrigger: {schedule: {cron: '0 9 1 1 *', segment: readers}}\n"
        "steps:\n  mail: {send: {channel: email, template: news}, next: end}\n")
    (journeys / "segments" / "readers.yaml").write_text(
        "key: readers\nrule: {attribute: reader, eq: true}\n")
    (journeys / "templates" / "hello.yaml").write_text("email: {subject: Hi, body: Welcome}\n")
    (journeys / "templates" / "news.yaml").write_text("email: {subject: News, body: News}\n")
    return journeys


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DevServer]:
    settings = Settings(home=tmp_path, temporal_port=free_port(), ui_port=free_port())
    dev = dev_server_for(settings, headless=True)
    await dev.start(settings)
    try:
        yield dev
    finally:
        await dev.stop()


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str,
                     within: float = 90.0) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"not within {within} s: {what}")


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cairn = shutil.which("cairn", path=str(Path(sys.executable).parent)) or "cairn"
    with log.open("wb") as out:
        return subprocess.Popen([cairn, command], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def count(store: Store, query: object) -> int:
    async with store.session() as session:
        return int(await session.scalar(query) or 0)  # type: ignore[call-overload]


async def test_two_workers_and_two_apis_enter_and_send_once(
    server: DevServer, any_db_url: str, tmp_path: Path,
) -> None:
    journeys = catalog(tmp_path)
    store = await Store.open(any_db_url)
    settings = Settings(home=tmp_path, temporal_address=server.address, database_url=any_db_url,
                        journeys_dir=journeys)
    client = await connect(settings)
    await publish_catalog(store, journeys)
    key = await new_key(store, "admin")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")},
           "CAIRN_HOME": str(tmp_path), "CAIRN_TEMPORAL_ADDRESS": server.address,
           "CAIRN_DATABASE_URL": any_db_url, "CAIRN_JOURNEYS_DIR": str(journeys),
           "CAIRN_LOG_LEVEL": "INFO"}
    ports = [free_port(), free_port()]
    procs = [start("worker", env, tmp_path / f"worker-{i}.log") for i in range(2)]
    procs += [start("api", {**env, "CAIRN_API_PORT": str(port)}, tmp_path / f"api-{i}.log")
              for i, port in enumerate(ports)]
    apis = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                              headers={"authorization": f"Bearer {key}"}) for port in ports]
    try:
        for api in apis:
            async def ready(api: httpx.AsyncClient = api) -> bool | None:
                try:
                    return (await api.get("/v1/health")).status_code == 200 or None
                except httpx.TransportError:
                    return None
            await eventually(ready, "both APIs answer")
        # Every call to both APIs: the same message ids, so each is stored and routed once.
        for i in range(CONTACTS):
            contact = f"p-{i:03d}"
            identify = {"userId": contact, "messageId": f"id-{contact}", "traits": {
                "email": f"{contact}@example.com", "reader": True,
                "consent": {"marketing": True}}}
            track = {"userId": contact, "event": "signed_up", "messageId": f"su-{contact}"}
            for api in (apis[i % 2], apis[(i + 1) % 2]):
                assert (await api.post("/v1/identify", json=identify)).status_code == 202
            await asyncio.gather(*(api.post("/v1/track", json=track) for api in apis))

        async def welcomed() -> bool | None:
            sent = await count(store, select(func.count()).select_from(Delivery).where(
                Delivery.journey_key == "welcome", Delivery.status == "sent"))
            return sent == CONTACTS or None
        await eventually(welcomed, "a welcome email for each contact")

        async def members() -> bool | None:
            joined = await count(store, select(func.count()).select_from(SegmentMembership)
                                 .where(SegmentMembership.segment == "readers"))
            return joined == CONTACTS or None
        await eventually(members, "every contact in readers")

        # The schedule is registered from two places at once (two `cairn publish`): one exists.
        await asyncio.gather(register_schedules(client, store, settings),
                             register_schedules(client, store, settings))
        schedule = client.get_schedule_handle(journey_schedule_id("news"))
        await schedule.trigger()

        async def newsed() -> bool | None:
            sent = await count(store, select(func.count()).select_from(Delivery).where(
                Delivery.journey_key == "news", Delivery.status == "sent"))
            return sent == CONTACTS or None
        await eventually(newsed, "the news for each reader")
        await asyncio.sleep(2)  # time for a duplicate to show, were there one

        async with store.session() as session:
            sends = Counter((row.journey_key, row.contact_id) for row in await session.scalars(
                select(Delivery).where(Delivery.kind == "send")))
            entries = Counter((row.journey_key, row.contact_id) for row in await session.scalars(
                select(Entry)))
            events = Counter(row.message_id for row in await session.scalars(
                select(Event).where(Event.name.in_(["signed_up", "schedule_fired"]))))
        assert set(sends.values()) == {1} and len(sends) == 2 * CONTACTS
        assert set(entries.values()) == {1} and len(entries) == 2 * CONTACTS
        assert set(events.values()) == {1} and len(events) == 2 * CONTACTS
        schedules = [s.id async for s in await client.list_schedules()
                     if s.id == journey_schedule_id("news")]
        assert len(schedules) == 1
        description = await schedule.describe()
        assert description.info.num_actions == 1
        runs = [w async for w in client.list_workflows(
            "WorkflowType = 'ScheduledEntryWorkflow'")]
        assert len(runs) == 1
    finally:
        for api in apis:
            await api.aclose()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await store.close()
