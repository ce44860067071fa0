"""Working the task queues: list tasks, claim one, complete it with an outcome.

Completing a task is news for the journey that opened it: a `task_completed` event for the
contact (task id, queue, journey, step, outcome) is stored and routed, so a journey can wait for
"the collections team called" with `wait_for_event: {event: task_completed, where:
{properties.queue: collections}}` and branch on the outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest, utc_now
from cairn.log import get_logger
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from cairn.store.schema import Task
from starter.api.auth import requires

log = get_logger(__name__)

TASK_COMPLETED = "task_completed"


class Claim(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"assignee": "maria@sales"}]})

    assignee: str = Field(min_length=1, max_length=255)


class Completion(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"outcome": "reached", "by": "maria@sales"}]})

    outcome: str | None = Field(default=None, max_length=128,
                                description="what came of it (reached, no_answer, promised...)")
    by: str | None = Field(default=None, max_length=255)


class TaskView(BaseModel):
    """A task for people (a call to make, a case to review), created by a journey's `task` step."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "queue": "sales-calls",
                    "title": "Call c-9: downloaded two whitepapers",
                    "note": None,
                    "contact_id": "c-9",
                    "journey_key": "whitepaper-calls",
                    "workflow_id": "journey/whitepaper-calls/c-9",
                    "step": "call_task",
                    "status": "open",
                    "due_at": "2026-03-03T09:00:00Z",
                    "created_at": "2026-03-02T09:00:00Z",
                }
            ]
        },
    )

    id: int
    queue: str
    title: str
    note: str | None
    contact_id: str | None
    journey_key: str | None
    workflow_id: str | None
    step: str | None
    status: str
    due_at: datetime | None
    created_at: datetime
    assignee: str | None = None
    claimed_at: datetime | None = None
    completed_at: datetime | None = None
    outcome: str | None = None


async def task_list(store: Store, queue: str | None, status: str | None) -> list[TaskView]:
    async with store.session() as session:
        rows = await tasks_repo.list_tasks(session, queue=queue, status=status)
    return [TaskView.model_validate(row) for row in rows]




def completion_event(task: Task, when: datetime) -> TrackCall | None:
    """The `task_completed` event a closed task announces (None for a task without contact)."""
    if task.contact_id is None:
        return None
    properties: dict[str, Any] = {"task_id": task.id, "queue": task.queue,
                                  "journey": task.journey_key, "step": task.step,
                                  "outcome": task.outcome, "assignee": task.assignee}
    return TrackCall(userId=task.contact_id, event=TASK_COMPLETED, properties=properties,
                     timestamp=when, messageId=f"task/{task.id}/completed")


async def claim_task(store: Store, task_id: int, assignee: str) -> TaskView | None:
    """Claim an open task for `assignee` (None: no such task). Raises
    `tasks_repo.TaskStateError` when it is done or claimed by someone else."""
    async with store.session() as s, s.begin():
        task = await tasks_repo.claim_task(s, task_id, assignee, utc_now())
        if task is None:
            return None
        view = TaskView.model_validate(task)
    log.info("task.claimed", task_id=task_id, assignee=assignee)
    return view


async def complete_task(store: Store, ingest: Ingest, task_id: int, *, outcome: str | None,
                        by: str | None) -> TaskView | None:
    """Complete a task (None: no such task); its journey hears `task_completed` once."""
    now = utc_now()
    async with store.session() as s, s.begin():
        task, changed = await tasks_repo.complete_task(s, task_id, now, outcome=outcome, by=by)
        if task is None:
            return None
        view = TaskView.model_validate(task)
        event = completion_event(task, now)
    if changed and event is not None:
        await ingest.track(event)
    log.info("task.completed", task_id=task_id, outcome=outcome, changed=changed)
    return view


def tasks_router(store: Store, ingest: Ingest) -> APIRouter:
    router = APIRouter(tags=["tasks"])

    @router.get("/v1/tasks", dependencies=[requires("read")], response_model=list[TaskView], 
             summary="Tasks for people created by journeys")
    async def tasks(
        queue: str | None = Query(None, description="only this queue", examples=["sales-calls"]),
        status: str | None = Query(None, description="open, claimed or done", examples=["open"]),
    ) -> list[TaskView]:
        return await task_list(store, queue, status)


    @router.post("/v1/tasks/{task_id}/claim", dependencies=[requires("admin")],
                 response_model=TaskView,
                 summary="Claim an open task for someone",
                 responses={404: {"description": "no such task"},
                            409: {"description": "done, or claimed by someone else"}})
    async def claim(task_id: int, body: Claim) -> TaskView:
        try:
            view = await claim_task(store, task_id, body.assignee)
        except tasks_repo.TaskStateError as error:
            raise HTTPException(409, str(error)) from error
        if view is None:
            raise HTTPException(404, f"no task {task_id}")
        return view

    @router.post("/v1/tasks/{task_id}/complete", dependencies=[requires("admin")],
                 response_model=TaskView,
                 summary="Complete a task; its journey hears `task_completed`",
                 responses={404: {"description": "no such task"}})
    async def complete(task_id: int, body: Completion) -> TaskView:
        view = await complete_task(store, ingest, task_id, outcome=body.outcome, by=body.by)
        if view is None:
            raise HTTPException(404, f"no task {task_id}")
        return view

    return router
