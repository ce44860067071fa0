"""Publishing a new version never changes running journeys: the definition travels in the run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from temporalio.testing import WorkflowEnvironment

from cairn.events.calls import IdentifyCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey import Journey
from cairn.journey_run import JourneyResult, workflow_id
from cairn.store import deliveries
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from starter.worker import journey_workers, running


def definition(key: str, template: str) -> Journey:
    return Journey.model_validate(
        {
            "key": key,
            "name": "Versioned",
            "trigger": {"event": "signed_up"},
            "steps": {
                "pause": {"wait": "1d", "next": "hello"},
                "hello": {"send": {"channel": "email", "template": template,
                                   "category": "transactional"}, "next": "end"},
            },
            "templates": {
                "welcome-v1": {"email": {"subject": "v1", "body": "first version"}},
                "welcome-v2": {"email": {"subject": "v2", "body": "second version"}},
            },
        }
    )


async def test_running_entries_keep_the_version_they_entered_with(
    temporal_env: WorkflowEnvironment, db_url: str
) -> None:
    key = f"versioned-{uuid.uuid4().hex[:6]}"
    queue = f"{key}-journeys"
    store = await Store.open(db_url)
    client = temporal_env.client
    now = datetime(2026, 3, 2, 9, tzinfo=UTC)
    try:
        router = Router(client, store, task_queue=queue,
                        delivery_task_queue=f"{key}-delivery")
        ingest = Ingest(store, router, clock=lambda: now)
        workers = journey_workers(client, store, journey_queue=queue,
                                  delivery_queue=f"{key}-delivery")
        async with running(workers):
            async with store.session() as session, session.begin():
                v1, _ = await journeys_repo.publish(session, definition(key, "welcome-v1"),
                                                    source=None, now=now)
            for contact in ("early", "late"):
                await ingest.identify(IdentifyCall(user_id=f"{key}-{contact}",
                                                   traits={"email": f"{contact}@example.com"}))
            await ingest.track(TrackCall(user_id=f"{key}-early", event="signed_up"))
            async with store.session() as session, session.begin():
                v2, new = await journeys_repo.publish(session, definition(key, "welcome-v2"),
                                                      source=None, now=now)
            assert new and (v1.version, v2.version) == (1, 2)
            await ingest.track(TrackCall(user_id=f"{key}-late", event="signed_up"))

            await temporal_env.sleep(timedelta(days=1, minutes=1))  # past the day-long wait
            results = {}
            for contact in ("early", "late"):
                handle = client.get_workflow_handle(
                    workflow_id(key, f"{key}-{contact}"), result_type=JourneyResult
                )
                results[contact] = await handle.result()
            assert results["early"].outcome == results["late"].outcome == "completed"
            async with store.session() as session:
                sent = {
                    row.contact_id: (row.template, row.rendered.get("subject"))
                    for row in await deliveries.deliveries_for(session, kind="send")
                }
        assert sent == {
            f"{key}-early": ("welcome-v1", "v1"),
            f"{key}-late": ("welcome-v2", "v2"),
        }
    finally:
        await store.close()
