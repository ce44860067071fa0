"""`start_journey` steps: hand the contact to another journey.

Nothing is called: the ledger row records the hand-off, and in the same transaction a
`journey_entry_requested` event for the target journey is stored unrouted; the relay routes it
like an entry request from the API, so the target's entry rules apply as they would to any entry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cairn.contact import ContactSnapshot
from cairn.contracts import ActionRequest
from cairn.journey import TRIGGER_EVENTS, StartJourney
from cairn.store import events as events_repo


def columns(
    request: ActionRequest, spec: StartJourney, contact: ContactSnapshot, scope: dict[str, Any],
) -> dict[str, Any]:
    return {"channel": None, "rendered": {"journey": spec.journey},
            "reason": f"hand-off to journey {spec.journey}"}


async def request_entry(s: AsyncSession, request: ActionRequest, spec: StartJourney) -> None:
    """The entry request for the target journey; its message id derives from the step's key,
    so a retried activity stores it once."""
    context = request.context
    properties = {"journey": spec.journey,
                  "from_journey": context.journey_key, "from_step": context.step}
    if request.trigger is not None:
        properties["trigger"] = request.trigger.event
    await events_repo.record_event(
        s, message_id=f"start/{context.idempotency_key}", type="track",
        contact_id=context.contact_id, name=TRIGGER_EVENTS["api"], properties=properties,
        timestamp=context.now, received_at=context.now,
    )
