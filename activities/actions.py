"""The `record_action` activity: actions toward other systems, once per step visit.

One activity serves the step kinds whose effect is a call to another system, or its record:
`notify`, `webhook`, `audience` and `start_journey`. Saved histories name this one activity with
the request's `kind`, so the kinds are told apart here, through `ACTIONS`, each by the functions
of its own module: what its ledger row holds, which target carries it, how it is called. A kind
whose target the workspace did not set up (no Slack, webhooks off, no audience syncer) is recorded
by the `outbox`, rendered exactly as it would go out, with status `recorded`.

The call walks the ledger's exactly-once states (`activities.ledger`), keyed like sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from structlog.typing import FilteringBoundLogger
from temporalio import activity

from activities import audience, notify, start_journey, webhook
from activities.context import (
    TEMPLATE_ERROR,
    VALIDATION_ERROR,
    contact_snapshot,
    permanent,
    record_transitions,
    step_log,
    template_scope,
)
from activities.ledger import Ledger
from cairn.channels.base import ProviderError
from cairn.channels.registry import ChannelSet
from cairn.contact import ContactSnapshot
from cairn.contracts import RECORD_ACTION, ActionRequest, ActionResult, saved_response
from cairn.store.db import Store
from cairn.store.schema import Delivery
from cairn.templates import TemplateRenderError

OUTBOX = "outbox"
RECORDED = "recorded"
UNCONFIRMED = "outcome unknown after an interrupted call; not repeated so it cannot happen twice"


@dataclass(frozen=True)
class Action:
    """One kind of action, by the functions of its module. `spec` is the request's body for the
    kind (`request.notify` for `notify`...).

    `columns`: the ledger columns particular to the kind, rendered (may raise a
    `TemplateRenderError`); `target`: the provider that carries it, or None to only record it;
    `call`: make the call, answering the response to keep and the provider's id; `recorded`: what
    to store with the row, in its transaction, when it is first written.
    """

    columns: Callable[[ActionRequest, Any, ContactSnapshot, dict[str, Any]], dict[str, Any]]
    target: Callable[[ChannelSet, Any], Any] | None = None
    call: Callable[
        [Any, ActionRequest, Any, ContactSnapshot, dict[str, Any], dict[str, Any]],
        Awaitable[tuple[Any, str | None]],
    ] | None = None
    recorded: Callable[[AsyncSession, ActionRequest, Any], Awaitable[None]] | None = None


ACTIONS: dict[str, Action] = {
    "notify": Action(notify.columns, target=notify.notifier, call=notify.call),
    "webhook": Action(webhook.columns, target=webhook.caller, call=webhook.call),
    "audience": Action(audience.columns, target=audience.syncer, call=audience.call),
    "start_journey": Action(start_journey.columns, recorded=start_journey.request_entry),
}
"""Every kind `record_action` serves (the kinds of `ActionRequest`), by its module."""


def _result(row: Delivery) -> ActionResult:
    """What the run keeps: never a response itself. A webhook's answer (anything the receiver
    knows of the contact) stays in the row, and the run gets a reference to it for `save_as`."""
    response = saved_response(row.id, row.status) \
        if row.kind == "webhook" and row.response is not None else None
    return ActionResult(delivery_id=row.id, status=row.status, response=response)


class ActionActivities:
    """`record_action` through the workspace's notifier, webhook caller and audience syncers
    (`channels`); without them every action is recorded by the outbox."""

    def __init__(self, store: Store, channels: ChannelSet | None = None) -> None:
        self.store = store
        self.channels = channels or ChannelSet(providers={})
        self.ledger = Ledger(store, "action", UNCONFIRMED)

    @activity.defn(name=RECORD_ACTION)
    async def record_action(self, request: ActionRequest) -> ActionResult:
        """Render the action, then call its target (or record it) once under the step's key."""
        context = request.context
        bound = step_log(context).bind(action=request.kind)
        action = ACTIONS[request.kind]
        spec = getattr(request, request.kind)
        target = action.target(self.channels, spec) \
            if action.target is not None and spec is not None else None
        idempotent = getattr(target, "idempotent", False)
        async with self.store.session() as s, s.begin():
            await record_transitions(s, context)
            earlier = await self.ledger.earlier(s, context.idempotency_key, now=context.now,
                                                idempotent=idempotent, log=bound)
            if earlier is not None and earlier.settled:
                return _result(earlier.row)
            contact = await contact_snapshot(s, context.contact_id)
            scope = await template_scope(s, contact, request.trigger, request.journey_context)
            columns = self._columns(action, request, spec, contact, scope)
            if earlier is not None:
                row = earlier.row
            else:
                row = await self._write(s, request, action, spec, target, columns, bound)
                if target is None:
                    return _result(row)
            row_id = row.id
        assert action.call is not None  # a kind with a target has a call
        try:
            response, message_id = await action.call(target, request, spec, contact, scope,
                                                     columns)
        except ProviderError as error:
            settled = await self.ledger.failed(row_id, error, idempotent=idempotent,
                                               now=context.now, log=bound)
            return _result(settled)
        row = await self.ledger.sent(row_id, context.now, response=response,
                                     message_id=message_id)
        bound.info("action.sent", delivery_id=row.id, provider=row.provider)
        return _result(row)

    @staticmethod
    def _columns(action: Action, request: ActionRequest, spec: Any, contact: ContactSnapshot,
                 scope: dict[str, Any]) -> dict[str, Any]:
        if spec is None:
            raise permanent(
                f"record_action of kind {request.kind!r} needs its `{request.kind}` body in the "
                "request",
                VALIDATION_ERROR,
            )
        try:
            return action.columns(request, spec, contact, scope)
        except TemplateRenderError as error:
            raise permanent(str(error), TEMPLATE_ERROR) from error

    async def _write(
        self, s: AsyncSession, request: ActionRequest, action: Action, spec: Any, target: Any,
        columns: dict[str, Any], log: FilteringBoundLogger,
    ) -> Delivery:
        """The step visit's row: claimed as `sending` for its target, or recorded by the outbox
        when there is none (settled at once)."""
        context = request.context
        fields = {
            "idempotency_key": context.idempotency_key, "kind": request.kind,
            "workflow_id": context.workflow_id, "journey_key": context.journey_key,
            "step": context.step, "contact_id": context.contact_id, "created_at": context.now,
            **columns,
        }
        if target is not None:
            row = await self.ledger.claim(s, **fields, provider=target.name)
        else:
            row, new = await self.ledger.record(s, **fields, provider=OUTBOX, status=RECORDED,
                                                sent_at=context.now)
            log.info("action.recorded" if new else "action.duplicate",
                     delivery_id=row.id, channel=row.channel, template=row.template)
        if action.recorded is not None:
            await action.recorded(s, request, spec)
        return row
