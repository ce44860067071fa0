"""Task queues: claim and complete through the API and the CLI; completion is an event.

The store is real (SQLite, and PostgreSQL in CI); the CLI runs as a subprocess on the same file,
as a sales rep would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import select

from cairn.contact import ContactSnapshot
from cairn.store import contacts
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from cairn.store.schema import Event

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def open_task(store: Store, contact: str) -> int:
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot(id=contact), NOW)
        task = await tasks_repo.create_task(
            s, idempotency_key=f"journey/collections/{contact}/call/1", queue="collections",
            title=f"Call {contact}", note=None, contact_id=contact, journey_key="collections",
            workflow_id=f"journey/collections/{contact}", step="call", due_at=None, now=NOW)
        return task.id


async def completed_events(store: Store, contact: str) -> list[Event]:
    async with store.session() as s:
        return list(await s.scalars(select(Event).where(
            Event.contact_id == contact, Event.name == "task_completed")))


async def test_claim_then_complete_announces_task_completed_once(
    api: httpx.AsyncClient, store: Store,
) -> None:
    task_id = await open_task(store, "c-task-1")
    claimed = await api.post(f"/v1/tasks/{task_id}/claim", json={"assignee": "maria"})
    assert claimed.status_code == 200
    assert (claimed.json()["status"], claimed.json()["assignee"]) == ("claimed", "maria")
    taken = await api.post(f"/v1/tasks/{task_id}/claim", json={"assignee": "ion"})
    assert taken.status_code == 409 and "claimed by maria" in taken.json()["detail"]
    done = await api.post(f"/v1/tasks/{task_id}/complete", json={"outcome": "promised"})
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["outcome"]) == ("done", "promised")
    again = await api.post(f"/v1/tasks/{task_id}/complete", json={"outcome": "other"})
    assert again.json()["outcome"] == "promised"  # a second completion changes nothing
    [event] = await completed_events(store, "c-task-1")
    assert event.properties == {"task_id": task_id, "queue": "collections",
                                "journey": "collections", "step": "call",
                                "outcome": "promised", "assignee": "maria"}
    late = await api.post(f"/v1/tasks/{task_id}/claim", json={"assignee": "ion"})
    assert late.status_code == 409 and "already done" in late.json()["detail"]
    assert (await api.post("/v1/tasks/999999/complete", json={})).status_code == 404
    listed = (await api.get("/v1/tasks", params={"status": "done"})).json()
    assert [t["id"] for t in listed] == [task_id]


async def test_the_cli_claims_and_completes(store: Store, tmp_path: Path) -> None:
    task_id = await open_task(store, "c-task-2")
    env = {**os.environ, "CAIRN_DATABASE_URL": store.url, "CAIRN_HOME": str(tmp_path)}

    def cairn(*args: str) -> subprocess.CompletedProcess[str]:
        # run in the test's folder: a developer's .env in the checkout must not reach the CLI
        return subprocess.run([sys.executable, "-m", "starter.cli", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)

    claimed = cairn("claim", str(task_id), "--as", "maria")
    assert claimed.returncode == 0, claimed.stderr
    assert f"task {task_id} claimed by maria" in claimed.stdout
    done = cairn("complete", str(task_id), "--outcome", "reached")
    assert done.returncode == 0, done.stderr
    assert f"task {task_id} done (reached)" in done.stdout
    missing = cairn("complete", "999999")
    assert missing.returncode == 1 and "no task 999999" in missing.stderr
    [event] = await completed_events(store, "c-task-2")
    assert event.properties["outcome"] == "reached" and event.routed_at is None  # relay's job
