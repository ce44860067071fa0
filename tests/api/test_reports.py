"""`GET /v1/journeys/{key}/report` answers the journey report as JSON, with a read key."""

from __future__ import annotations

from datetime import timedelta

import httpx

from cairn.store.db import Store
from tests.analytics.test_reports import DEFINITION, KEY, T0, add, entry, feedback, send
from tests.api_support import bearer, new_key
from tests.engine_support import publish


async def test_the_report_route_answers_funnel_and_messages(
    api: httpx.AsyncClient, anonymous_api: httpx.AsyncClient, store: Store,
) -> None:
    await publish(store, DEFINITION)
    await add(store, entry(1, "converted", minutes=20), entry(2, "completed", minutes=60),
              entry(3, None, entered=T0 + timedelta(days=2)))
    sent = await add(store, send(1, "sent", message_id="pm-1"), send(2, "sent"))
    await add(store, send(3, "skipped:quiet_hours"), feedback(1, sent[0], "opened"))

    answer = await api.get(f"/v1/journeys/{KEY}/report")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["journey"] == KEY and body["name"] == "Reduce cart abandonment"
    assert body["funnel"]["entries"] == 3
    assert body["funnel"]["conversions"] == 1
    assert body["funnel"]["median_seconds_to_convert"] == 1200
    # the open entry's run wrote no transition yet: it waits in the first step
    assert body["steps"] == [{"step": "email_reminder", "kind": "send", "reached": 1,
                              "waiting": 1, "left": {}, "exited": {}}]
    [message] = body["messages"]
    assert (message["sent"], message["opened"], message["skipped"]["quiet_hours"]) == (2, 1, 1)
    assert message["rates"]["open"] == 0.5
    # the conversion came before the message: nothing to attribute
    assert message["conversions"] == {"last_touch": 0, "any_touch": 0, "last_touch_rate": 0.0,
                                      "any_touch_rate": 0.0}

    windowed = await api.get(f"/v1/journeys/{KEY}/report",
                             params={"until": (T0 + timedelta(days=1)).isoformat(),
                                     "version": 1})
    assert windowed.status_code == 200, windowed.text
    assert windowed.json()["funnel"]["entries"] == 2

    read_key = await new_key(store, "read")
    assert (await anonymous_api.get(f"/v1/journeys/{KEY}/report",
                                    headers=bearer(read_key))).status_code == 200
    assert (await anonymous_api.get(f"/v1/journeys/{KEY}/report")).status_code == 401
    missing = await api.get("/v1/journeys/nope/report")
    assert missing.status_code == 404
    assert "publish it first" in missing.json()["detail"]
    assert (await api.get(f"/v1/journeys/{KEY}/report", params={"since": "soon"})
            ).status_code == 422


async def test_the_report_route_answers_experiments(api: httpx.AsyncClient, store: Store) -> None:
    from tests.analytics.test_experiment_figures import DEFINITION as EXPERIMENTS
    from tests.analytics.test_experiment_figures import clicked
    from tests.analytics.test_experiment_figures import send as variant_send

    await publish(store, EXPERIMENTS)
    control = await add(store, *(variant_send(n, "control", "cart-reminder") for n in range(4)))
    await add(store, variant_send(10, "urgent", "cart-reminder-urgent"),
              clicked(0, control[0]))
    answer = await api.get(f"/v1/journeys/{EXPERIMENTS['key']}/report")
    assert answer.status_code == 200, answer.text
    by_kind = {e["kind"]: e for e in answer.json()["experiments"]}
    arms = {a["name"]: a for a in by_kind["variants"]["arms"]}
    assert (arms["control"]["contacts"], arms["control"]["conversions"]) == (4, 1)
    assert arms["control"]["rate"] == 0.25 and arms["urgent"]["contacts"] == 1
    assert by_kind["variants"]["status"].startswith("deciding: waiting for 100 contacts")
    assert by_kind["split"]["arms"][0]["name"] == "holdout"
