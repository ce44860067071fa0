"""Profile changes from journeys: an `update` step sets and unsets attributes and tags.

Each trait whose value the step changes is announced as an `attribute_changed` event, exactly as
an identify announces it (`cairn.events.attribute_changes`, the one code path for both), stored in
the same transaction as the change so a crash cannot lose it. Its message id derives from the step's
idempotency key (`update/<key>/attribute_changed/<trait>`), and a retried activity finds the
values already set: nothing is announced twice.

The worker has the store but not the API's router, scoring and segments, so by default the events
are left unrouted for the relay (`cairn.events.relay`, run by `cairn dev` and `cairn api`), which
routes them as it routes any stored event: scoring and segments first, then journeys. Given an
`Ingest` (a process that has one), the activity routes them itself at once; a routing failure
leaves them to the relay rather than failing a step whose change is already made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.context import (
    TEMPLATE_ERROR,
    VALIDATION_ERROR,
    contact_snapshot,
    permanent,
    record_transitions,
    step_log,
    template_scope,
)
from cairn.contracts import UPDATE_PROFILE, ProfileUpdateRequest, StepContext
from cairn.events import attribute_changes
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.templates import TemplateRenderError
from cairn.traits import ContactTraitError, profile_traits
from cairn.update_values import has_templates, render_values

if TYPE_CHECKING:
    from cairn.events.ingest import Ingest


def change_source(context: StepContext) -> str:
    """The source message id of a step visit's change events: one per visit, retries included."""
    return f"update/{context.idempotency_key}"


async def _already_applied(s: AsyncSession, context: StepContext, paths: list[str]) -> bool:
    """Whether this step visit's change was committed by an earlier attempt of the activity.

    A Liquid value may read the attribute it sets (`{{ contact.emi_due_date | add_months: 1 }}`),
    so rendering it again on a retry would move the date twice. The change and its
    `attribute_changed` events commit together, so an event of this visit means it is done. (A
    first attempt that changed no announced trait changed nothing a retry would read differently.)
    """
    source = change_source(context)
    for name in attribute_changes.announced(profile_traits(paths)):
        message_id = attribute_changes.change_message_id(source, name)
        if await events_repo.event_by_message_id(s, message_id) is not None:
            return True
    return False


async def _rendered(s: AsyncSession, request: ProfileUpdateRequest) -> dict[str, Any]:
    """The step's `set` values with their Liquid rendered on the contact as it is now."""
    context = request.context
    contact = await contact_snapshot(s, context.contact_id)
    scope = await template_scope(s, contact, request.trigger, request.journey_context)
    scope["now"] = context.now.isoformat().replace("+00:00", "Z")
    try:
        return render_values(context.step, request.update.set, scope)
    except TemplateRenderError as error:
        raise permanent(str(error), TEMPLATE_ERROR) from error


class ProfileActivities:
    """`update` steps; `ingest` routes their change events at once (else the relay does)."""

    def __init__(self, store: Store, *, ingest: Ingest | None = None) -> None:
        self.store = store
        self.ingest = ingest

    @activity.defn(name=UPDATE_PROFILE)
    async def update_profile(self, request: ProfileUpdateRequest) -> None:
        """Apply the step's `set`, `unset`, `add_tags` and `remove_tags` to the contact, and
        announce every trait whose value changed. Liquid `set` values are rendered first, in the
        same transaction, on the contact as it is now (`cairn.update_values`)."""
        context, update = request.context, request.update
        bound = step_log(context)
        try:
            async with self.store.session() as s, s.begin():
                await record_transitions(s, context)
                values = dict(update.set)
                if has_templates(values):
                    # under the contact's lock: another writer (or a late earlier attempt) cannot
                    # change what the values read between the check, the rendering and the write
                    await contacts_repo.locked_contact(s, context.contact_id)
                    if await _already_applied(s, context, [*values, *update.unset]):
                        bound.info("profile.update_already_applied")
                        return
                    values = await _rendered(s, request)
                _, changes = await attribute_changes.update_profile(
                    s, context.contact_id, values, update.unset, update.add_tags,
                    update.remove_tags, now=context.now, source_message_id=change_source(context),
                    received_at=datetime.now(UTC),
                )
        except ContactTraitError as error:
            raise permanent(f"update step {context.step}: {error}", VALIDATION_ERROR) from error
        bound.info("profile.updated", set=sorted(update.set), unset=update.unset,
                   add_tags=update.add_tags, remove_tags=update.remove_tags, changes=len(changes))
        if changes and self.ingest is not None:
            routed = await self.ingest.route_events(changes)
            if len(routed) < len(changes):
                bound.warning("profile.changes_left_to_relay", left=len(changes) - len(routed))
