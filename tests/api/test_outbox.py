"""`/v1/outbox` shows the ledger's statuses as they are, `unconfirmed` included, and filters."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from cairn.store import deliveries
from cairn.store.db import Store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def _row(store: Store, key: str, status: str) -> None:
    async with store.session() as s, s.begin():
        await deliveries.record_delivery(
            s, idempotency_key=key, kind="send", workflow_id="journey/j/c-1", journey_key="j",
            step="s", contact_id="c-1", channel="email", provider="smtp", template="t",
            category="marketing", status=status, reason=None, rendered={"subject": "Hi"},
            created_at=NOW, planned_at=NOW, sent_at=NOW,
            accepted_at=NOW if status == "sent" else None,
        )


async def test_outbox_shows_unconfirmed_and_filters_by_status(
    api: httpx.AsyncClient, store: Store,
) -> None:
    await _row(store, "k-1", "sent")
    await _row(store, "k-2", "unconfirmed")

    everything = (await api.get("/v1/outbox")).json()
    unconfirmed = await api.get("/v1/outbox", params={"status": "unconfirmed"})

    assert [row["status"] for row in everything] == ["unconfirmed", "sent"]
    assert unconfirmed.status_code == 200
    [row] = unconfirmed.json()
    assert (row["status"], row["accepted_at"], row["planned_at"]) == (
        "unconfirmed", None, "2026-03-02T09:00:00Z")
    assert everything[1]["accepted_at"] == "2026-03-02T09:00:00Z"
