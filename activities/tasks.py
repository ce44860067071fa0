"""Tasks for people from journeys: a `task` step opens one in a queue (sales calls, collections).

Title and note are Liquid texts with the contact and the trigger event in scope, so a task reads
"Call Ana about order 1042" rather than a template.
"""

from __future__ import annotations

from temporalio import activity

from activities.context import TEMPLATE_ERROR, contact_snapshot, permanent, step_log
from cairn.actions import CREATE_TASK, TaskRequest, TaskResult
from cairn.durations import parse_duration
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from cairn.templates import TemplateRenderError, message_scope, render_text


class TaskActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name=CREATE_TASK)
    async def create_task(self, request: TaskRequest) -> TaskResult:
        """Open the task once per step visit, due `due` after the journey's now."""
        context, spec = request.context, request.task
        bound = step_log(context)
        async with self.store.session() as s, s.begin():
            contact = await contact_snapshot(s, context.contact_id)
            scope = message_scope(
                contact.as_scope(), request.trigger.as_scope() if request.trigger else None, {}
            )
            name = f"task at step {context.step}"
            try:
                title = render_text(name, "title", spec.title, scope).strip()
                note = render_text(name, "note", spec.note, scope) if spec.note else None
            except TemplateRenderError as error:
                raise permanent(str(error), TEMPLATE_ERROR) from error
            row = await tasks_repo.create_task(
                s,
                idempotency_key=context.idempotency_key,
                queue=spec.queue,
                title=title or spec.title,
                note=note,
                contact_id=context.contact_id,
                journey_key=context.journey_key,
                workflow_id=context.workflow_id,
                step=context.step,
                due_at=context.now + parse_duration(spec.due) if spec.due else None,
                now=context.now,
            )
        bound.info("task.created", task_id=row.id, queue=spec.queue)
        return TaskResult(task_id=row.id)
