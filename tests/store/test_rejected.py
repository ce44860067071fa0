"""The rejected-calls store keeps refused calls for `KEPT_FOR`, then forgets them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cairn.store import rejected
from cairn.store.db import Store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def test_refused_calls_older_than_the_retention_are_forgotten_on_the_next_write(
    store: Store,
) -> None:
    async def refuse(at: datetime, message_id: str) -> None:
        async with store.session() as s, s.begin():
            await rejected.record_refusals(
                s, [rejected.Refusal(index=0, reason="body.batch[0].event: Field required",
                                     call={"type": "track"}, message_id=message_id)],
                endpoint="/v1/batch", received_at=at)

    await refuse(NOW - rejected.KEPT_FOR - timedelta(hours=1), "old")
    await refuse(NOW - rejected.KEPT_FOR + timedelta(hours=1), "recent")
    await refuse(NOW, "new")
    async with store.session() as s:
        kept = [row.message_id for row in await rejected.latest_rejected(s)]
    assert kept == ["new", "recent"]
