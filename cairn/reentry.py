"""Re-entering a failed entry: an operator puts the contact back into the journey after a fix.

The entry's trigger event (kept in the store) is routed again into that journey only, through
the router, so the journey's published version now (with the fix) runs and its entry rules apply;
the failed entry itself does not count for them (`cairn.store.entries`). When a run starts, the
failed row is marked `failed:reentered` and leaves the list of failed entries. Both the API
(`POST /v1/entries/{id}/reenter`) and the CLI (`cairn entries --reenter ID`) call `reenter`.

Not here: noticing failed runs (`cairn.failed_runs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.events.router import RouteDecision, Router
from cairn.log import get_logger
from cairn.store import entries as entries_repo
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Entry

log = get_logger(__name__)


class EntryNotFound(LookupError):
    """No entry with this id."""


class ReentryRefused(Exception):
    """The entry cannot be re-entered; the message says why and what to do."""


class ReentryUnavailable(RuntimeError):
    """The entry could be re-entered, but this process has no router (no Temporal connection)."""


@dataclass(frozen=True)
class Reentry:
    entry: Entry
    decision: RouteDecision


async def reenter(store: Store, router: Router | None, entry_id: int) -> Reentry:
    """Route the failed entry's trigger event into its journey again; the router's decision.

    The entry is checked first, so an unknown or unfit entry is said as such even where nothing
    can be routed (`router` None: `ReentryUnavailable`)."""
    async with store.session() as s:
        entry = await entries_repo.get_entry(s, entry_id)
        if entry is None:
            raise EntryNotFound(f"no entry #{entry_id}; list failed ones with "
                                "GET /v1/entries?status=failed or `cairn entries --failed`")
        if entry.outcome != entries_repo.FAILED:
            state = "still running" if entry.ended_at is None else f"ended {entry.outcome}"
            raise ReentryRefused(f"entry #{entry_id} is {state}; only failed entries are "
                                 "re-entered")
        trigger = (await events_repo.event_by_message_id(s, entry.trigger_message_id)
                   if entry.trigger_message_id else None)
    if trigger is None:
        raise ReentryRefused(
            f"entry #{entry_id} has no stored trigger event (started by hand, or the contact "
            "was erased): put the contact in again with a new event")
    if router is None:
        raise ReentryUnavailable("this process routes no events (no Temporal connection); "
                                 "re-enter through `cairn entries --reenter`")
    decision = await router.enter_journey(entry.journey_key, events_repo.event_message(trigger))
    if decision is None:
        raise ReentryRefused(f"journey {entry.journey_key!r} is not published; publish it "
                             "(cairn publish) and re-enter again")
    if decision.action == "started":
        async with store.session() as s, s.begin():
            await entries_repo.mark_reentered(s, entry_id)
    log.info("entry.reentered", entry_id=entry_id, journey=entry.journey_key,
             contact=entry.contact_id, action=decision.action, reason=decision.reason)
    return Reentry(entry, decision)
