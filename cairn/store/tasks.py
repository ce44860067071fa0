"""Tasks for people (sales calls, collections): created by journeys, listed by API and CLI."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.store.db import insert_once
from cairn.store.schema import Task

__all__ = ["Task", "TaskStateError", "claim_task", "complete_task", "create_task", "list_tasks",
           "task_by_key"]


class TaskStateError(ValueError):
    """A claim or completion the task's state does not allow (done, or someone else's)."""


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


async def claim_task(s: AsyncSession, task_id: int, assignee: str, now: datetime) -> Task | None:
    """Take an open task; claiming your own claimed task again is a no-op. None if unknown."""
    task = await s.get(Task, task_id, with_for_update=True)
    if task is None:
        return None
    if task.status == "done":
        raise TaskStateError(f"task {task_id} is already done ({task.outcome or 'no outcome'})")
    if task.status == "claimed" and task.assignee != assignee:
        raise TaskStateError(f"task {task_id} is claimed by {task.assignee}; they can complete "
                             "it, or it can be completed without claiming")
    if task.status == "open":
        task.status, task.assignee, task.claimed_at = "claimed", assignee, now
    return task


async def complete_task(
    s: AsyncSession, task_id: int, now: datetime, *, outcome: str | None = None,
    by: str | None = None,
) -> tuple[Task | None, bool]:
    """Close a task (open or claimed) with an outcome; (task, False) when it was already done."""
    task = await s.get(Task, task_id, with_for_update=True)
    if task is None:
        return None, False
    if task.status == "done":
        return task, False
    task.status, task.completed_at, task.outcome = "done", now, outcome
    if by is not None and task.assignee is None:
        task.assignee = by
    return task, True
