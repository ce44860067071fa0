"""The catalog's cart-abandonment journey run for ten contacts with known paths on the
time-skipping server, then reported: the funnel and the message table must say what happened
(the worked example of docs/analytics.md)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from temporalio.testing import WorkflowEnvironment

from cairn.catalog import load_catalog
from cairn.channels.base import FeedbackEvent
from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.feedback import record_feedback
from cairn.events.ingest import Ingest
from cairn.journey_run import JourneyResult, workflow_id
from cairn.reports import journey_report
from cairn.store import deliveries
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from starter.cli import report as report_cli
from tests.engine_support import engine

CATALOG = Path(__file__).resolve().parents[2] / "journeys"
KEY = "cart-abandonment"

CONVERTS = ("ana", "bob", "cy")            # check out an hour after adding to the cart
ON_PUSH = ("dan", "eve")                   # the app reaches them: push, then email
BY_EMAIL = ("flo", "gus", "hal")           # email only
EMPTIED = ("ida",)                         # emptied the cart before the reminder
NO_CONSENT = ("joe",)                      # no marketing consent: the email is skipped


def traits(name: str) -> dict[str, Any]:
    found: dict[str, Any] = {"email": f"{name}@example.com", "first_name": name.title(),
                             "consent": {"marketing": name not in NO_CONSENT},
                             "cart": {"items": 0 if name in EMPTIED else 2}}
    if name in ON_PUSH:
        found["push_tokens"] = [f"token-{name}"]
    return found


async def test_the_report_of_ten_contacts_with_known_paths(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = sqlite_store
    [journey] = [j for j in load_catalog(CATALOG) if j.key == KEY]
    start = await temporal_env.get_current_time()
    async with store.session() as session, session.begin():
        await journeys_repo.publish(session, journey, source="journeys/cart-abandonment.yaml",
                                    now=start)
    clock: dict[str, datetime] = {"now": start}
    everyone = (*CONVERTS, *ON_PUSH, *BY_EMAIL, *EMPTIED, *NO_CONSENT)
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, clock=lambda: clock["now"])
        for name in everyone:
            await ingest.identify(IdentifyCall(user_id=name, traits=traits(name)))
            await ingest.track(TrackCall(user_id=name, event="cart_item_added",
                                         properties={"value": 25}))
        await temporal_env.sleep(timedelta(hours=1))
        clock["now"] = await temporal_env.get_current_time()
        # An hour in, everyone waits in the first step (no run wrote a transition yet).
        [first, *_] = (await journey_report(store, KEY)).steps
        assert (first.step, first.reached, first.waiting) == ("wait_2h", 10, 10)
        for name in CONVERTS:
            await ingest.track(TrackCall(user_id=name, event="checkout_completed"))
        # Past the two-hour wait, and past the quiet hours (21:00-08:00) that may hold a reminder.
        await temporal_env.sleep(timedelta(hours=14))
        outcomes = {}
        for name in everyone:
            handle = temporal_env.client.get_workflow_handle(workflow_id(KEY, name),
                                                             result_type=JourneyResult)
            outcomes[name] = (await handle.result()).outcome
        assert outcomes == {name: "converted" if name in CONVERTS else "completed"
                            for name in everyone}

        # Postmark reports on the reminder emails: both of Flo's opens and her click count once
        # each; Gus's email was delivered and opened; Dan's bounced.
        async with store.session() as session:
            sent = {row.contact_id: row for row in await deliveries.deliveries_for(
                session, kind="send") if row.channel == "email" and row.status == "sent"}
        reports = [("flo", "delivered"), ("flo", "opened"), ("flo", "opened"),
                   ("flo", "clicked"), ("gus", "delivered"), ("gus", "opened"),
                   ("dan", "bounced")]
        for n, (name, kind) in enumerate(reports):
            await record_feedback(store, ingest, FeedbackEvent(
                provider="postmark", kind=kind, channel="email",
                provider_message_id=sent[name].provider_message_id,
                occurred_at=start + timedelta(hours=3, minutes=n)))

    found = await journey_report(store, KEY)
    funnel = found.funnel
    assert (funnel.entries, funnel.active, funnel.completed, funnel.conversions) == (10, 0, 7, 3)
    assert funnel.conversion_rate == 0.3
    assert funnel.median_seconds_to_convert is not None
    # about an hour: entered when the router recorded the entry, a moment after the event
    assert 3540 <= funnel.median_seconds_to_convert < 3660
    assert [(g.goal, g.conversions) for g in funnel.goals] == [("converted", 3)]
    messages = {m.step: m for m in found.messages}
    assert set(messages) == {"push_reminder", "email_reminder"}
    push, email = messages["push_reminder"], messages["email_reminder"]
    assert (push.channel, push.template, push.sent) == ("push", "cart-reminder", 2)
    assert (email.channel, email.template) == ("email", "cart-reminder-similar")
    assert (email.sent, email.skipped["consent"]) == (5, 1)
    assert (email.delivered, email.opened, email.clicked, email.bounced) == (2, 2, 1, 1)
    assert email.rates.open == 0.4 and email.rates.click == 0.2

    console = Console(record=True, width=240, file=io.StringIO())
    monkeypatch.setattr(report_cli, "output", lambda: console)
    report_cli.print_report(found)
    text = console.export_text()
    assert "goal converted │       3 │  30.0%" in text
    assert "still_in_cart  │ if   │       7 │" in text
    steps = {s.step: (s.reached, s.waiting, s.left, s.exited) for s in found.steps}
    assert steps == {
        "wait_2h": (10, 0, {"next": 7}, {"converted": 3}),
        "still_in_cart": (7, 0, {"then": 6, "else": 1}, {}),   # Ida emptied her cart
        "push_or_email": (6, 0, {"then": 2, "else": 4}, {}),   # Dan and Eve have the app
        "push_reminder": (2, 0, {"next": 2}, {}),
        "email_reminder": (6, 0, {"next": 6}, {}),              # Joe's skipped, still left
    }
    print(text)  # the worked example in docs/analytics.md
