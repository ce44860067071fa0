"""Profile changes from journeys: an `update` step sets and unsets attributes and tags.

Setting the same values again leaves the same profile, so a retried activity needs no key.
"""

from __future__ import annotations

from temporalio import activity

from activities.context import VALIDATION_ERROR, permanent, step_log
from cairn.actions import UPDATE_PROFILE, ProfileUpdateRequest
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store


class ProfileActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name=UPDATE_PROFILE)
    async def update_profile(self, request: ProfileUpdateRequest) -> None:
        """Apply the step's `set`, `unset`, `add_tags` and `remove_tags` to the contact."""
        context, update = request.context, request.update
        try:
            async with self.store.session() as s, s.begin():
                await contacts_repo.apply_profile_update(
                    s, context.contact_id, update.set, list(update.unset),
                    list(update.add_tags), list(update.remove_tags), context.now,
                )
        except contacts_repo.ContactTraitError as error:
            raise permanent(f"update step {context.step}: {error}", VALIDATION_ERROR) from error
        step_log(context).info("profile.updated", set=sorted(update.set), unset=update.unset,
                               add_tags=update.add_tags, remove_tags=update.remove_tags)
