"""The store on a real SQLite file: migrations equal the schema, and every repository function.

Idempotent writes are checked both repeated and concurrent (several sessions racing on one key),
since that is how retried activities and parallel API calls meet them.
"""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import TypeAdapter
from sqlalchemy import Connection, func, inspect, select, text

from cairn.conditions import Condition, parse_condition
from cairn.contact import ContactSnapshot
from cairn.journey import Journey
from cairn.settings import Settings
from cairn.store import contacts, deliveries, entries, events, journeys, scores, segments, tasks
from cairn.store.db import Store, StoreError, alembic_config
from cairn.store.schema import Base, Contact, Delivery, Event, ScoreChangeRecord, Task
from cairn.traits import ContactTraitError

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BUCHAREST = timezone(timedelta(hours=2))


async def _count(store: Store, model: Any) -> int:
    async with store.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


# --------------------------------------------------------------------------- opening and migrations


async def test_migrations_create_exactly_the_schema(store: Store) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []
        current = await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )
    assert current == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_migrations_downgrade_and_upgrade_again(store: Store) -> None:
    def down(connection: Connection) -> list[str]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        names = inspect(connection).get_table_names()
        return [name for name in names if name != "alembic_version"]

    async with store.engine.connect() as connection:
        assert await connection.run_sync(down) == []
        await connection.commit()
    await store.migrate()
    assert await _count(store, Event) == 0


async def test_open_creates_the_folder_and_configures_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cairn.db"
    store = await Store.open(f"sqlite:///{path}")  # plain URL: the async driver is chosen
    try:
        assert path.exists()
        assert store.url.startswith("sqlite+aiosqlite:///")
        async with store.engine.connect() as connection:
            journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            busy = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert (journal, keys) == ("wal", 1)
        assert busy and busy > 0
    finally:
        await store.close()


async def test_two_processes_opening_a_new_database_at_once_both_succeed(
    any_db_url: str,
) -> None:
    first, second = await asyncio.gather(Store.open(any_db_url), Store.open(any_db_url))
    try:
        async with first.session() as s:
            assert (await s.execute(text("SELECT count(*) FROM alembic_version"))).scalar() == 1
    finally:
        await first.close()
        await second.close()


async def test_a_plain_url_opens_with_the_async_driver_and_times_come_back_in_utc(
    any_db_url: str,
) -> None:
    """`sqlite://` and `postgresql://` are what people copy from elsewhere; both must work, and
    a moment written with an offset must read back as the same moment, aware, in UTC."""
    plain = any_db_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    store = await Store.open(plain)
    try:
        assert store.url.split("://")[0] == any_db_url.split("://")[0]
        bucharest = datetime(2026, 3, 2, 11, 0, tzinfo=timezone(timedelta(hours=2)))
        async with store.session() as s, s.begin():
            await events.record_event(
                s, message_id="m-tz", type="track", contact_id="c-1", name="opened",
                properties={"nested": {"list": [1, "two", None]}, "ok": True},
                timestamp=bucharest, received_at=NOW,
            )
        async with store.session() as s:
            row = (await s.scalars(select(Event).where(Event.message_id == "m-tz"))).one()
            later = await events.count_events(s, "c-1", "opened", since=NOW - timedelta(minutes=1))
    finally:
        await store.close()
    assert row.timestamp == NOW and row.timestamp.tzinfo is UTC
    assert row.properties == {"nested": {"list": [1, "two", None]}, "ok": True}
    assert later == 1


@pytest.mark.parametrize("url", ["not a url", "postgresql+psycopg2://cairn@localhost/cairn"])
async def test_open_refuses_urls_it_cannot_use(url: str) -> None:
    with pytest.raises(StoreError, match="cannot"):
        await Store.open(url)


async def test_a_failed_transaction_leaves_nothing_even_after_an_idempotent_insert(
    store: Store,
) -> None:
    """The insert-or-find savepoint must stay inside its caller's transaction on SQLite."""
    with pytest.raises(RuntimeError):
        async with store.session() as s, s.begin():
            await deliveries.record_delivery(
                s, idempotency_key="wf/a/1", kind="send", status="sent", created_at=NOW
            )
            raise RuntimeError("caller fails after the insert")
    assert await _count(store, Delivery) == 0


# --------------------------------------------------------------------------- events


async def _event(store: Store, message_id: str, name: str, at: datetime, **properties: Any,
                 ) -> tuple[Event, bool]:
    async with store.session() as s, s.begin():
        return await events.record_event(
            s, message_id=message_id, type="track", contact_id="c-1", name=name,
            properties=properties, timestamp=at, received_at=NOW,
        )


async def test_record_event_once_per_message_id(store: Store) -> None:
    row, new = await _event(store, "m-1", "purchase", NOW, total=30)
    again, again_new = await _event(store, "m-1", "purchase", NOW + timedelta(hours=1), total=99)
    assert new and not again_new
    assert again.id == row.id and again.properties == {"total": 30}
    raced = await asyncio.gather(*[_event(store, "m-2", "purchase", NOW) for _ in range(6)])
    assert sum(new for _, new in raced) == 1
    assert len({row.id for row, _ in raced}) == 1
    assert await _count(store, Event) == 2


async def test_event_times_are_utc_whatever_offset_they_came_with(store: Store) -> None:
    row, _ = await _event(store, "m-1", "purchase", datetime(2026, 3, 2, 11, 0, tzinfo=BUCHAREST))
    assert row.timestamp == NOW and row.timestamp.utcoffset() == timedelta(0)
    naive, _ = await _event(store, "m-2", "purchase", datetime(2026, 3, 2, 10, 0))
    async with store.session() as s:
        loaded = await events.event_by_message_id(s, "m-1")
        loaded_naive = await events.event_by_message_id(s, "m-2")
    assert loaded is not None and loaded_naive is not None
    assert loaded.timestamp.tzinfo is not None and loaded.timestamp == NOW
    assert loaded_naive.timestamp == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert naive.timestamp.tzinfo is not None


async def test_count_events_with_windows_and_filters(store: Store) -> None:
    await _event(store, "m-1", "purchase", NOW - timedelta(days=10), total=80)
    await _event(store, "m-2", "purchase", NOW - timedelta(days=3), total=20)
    await _event(store, "m-3", "purchase", NOW, total=60)
    await _event(store, "m-4", "purchase", NOW + timedelta(hours=1), total=70)
    await _event(store, "m-5", "page_view", NOW - timedelta(days=1))
    # Another contact's purchase never counts.
    async with store.session() as s, s.begin():
        await events.record_event(s, message_id="m-6", type="track", contact_id="c-2",
                                  name="purchase", properties={"total": 90}, timestamp=NOW,
                                  received_at=NOW)
    where = TypeAdapter(Condition).validate_python(
        parse_condition({"properties.total": {"gte": 50}})
    )
    async with store.session() as s:
        assert await events.count_events(s, "c-1", "purchase") == 4
        assert await events.count_events(s, "c-1", "purchase", until=NOW) == 3
        week = NOW - timedelta(days=7)
        assert await events.count_events(s, "c-1", "purchase", since=week, until=NOW) == 2
        # Both ends are inclusive, in UTC whatever offset the bounds carry.
        local_now = NOW.astimezone(BUCHAREST)
        assert await events.count_events(s, "c-1", "purchase", since=local_now,
                                         until=local_now) == 1
        assert await events.count_events(s, "c-1", "purchase", until=NOW, where=where) == 2
        assert await events.count_events(s, "c-1", "purchase", since=week, until=NOW,
                                         where=where) == 1
        assert await events.count_events(s, "c-1", "checkout") == 0


async def test_unrouted_events_until_marked_routed(store: Store) -> None:
    first, _ = await _event(store, "m-1", "purchase", NOW)
    second, _ = await _event(store, "m-2", "purchase", NOW)
    async with store.session() as s:
        assert [e.id for e in await events.unrouted_events(s)] == [first.id, second.id]
    async with store.session() as s, s.begin():
        await events.mark_routed(s, [first.id], NOW)
    async with store.session() as s:
        assert [e.id for e in await events.unrouted_events(s)] == [second.id]
        message = events.event_message(second)
    assert message.message_id == "m-2" and message.event == "purchase"
    assert message.contact_id == "c-1" and message.timestamp == NOW

    async with store.session() as s:
        assert await events.unrouted_among(s, [first.id, second.id, second.id + 99]) == [
            second.id]


async def test_record_events_in_bulk_stores_each_message_id_once(store: Store) -> None:
    stored, _ = await _event(store, "m-1", "purchase", NOW)

    def given(message_id: str) -> dict[str, Any]:
        return {"message_id": message_id, "type": "audience", "contact_id": "c-1",
                "name": "segment_entered", "properties": {"segment": "vip"}, "timestamp": NOW,
                "received_at": NOW}

    async with store.session() as s, s.begin():
        assert await events.record_events(s, [given("m-1"), given("m-2"), given("m-3")]) == 2
    async with store.session() as s, s.begin():
        assert await events.record_events(s, [given("m-2"), given("m-3")]) == 0
        assert await events.record_events(s, []) == 0
    async with store.session() as s:
        kept = await events.event_by_message_id(s, "m-1")
        added = await events.event_by_message_id(s, "m-3")
    assert kept is not None and kept.id == stored.id and kept.name == "purchase"
    assert added is not None and added.properties == {"segment": "vip"}
    assert await _count(store, Event) == 3


# --------------------------------------------------------------------------- contacts and segments


async def test_ensure_contact_creates_once_and_widens_seen_span(store: Store) -> None:
    async with store.session() as s, s.begin():
        created = await contacts.ensure_contact(s, "c-1", NOW)
    assert created.first_seen_at == NOW and created.last_seen_at == NOW
    async with store.session() as s, s.begin():
        await contacts.ensure_contact(s, "c-1", NOW + timedelta(hours=2))
        await contacts.ensure_contact(s, "c-1", NOW - timedelta(hours=1))  # arrived late
    async with store.session() as s:
        row = await contacts.get_contact(s, "c-1")
    assert row is not None
    assert row.first_seen_at == NOW - timedelta(hours=1)
    assert row.last_seen_at == NOW + timedelta(hours=2)

    async def touch(i: int) -> None:
        async with store.session() as s, s.begin():
            await contacts.ensure_contact(s, "c-new", NOW + timedelta(minutes=i))

    await asyncio.gather(*[touch(i) for i in range(5)])
    async with store.session() as s:
        raced = await contacts.get_contact(s, "c-new")
    assert raced is not None and raced.last_seen_at == NOW + timedelta(minutes=4)


async def test_identify_merges_traits_into_columns_and_attributes(store: Store) -> None:
    async with store.session() as s, s.begin():
        await contacts.identify(s, "c-1", {
            "email": " ana@example.com ", "timezone": "Europe/Bucharest", "push_tokens": "tok-1",
            "consent": {"marketing": True, "sms": {"marketing": False}}, "first_name": "Ana",
            "cart": {"items": 2},
        }, NOW)
    async with store.session() as s, s.begin():
        await contacts.identify(s, "c-1", {
            "push_tokens": ["tok-2", "tok-1"], "consent": {"sms": {"transactional": True}},
            "web_push": {"endpoint": "https://push.example/1", "keys": {"auth": "a"}},
            "plan": "pro",
        }, NOW + timedelta(minutes=5))
    async with store.session() as s:
        snap = await contacts.snapshot(s, "c-1")
    assert snap is not None
    assert snap.email == "ana@example.com" and snap.timezone == "Europe/Bucharest"
    assert snap.push_tokens == ["tok-1", "tok-2"]
    assert snap.consent == {"marketing": True, "sms": {"marketing": False, "transactional": True}}
    assert [w.endpoint for w in snap.web_push] == ["https://push.example/1"]
    assert snap.attributes == {"first_name": "Ana", "cart": {"items": 2}, "plan": "pro"}
    assert snap.last_seen_at == NOW + timedelta(minutes=5)


async def test_identify_refuses_an_unknown_time_zone(store: Store) -> None:
    with pytest.raises(ContactTraitError, match=r"timezone.*IANA"):
        async with store.session() as s, s.begin():
            await contacts.identify(s, "c-1", {"timezone": "Europe/Bucuresti"}, NOW)


async def test_identify_refuses_a_phone_longer_than_the_column_on_every_database(
    store: Store,
) -> None:
    with pytest.raises(ContactTraitError, match=r"phone: 40 characters.*32 allowed"):
        async with store.session() as s, s.begin():
            await contacts.identify(s, "c-1", {"phone": "+4" + "0" * 38}, NOW)
    async with store.session() as s:
        assert await contacts.get_contact(s, "c-1") is None


async def test_concurrent_identify_calls_lose_no_trait(store: Store) -> None:
    async with store.session() as s, s.begin():
        await contacts.identify(s, "c-1", {"plan": "free"}, NOW)

    async def identify(i: int) -> None:
        async with store.session() as s, s.begin():
            await contacts.identify(s, "c-1", {f"trait_{i}": i, "push_tokens": [f"tok-{i}"]}, NOW)

    await asyncio.gather(*[identify(i) for i in range(6)])
    async with store.session() as s:
        snap = await contacts.snapshot(s, "c-1")
    assert snap is not None
    assert snap.attributes == {"plan": "free", **{f"trait_{i}": i for i in range(6)}}
    assert sorted(snap.push_tokens) == sorted(f"tok-{i}" for i in range(6))


async def test_profile_update_with_dotted_paths_and_tags(store: Store) -> None:
    async with store.session() as s, s.begin():
        await contacts.identify(s, "c-1", {"cart": {"items": 2, "total": 40}, "plan": "free",
                                           "consent": {"marketing": True}}, NOW)
        await contacts.apply_profile_update(s, "c-1", {"cart.items": 0}, [], ["vip"], [], NOW)
    async with store.session() as s, s.begin():
        row = await contacts.apply_profile_update(
            s, "c-1",
            {"plan": "pro", "consent.marketing": False, "loyalty.level": "gold"},
            ["cart.total", "missing.path"], ["vip", "buyer"], ["newbie"], NOW,
        )
        await contacts.apply_profile_update(s, "c-1", {}, [], [], ["vip"], NOW)
    assert row.attributes == {"cart": {"items": 0}, "plan": "pro", "loyalty": {"level": "gold"}}
    assert row.consent == {"marketing": False}
    async with store.session() as s:
        snap = await contacts.snapshot(s, "c-1")
    assert snap is not None and snap.tags == ["buyer"]


async def test_create_contact_writes_scores_and_segments_and_overwrites(store: Store) -> None:
    snapshot = ContactSnapshot(
        id="c-1", timezone="Europe/Bucharest", email="ana@example.com", phone="+40722000000",
        push_tokens=["tok-1"], web_push=[{"endpoint": "https://push.example/abc", "keys": {}}],
        consent={"marketing": True}, attributes={"cart": {"items": 2}}, tags=["new"],
        scores={"global": 35, "sales": 5}, segments=["buyers", "vip"],
    )
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, snapshot, NOW)
    async with store.session() as s:
        written = await contacts.snapshot(s, "c-1")
    assert written is not None
    assert written.model_dump(exclude={"first_seen_at", "last_seen_at"}) == snapshot.model_dump(
        exclude={"first_seen_at", "last_seen_at"}
    )
    changed = snapshot.model_copy(update={"scores": {"global": 10}, "segments": ["buyers"]})
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, changed, NOW + timedelta(hours=1))
    async with store.session() as s:
        again = await contacts.snapshot(s, "c-1")
    assert again is not None
    assert again.scores == {"global": 10, "sales": 5} and again.segments == ["buyers"]


async def test_segment_memberships(store: Store) -> None:
    async with store.session() as s, s.begin():
        await contacts.ensure_contact(s, "c-1", NOW)
        assert await segments.enter_segment(s, "c-1", "buyers", NOW)
        assert not await segments.enter_segment(s, "c-1", "buyers", NOW)
        assert await segments.enter_segment(s, "c-1", "vip", NOW)
        assert await segments.active_segments(s, "c-1") == ["buyers", "vip"]
        assert await segments.exit_segment(s, "c-1", "vip", NOW + timedelta(days=1))
        assert not await segments.exit_segment(s, "c-1", "vip", NOW + timedelta(days=1))
        assert await segments.active_segments(s, "c-1") == ["buyers"]
    with pytest.raises(segments.UnknownContactError, match="c-404"):
        async with store.session() as s, s.begin():
            await segments.enter_segment(s, "c-404", "buyers", NOW)


# --------------------------------------------------------------------------- journeys and entries


def _journey(wait: str = "2h") -> Journey:
    return Journey.model_validate({
        "key": "cart-abandonment",
        "name": "Reduce cart abandonment",
        "trigger": {"event": "cart_item_added", "where": {"properties.value": {"gte": 20}}},
        "entry": {"reentry": "after_exit", "min_interval": "1d"},
        "exit": [{"event": "checkout_completed", "goal": "converted"}],
        "settings": {"quiet_hours": {"from": "21:00", "to": "08:00"}},
        "steps": {
            "wait_2h": {"wait": wait, "next": "still_in_cart"},
            "still_in_cart": {"if": {"attribute": "cart.items", "gt": 0},
                              "then": "email_reminder", "else": "end"},
            "email_reminder": {"send": {"channel": "email", "template": "cart-reminder"},
                               "next": "end"},
        },
        "templates": {"cart-reminder": {"email": {"subject": "Hi", "body": "Your cart"}}},
    })


async def test_publish_versions_only_changed_definitions(store: Store) -> None:
    async with store.session() as s, s.begin():
        first, new = await journeys.publish(s, _journey(), source="journeys/cart.yaml", now=NOW)
        assert (first.version, new) == (1, True)
        same, new = await journeys.publish(s, _journey(), source="journeys/cart.yaml", now=NOW)
        assert (same.id, same.version, new) == (first.id, 1, False)
        changed, new = await journeys.publish(s, _journey("3h"), source=None, now=NOW)
        assert (changed.version, new) == (2, True)
    async with store.session() as s:
        listed = await journeys.published(s)
        assert [(row.key, row.version) for row in listed] == [("cart-abandonment", 2)]
        old = await journeys.get_version(s, "cart-abandonment", 1)
        newest = await journeys.get_version(s, "cart-abandonment")
        assert await journeys.get_version(s, "cart-abandonment", 9) is None
    assert old is not None and not old.active and old.published_at == NOW
    assert newest is not None and newest.version == 2
    loaded = journeys.journey_of(newest)
    assert loaded == _journey("3h").model_copy(update={"version": 2})
    assert journeys.journey_of(old).steps["wait_2h"] == _journey().steps["wait_2h"]


async def test_entries_open_and_close(store: Store) -> None:
    async with store.session() as s, s.begin():
        for contact, minutes in (("c-1", 0), ("c-2", 5), ("c-1", 10)):
            await entries.record_entry(
                s, journey_key="cart-abandonment", version=1, contact_id=contact,
                entry_key="o-7" if minutes == 10 else None,
                workflow_id=f"journey/cart-abandonment/{contact}" + ("/o-7" if minutes else ""),
                trigger_message_id=f"m-{minutes}", entered_at=NOW + timedelta(minutes=minutes),
            )
    async with store.session() as s, s.begin():
        assert len(await entries.open_entries(s)) == 3
        assert len(await entries.open_entries(s, "cart-abandonment", "c-1")) == 2
        latest = await entries.last_entry(s, "cart-abandonment", "c-1")
        assert latest is not None and latest.entry_key == "o-7"
        plain = await entries.last_entry(s, "cart-abandonment", "c-2")
        assert plain is not None and plain.trigger_message_id == "m-5"
        closed = await entries.close_entry(s, "journey/cart-abandonment/c-1", "converted",
                                           NOW + timedelta(hours=1))
        assert closed == 1
        assert await entries.close_entry(s, "journey/cart-abandonment/c-1", "x", NOW) == 0
    async with store.session() as s:
        rows = await entries.entries_for(s, "cart-abandonment", "c-1")
        remaining = await entries.open_entries(s, contact_id="c-1")
    assert [(r.outcome, r.ended_at) for r in rows] == [
        ("converted", NOW + timedelta(hours=1)), (None, None),
    ]
    assert [r.entry_key for r in remaining] == ["o-7"]


# --------------------------------------------------------------------------- ledgers


async def _delivery(store: Store, key: str, **fields: Any) -> tuple[Delivery, bool]:
    async with store.session() as s, s.begin():
        return await deliveries.record_delivery(
            s, idempotency_key=key, kind=fields.pop("kind", "send"), status="sent",
            created_at=NOW, **fields,
        )


async def test_record_delivery_once_per_key_even_when_racing(store: Store) -> None:
    first, new = await _delivery(store, "wf/a/1", workflow_id="wf", contact_id="c-1",
                                 rendered={"body": "one"})
    again, again_new = await _delivery(store, "wf/a/1", workflow_id="wf", contact_id="c-1",
                                       rendered={"body": "two"})
    assert new and not again_new and again.id == first.id and again.rendered == {"body": "one"}
    raced = await asyncio.gather(*[
        _delivery(store, "wf/b/1", workflow_id="wf", contact_id="c-1", rendered={"n": i})
        for i in range(8)
    ])
    assert sum(new for _, new in raced) == 1 and len({row.id for row, _ in raced}) == 1
    await _delivery(store, "other/a/1", workflow_id="other", contact_id="c-2", kind="notify")
    async with store.session() as s:
        assert [d.idempotency_key for d in await deliveries.deliveries_for(s, workflow_id="wf")
                ] == ["wf/a/1", "wf/b/1"]
        assert len(await deliveries.deliveries_for(s, contact_id="c-2")) == 1
        assert len(await deliveries.deliveries_for(s, kind="send")) == 2
        assert [d.idempotency_key for d in await deliveries.outbox(s, limit=2)] == [
            "other/a/1", "wf/b/1",
        ]
        found = await deliveries.find_delivery(s, "wf/a/1")
        assert found is not None and found.created_at == NOW
        assert await deliveries.find_delivery(s, "nope") is None


async def _score(store: Store, delta: int, key: str | None, dimension: str = "global") -> int:
    async with store.session() as s, s.begin():
        return await scores.change_score(
            s, contact_id="c-1", dimension=dimension, delta=delta, reason=f"because {key}",
            source="wf", workflow_id="wf", idempotency_key=key, now=NOW,
        )


async def test_change_score_once_per_key(store: Store) -> None:
    assert await _score(store, 10, "wf/s/1") == 10
    assert await _score(store, 10, "wf/s/1") == 10
    assert await _score(store, -3, "wf/s/2") == 7
    assert await _score(store, 5, None, dimension="sales") == 5
    raced = await asyncio.gather(*[_score(store, 4, f"wf/r/{i % 3}") for i in range(9)])
    assert max(raced) == 19 and set(raced) == {11, 15, 19}
    async with store.session() as s:
        assert await scores.scores_of(s, "c-1") == {"global": 19, "sales": 5}
        history = await scores.score_history(s, workflow_id="wf")
        assert await scores.score_history(s, contact_id="c-404") == []
    assert [(h.dimension, h.delta, h.total) for h in history][:3] == [
        ("global", 10, 10), ("global", -3, 7), ("sales", 5, 5),
    ]
    assert history[0].reason == "because wf/s/1" and history[0].at == NOW
    assert await _count(store, ScoreChangeRecord) == 6


async def test_create_task_once_per_key(store: Store) -> None:
    async def create(key: str | None, title: str) -> Task:
        async with store.session() as s, s.begin():
            return await tasks.create_task(
                s, idempotency_key=key, queue="sales-calls", title=title, note=None,
                contact_id="c-1", journey_key="whitepapers", workflow_id="wf", step="call",
                due_at=NOW + timedelta(days=2), now=NOW,
            )

    first = await create("wf/call/1", "Call Ana")
    again = await create("wf/call/1", "Call Ana again")
    raced = await asyncio.gather(*[create("wf/call/2", "Call") for _ in range(4)])
    await create(None, "Unkeyed")
    assert again.id == first.id and again.title == "Call Ana"
    assert len({t.id for t in raced}) == 1
    async with store.session() as s, s.begin():
        listed = await tasks.list_tasks(s, queue="sales-calls")
        assert await tasks.list_tasks(s, queue="collections") == []
        assert len(await tasks.list_tasks(s, workflow_id="wf", status="open")) == 3
        listed[0].status = "done"
    async with store.session() as s:
        done = await tasks.list_tasks(s, status="done")
    assert [t.title for t in done] == ["Call Ana"]
    assert done[0].due_at == NOW + timedelta(days=2) and done[0].due_at.tzinfo is not None


async def test_the_store_and_the_signing_key_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "home" / "cairn.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        async with store.session() as session, session.begin():
            await session.execute(text("CREATE TABLE probe (x INTEGER)"))
    finally:
        await store.close()
    made = [p for p in path.parent.iterdir() if p.name.startswith("cairn.db")]
    assert path in made
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {
        p.name: 0o600 for p in made}
    Settings(home=tmp_path / "home").signing_key()
    assert stat.S_IMODE((tmp_path / "home" / "secret_key").stat().st_mode) == 0o600


async def test_see_contacts_creates_widens_and_fills_an_unseen_span(store: Store) -> None:
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, ContactSnapshot(id="imported", timezone="UTC"), NOW)
        await s.execute(text("UPDATE contacts SET first_seen_at = NULL, last_seen_at = NULL "
                             "WHERE id = 'imported'"))
        await contacts.ensure_contact(s, "known", NOW)
    at = [NOW + timedelta(minutes=m) for m in (-30, -10, 10, 20, 30)]
    async with store.session() as s, s.begin():
        await contacts.see_contacts(s, {
            "imported": (at[2], at[2], at[3]),
            "known": (at[1], at[0], at[4]),
            "new": (at[3], at[1], at[4]),
        })
    async with store.session() as s, s.begin():  # a span inside the stored one changes nothing
        await contacts.see_contacts(s, {"known": (at[2], at[1], at[2])})
    async with store.session() as s:
        seen = {c.id: (c.first_seen_at, c.last_seen_at, c.created_at, c.attributes, c.tags)
                for c in await s.scalars(select(Contact))}
    assert seen["imported"][:2] == (at[2], at[3])
    assert seen["known"][:3] == (at[0], at[4], NOW)
    assert seen["new"] == (at[1], at[4], at[3], {}, [])
