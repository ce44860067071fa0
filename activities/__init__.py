"""Every side effect of a journey: one module per step kind that has one, and what they share.

A step kind that acts on the world has its module here, named after the kind (`send`, `score`,
`update`, `task`, `notify`, `webhook`, `audience`, `start_journey`): `STEP_ACTIVITIES`. The
four kinds of `record_action` are told apart inside that one activity (`activities.actions`);
every call to another system goes through the one exactly-once ledger (`activities.ledger`).
Reading for decisions is `contacts`, closing entries `entries`, sweeps `sweeps`.

Activities are methods of small classes that hold the store; the worker registers the bound
methods these functions return. Sends run on their own task queue (`cairn-delivery`), so
`deliver_message` is listed apart from the rest.

Adding a step kind that acts: its module here (for a `record_action` kind, the functions of
`actions.Action` and a line in `actions.ACTIONS`; otherwise an activity class, registered in
`journey_activities`), a line in `STEP_ACTIVITIES`, and a test.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from activities import (
    audience,
    notify,
    score,
    send,
    start_journey,
    task,
    update,
    webhook,
)
from activities.actions import ActionActivities
from activities.contacts import ContactActivities
from activities.entries import EntryActivities
from activities.experiments import ExperimentActivities
from activities.score import ScoreActivities
from activities.send import DeliveryActivities
from activities.sweeps import SweepActivities
from activities.task import TaskActivities
from activities.update import ProfileActivities
from cairn.store.db import Store

if TYPE_CHECKING:
    from cairn.events.ingest import Ingest

__all__ = [
    "STEP_ACTIVITIES",
    "ActionActivities",
    "ContactActivities",
    "DeliveryActivities",
    "EntryActivities",
    "ExperimentActivities",
    "ProfileActivities",
    "ScoreActivities",
    "SweepActivities",
    "TaskActivities",
    "delivery_activities",
    "journey_activities",
]

STEP_ACTIVITIES: dict[str, ModuleType] = {
    "send": send,
    "score": score,
    "update": update,
    "task": task,
    "notify": notify,
    "webhook": webhook,
    "audience": audience,
    "start_journey": start_journey,
}
"""Each step kind that acts on the world, and its module. Kinds not here (waits, `if`, `split`,
`end`) only read the contact (`plan_wait`, `evaluate_condition`; `load_contact` for runs
started before `plan_wait`) or act in the workflow."""


def journey_activities(
    store: Store, delivery: DeliveryActivities | None = None, ingest: Ingest | None = None,
) -> list[Callable[..., Any]]:
    """Activities of the interpreter's queue: every one of `cairn.contracts` but deliver_message.

    `delivery` carries the channels and the delivery policy (default: local providers, no policy);
    `ingest`, where the process has one, routes the events `update` steps announce at once
    (otherwise the relay routes them).
    """
    delivery = delivery or DeliveryActivities(store)
    contacts = ContactActivities(store, disabled_channels=delivery.channels.disabled)
    sweeps = SweepActivities(store, delivery=delivery)
    entries = EntryActivities(store)
    return [
        contacts.load_contact,
        contacts.plan_wait,
        contacts.evaluate_condition,
        delivery.prepare_send,
        delivery.settle_unconfirmed,
        ScoreActivities(store).change_score,
        ProfileActivities(store, ingest=ingest).update_profile,
        TaskActivities(store, delivery.channels).create_task,
        ActionActivities(store, delivery.channels).record_action,
        entries.finish_entry,
        entries.close_failed_entries,
        ExperimentActivities(store).choose_arm,
        sweeps.sweep_segments,
        sweeps.sweep_date_attributes,
        sweeps.enter_scheduled,
        sweeps.plan_scheduled,
        sweeps.enter_imported,
        sweeps.plan_imported,
    ]


def delivery_activities(
    store: Store, delivery: DeliveryActivities | None = None,
) -> list[Callable[..., Any]]:
    """Activities of the delivery queue: sending messages through providers."""
    return [(delivery or DeliveryActivities(store)).deliver_message]
