"""`GET /metrics`: Cairn's counters move after an ingest, a refusal, a send and a hold."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import ActivityEnvironment

from activities import DeliveryActivities
from cairn.store.db import Store
from tests.api_support import bearer, new_key
from tests.engine.test_activities import _contact, send_request

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    answer = await client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_counters_move_after_an_ingest_a_refusal_a_send_and_a_hold(
    api: httpx.AsyncClient, anonymous_api: httpx.AsyncClient, store: Store,
) -> None:
    before = await scrape(api)
    accepted = await api.post("/v1/track", json={"userId": "m-1", "event": "cart_item_added",
                                                  "messageId": "metrics-1"})
    assert accepted.status_code == 202, accepted.text
    again = await api.post("/v1/track", json={"userId": "m-1", "event": "cart_item_added",
                                               "messageId": "metrics-1"})
    assert again.status_code == 202
    refused = await api.post("/v1/track", json={"event": "no user"})
    assert refused.status_code == 422
    batch = await api.post("/v1/batch", json={"batch": [
        {"type": "track", "userId": "m-2", "event": "a"}, {"type": "track", "event": "b"}]})
    assert batch.status_code == 200, batch.text

    await _contact(store)
    env = ActivityEnvironment()
    delivery = DeliveryActivities(store)
    evening = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Bucharest, the contact's zone
    held = await env.run(delivery.prepare_send, send_request(quiet=True, now=evening))
    assert held.status == "deferred:quiet_hours"
    plan = await env.run(delivery.prepare_send, send_request(channel="email"))
    assert plan.status == "ready"
    sent = await env.run(delivery.deliver_message,
                         send_request(channel="email").model_copy(update={"channel": "email"}))
    assert sent.status == "sent"

    after = await scrape(api)
    assert moved(before, after, "cairn_events_accepted_total", type="track") == 2
    assert moved(before, after, "cairn_events_rejected_total", endpoint="/v1/track") == 1
    assert moved(before, after, "cairn_events_rejected_total", endpoint="/v1/batch") == 1
    assert moved(before, after, "cairn_sends_total", channel="email", status="sending") == 1
    assert moved(before, after, "cairn_sends_total", channel="email", status="sent") == 1
    assert moved(before, after, "cairn_send_holds_total", reason="quiet_hours") == 1
    assert not any(name.endswith("m-1") or "m-1" in str(labels)
                   for name, labels in after), "no contact id in any label"

    assert (await anonymous_api.get("/metrics")).status_code == 401
    read = await new_key(store, "read")
    assert (await anonymous_api.get("/metrics", headers=bearer(read))).status_code == 200
