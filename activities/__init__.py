"""Every side effect of a journey: contacts and scores, conditions, reachability, delivery, ledger.

Activities are methods of small classes that hold the store; the worker registers the bound
methods these functions return. Sends run on their own task queue (`cairn-delivery`), so
`deliver_message` is listed apart from the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from activities.contacts import ContactActivities
from activities.delivery import DeliveryActivities
from activities.entries import EntryActivities
from activities.ledger import LedgerActivities
from activities.profile import ProfileActivities
from activities.scores import ScoreActivities
from activities.sweeps import SweepActivities
from activities.tasks import TaskActivities
from cairn.store.db import Store

if TYPE_CHECKING:
    from cairn.events.ingest import Ingest

__all__ = [
    "ContactActivities",
    "DeliveryActivities",
    "EntryActivities",
    "LedgerActivities",
    "ProfileActivities",
    "ScoreActivities",
    "SweepActivities",
    "TaskActivities",
    "delivery_activities",
    "journey_activities",
]


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
    sweeps = SweepActivities(store)
    return [
        contacts.load_contact,
        contacts.evaluate_condition,
        delivery.prepare_send,
        ScoreActivities(store).change_score,
        ProfileActivities(store, ingest=ingest).update_profile,
        TaskActivities(store, delivery.channels).create_task,
        LedgerActivities(store, delivery.channels).record_action,
        EntryActivities(store).finish_entry,
        sweeps.sweep_segments,
        sweeps.sweep_date_attributes,
        sweeps.enter_scheduled,
    ]


def delivery_activities(
    store: Store, delivery: DeliveryActivities | None = None,
) -> list[Callable[..., Any]]:
    """Activities of the delivery queue: sending messages through providers."""
    return [(delivery or DeliveryActivities(store)).deliver_message]
