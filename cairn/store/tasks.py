"""Tasks for people (sales calls, collections): created by journeys, listed by API and CLI."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.db import insert_once
from cairn.store.schema import Task

__all__ = ["Task", "create_task", "list_tasks", "task_by_key"]


async def task_by_key(s: AsyncSession, idempotency_key: str) -> Task | None:
    return await s.scalar(select(Task).where(Task.idempotency_key == idempotency_key))


async def create_task(
    s: AsyncSession,
    *,
    idempotency_key: str | None,
    queue: str,
    title: str,
    note: str | None,
    contact_id: str | None,
    journey_key: str | None,
    workflow_id: str | None,
    step: str | None,
    due_at: datetime | None,
    now: datetime,
) -> Task:
    """Open a task; the same idempotency key twice returns the first task."""
    row = Task(
        idempotency_key=idempotency_key,
        queue=queue,
        title=title,
        note=note,
        contact_id=contact_id,
        journey_key=journey_key,
        workflow_id=workflow_id,
        step=step,
        status="open",
        due_at=due_at,
        created_at=now,
    )
    if idempotency_key is None:
        s.add(row)
        await s.flush()
        return row
    task, _ = await insert_once(s, row, lambda: task_by_key(s, idempotency_key))
    return task


async def list_tasks(
    s: AsyncSession,
    *,
    queue: str | None = None,
    status: str | None = None,
    workflow_id: str | None = None,
) -> list[Task]:
    """Tasks in the order they were created, filtered by queue, status and journey run."""
    query = select(Task).order_by(Task.id)
    if queue is not None:
        query = query.where(Task.queue == queue)
    if status is not None:
        query = query.where(Task.status == status)
    if workflow_id is not None:
        query = query.where(Task.workflow_id == workflow_id)
    return list(await s.scalars(query))
