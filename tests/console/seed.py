"""A store with a journey's history written straight into it: what the console's page tests
read (the browser tests run real traffic through Temporal instead, tests/console/test_browser.py).

Cart abandonment, published twice (v2 waits 3h), with ten entries in the last days: three
converted, five completed, two still active; five reminder emails (one skipped for consent, one
delivered and opened); one open task for `ana`.

The runs' step transitions follow known paths (`PATHS`): the three converted were caught by the
goal in `wait_2h`, the two active still wait there, Dan and Eve had the app (push, then email),
Flo, Gus and Hal got the email only.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cairn.catalog import load_catalog
from cairn.contracts import StepContext
from cairn.journey import Journey
from cairn.journey_run import StepTransition
from cairn.store import deliveries as deliveries_repo
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store import tasks as tasks_repo
from cairn.store import transitions as transitions_repo
from cairn.store.contacts import ensure_contact
from cairn.store.db import Store
from cairn.store.schema import DeliveryFeedback

CATALOG = Path(__file__).resolve().parents[2] / "journeys"
KEY = "cart-abandonment"
NAMES = ("ana", "bob", "cy", "dan", "eve", "flo", "gus", "hal", "ida", "joe")
CONVERTED = ("ana", "bob", "cy")
ACTIVE = ("ida", "joe")
ON_PUSH = ("dan", "eve")
CONVERTED_PATH = [("wait_2h", "exit:converted", None)]
WAITING_PATH = [("wait_2h", None, None)]
PUSH_PATH = [("wait_2h", "next", "still_in_cart"), ("still_in_cart", "then", "push_or_email"),
             ("push_or_email", "then", "push_reminder"),
             ("push_reminder", "next", "email_reminder"),
             ("email_reminder", "next", "end")]
EMAIL_PATH = [*PUSH_PATH[:2], ("push_or_email", "else", "email_reminder"),
              ("email_reminder", "next", "end")]


def path_of(name: str) -> list[tuple[str, str | None, str | None]]:
    """(step, left by, next step) of each visit of `name`'s run, in order."""
    if name in CONVERTED:
        return CONVERTED_PATH
    if name in ACTIVE:
        return WAITING_PATH
    return PUSH_PATH if name in ON_PUSH else EMAIL_PATH


async def record_path(s: Any, *, key: str, version: int, name: str, workflow_id: str,
                      entered: datetime,
                      path: list[tuple[str, str | None, str | None]]) -> None:
    """Write the step transitions a run that took `path` writes (one visit per step)."""
    # The first step is the two-hour wait (left after an hour by the converted); the rest
    # follow each other a second apart, just before the run's end two hours in.
    reached = [entered] + [entered + timedelta(hours=2, seconds=i - len(path))
                           for i in range(1, len(path))]
    left = [*reached[1:], entered + timedelta(hours=2)]
    if path == CONVERTED_PATH:
        left = [entered + timedelta(hours=1)]
    visits = [StepTransition(seq=i + 1, step=step, visit=1, reached_at=reached[i],
                             left_by=left_by, left_at=left[i] if left_by else None,
                             next_step=next_step)
              for i, (step, left_by, next_step) in enumerate(path)]
    await transitions_repo.record_transitions(s, StepContext(
        workflow_id=workflow_id, journey_key=key, journey_version=version, contact_id=name,
        step=path[-1][0], now=entered, entry_id=f"run-{name}", entered_at=entered,
        transitions=visits))


def cart_abandonment() -> Journey:
    [journey] = [j for j in load_catalog(CATALOG) if j.key == KEY]
    return journey


async def publish_two_versions(store: Store, now: datetime) -> None:
    first = cart_abandonment()
    definition = copy.deepcopy(journeys_repo.definition_of(first))
    definition["steps"]["wait_2h"]["wait"] = "3h"
    second = Journey.model_validate(definition)
    async with store.session() as s, s.begin():
        await journeys_repo.publish(s, first, source="journeys/cart-abandonment.yaml",
                                    now=now - timedelta(days=20))
        await journeys_repo.publish(s, second, source="journeys/cart-abandonment.yaml",
                                    now=now - timedelta(days=3))


async def seed(store: Store, now: datetime | None = None) -> datetime:
    """Write the history above; answers the `now` it is relative to."""
    now = now or datetime.now(UTC)
    await publish_two_versions(store, now)
    async with store.session() as s, s.begin():
        for i, name in enumerate(NAMES):
            await ensure_contact(s, name, now)
            entered = now - timedelta(days=i % 5, hours=3)
            wid = f"journey/{KEY}/{name}"
            await entries_repo.record_entry(
                s, journey_key=KEY, version=2, contact_id=name, entry_key=None,
                workflow_id=wid, trigger_message_id=None, entered_at=entered)
            await record_path(s, key=KEY, version=2, name=name, workflow_id=wid,
                              entered=entered, path=path_of(name))
            if name in CONVERTED:
                await entries_repo.close_entry(s, wid, "converted", entered + timedelta(hours=1))
            elif name not in ACTIVE:
                await entries_repo.close_entry(s, wid, "completed", entered + timedelta(hours=2))
                status = "skipped:consent" if name == "hal" else "sent"
                row, _ = await deliveries_repo.record_delivery(
                    s, idempotency_key=f"{wid}/email_reminder/0", kind="send", workflow_id=wid,
                    journey_key=KEY, step="email_reminder", contact_id=name, channel="email",
                    provider="postmark", provider_message_id=f"pm-{name}",
                    template="cart-reminder-similar", category="marketing", status=status,
                    reason="marketing" if status != "sent" else None, rendered={},
                    created_at=entered + timedelta(hours=2),
                    sent_at=entered + timedelta(hours=2) if status == "sent" else None)
                if name == "flo":
                    for kind in ("delivered", "opened"):
                        s.add(DeliveryFeedback(
                            dedupe_key=f"pm-flo/{kind}", delivery_id=row.id, contact_id=name,
                            provider="postmark", provider_message_id="pm-flo", kind=kind,
                            channel="email", occurred_at=entered + timedelta(hours=3),
                            received_at=entered + timedelta(hours=3)))
        await tasks_repo.create_task(
            s, idempotency_key="seed/task/ana", queue="sales-calls", title="Call ana: big cart",
            note=None, contact_id="ana", journey_key=KEY, workflow_id=f"journey/{KEY}/ana",
            step="call", due_at=now + timedelta(days=1), now=now)
    return now
