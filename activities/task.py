"""`task` steps: a task for people opened in a queue (sales calls, collections), once per visit.

Title and note are Liquid texts with the contact and the trigger event in scope, so a task reads
"Call Ana about order 1042" rather than a template. The task's own row (keyed by the step visit)
is its exactly-once record, not the deliveries ledger; the CRM copy is found again by its marker
on a retry, and a CRM failure that may pass is retried like any provider's (`ledger.retry_later`).
"""

from __future__ import annotations

from temporalio import activity

from activities.context import (
    TEMPLATE_ERROR,
    contact_snapshot,
    permanent,
    record_transitions,
    step_log,
    template_scope,
)
from activities.ledger import retry_later
from cairn.channels.base import OutgoingTask, ProviderError
from cairn.channels.registry import ChannelSet
from cairn.contracts import CREATE_TASK, TaskRequest, TaskResult
from cairn.durations import parse_duration
from cairn.privacy.scrub import scrub
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from cairn.templates import TemplateRenderError, render_text


class TaskActivities:
    """Opens tasks in Cairn's own queues, mirrored into the CRM (HubSpot) when one is set up."""

    def __init__(self, store: Store, channels: ChannelSet | None = None) -> None:
        self.store = store
        self.crm = channels.tasks if channels is not None else None

    @activity.defn(name=CREATE_TASK)
    async def create_task(self, request: TaskRequest) -> TaskResult:
        """Open the task once per step visit, due `due` after the journey's now; answers its
        id for the journey's path (the rendered title stays in the store)."""
        context, spec = request.context, request.task
        bound = step_log(context)
        async with self.store.session() as s, s.begin():
            await record_transitions(s, context)
            contact = await contact_snapshot(s, context.contact_id)
            scope = await template_scope(s, contact, request.trigger, {})
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
            task_id, title, note, due_at = row.id, row.title, row.note, row.due_at
        bound.info("task.created", task_id=task_id, queue=spec.queue)
        if self.crm is not None:
            await self._mirror(request, OutgoingTask(
                title=title, idempotency_key=context.idempotency_key,
                contact_id=context.contact_id, note=note, contact_email=contact.email,
                due_at=due_at, queue=spec.queue,
            ))
        # The rendered title names the contact: it stays in the store, out of the run's history.
        return TaskResult(task_id=task_id)

    async def _mirror(self, request: TaskRequest, task: OutgoingTask) -> None:
        """Create the CRM task once (the sink finds its earlier task by a marker on retries);
        a CRM that refuses for good is logged, the local task stands."""
        assert self.crm is not None
        bound = step_log(request.context).bind(crm=self.crm.name)
        try:
            receipt = await self.crm.create_task(task)
        except ProviderError as error:
            if error.retryable:
                bound.warning("task.crm_retry", error=scrub(str(error)))
                raise retry_later(error) from error
            bound.warning("task.crm_refused", error=scrub(str(error)))
            return
        bound.info("task.mirrored", crm_task=receipt.provider_message_id)
