"""Segments: definitions loaded from files, memberships decided on ingest with the real SQLite
store and the real Ingest, and `segment_entered` starting a journey on the time-skipping server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cairn.journey import Journey
from cairn.journey_run import EventMessage, JourneyResult
from cairn.scoring import Scoring
from cairn.segments import Segment, SegmentFileError, load_segments, parse_segment, time_based
from cairn.store import contacts as contacts_repo
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Event, SegmentMembership
from starter.audience import Audience
from starter.ingest import Ingest
from starter.router import Router
from starter.segment_spec import IdentifyCall, PageCall, TrackCall
from starter.worker import journey_workers, running

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = Path(__file__).resolve().parent.parent / "journeys"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def segment(data: dict[str, Any]) -> Segment:
    found, problems = parse_segment("test.yaml", data)
    assert not problems, problems
    assert found is not None
    return found


@pytest_asyncio.fixture
async def store(any_db_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(any_db_url)
    try:
        yield opened
    finally:
        await opened.close()


def audience(store: Store, *segments: dict[str, Any]) -> Audience:
    return Audience(store, [segment(s) for s in segments], Scoring([]))


async def memberships(store: Store, contact: str) -> list[SegmentMembership]:
    async with store.session() as session:
        rows = await session.scalars(select(SegmentMembership)
                                     .where(SegmentMembership.contact_id == contact)
                                     .order_by(SegmentMembership.id))
        return list(rows)


async def events_named(store: Store, contact: str, name: str) -> list[Event]:
    async with store.session() as session:
        rows = await session.scalars(select(Event).where(Event.contact_id == contact,
                                                         Event.name == name).order_by(Event.id))
        return list(rows)


def purchase(contact: str, total: float, at: datetime, message_id: str | None = None) -> TrackCall:
    return TrackCall(user_id=contact, event="purchase", properties={"total": total}, timestamp=at,
                     message_id=message_id or unique("m"))


BUYERS = {"key": "buyers", "rule": {"has_done": {"event": "purchase", "sum": "total",
                                                 "total": {"gt": 50}}}}


# --------------------------------------------------------------------------- definitions


def test_the_catalog_segments_load_in_dependency_order() -> None:
    segments = load_segments(CATALOG / "segments")
    keys = [s.key for s in segments]
    assert set(keys) == {"buyers", "frequent_buyers", "vip", "inactive_30d"}
    assert keys.index("frequent_buyers") < keys.index("vip")
    kinds = {s.key: s.kind for s in segments}
    assert kinds == {"buyers": "event", "frequent_buyers": "time", "vip": "event",
                     "inactive_30d": "time"}
    assert time_based(segments) == {"frequent_buyers", "vip", "inactive_30d"}


def write(folder: Path, name: str, data: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)


def test_bad_segment_files_name_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "segments"
    write(folder, "a.yaml", {"key": "a", "rule": {"attribute": "spent", "gtt": 50}})
    write(folder, "b.yaml", {"key": "b", "rule": {"visited": {"url_matches": "(unclosed"}}})
    write(folder, "c.yaml", {"key": "c", "rule": {"in_segment": "nobody"}})
    write(folder, "d.yaml", {"key": "d", "rule": {"has_done": {
        "event": "page_viewed", "where": {"url": {"matches": "[z-a]"}}}}})
    write(folder, "e.yaml", {"key": "e", "rule": {"has_done": {"event": "purchase",
                                                               "sum": "total"}}})
    write(folder, "f.yaml", "key: f\nrule: [unclosed\n")
    with pytest.raises(SegmentFileError) as raised:
        load_segments(folder)
    found = [str(p) for p in raised.value.problems]
    assert f"{folder / 'a.yaml'}: rule: unknown field 'gtt'" in found
    assert any(p.startswith(f"{folder / 'b.yaml'}: rule.visited.url_matches: not a regular")
               for p in found)
    assert any(p.startswith(f"{folder / 'd.yaml'}: rule.has_done.where.url.matches: not a "
                            "regular expression") for p in found)
    assert any(p.startswith(f"{folder / 'e.yaml'}: rule.has_done: `sum`") for p in found)
    assert any(p.startswith(f"{folder / 'f.yaml'}: line ") and "malformed YAML" in p
               for p in found)
    # `c` reads a segment no file defines; reported once the files themselves are valid
    write(folder, "a.yaml", {"key": "a", "rule": {"attribute": "spent", "gt": 50}})
    for name in ("b.yaml", "d.yaml", "e.yaml", "f.yaml"):
        (folder / name).unlink()
    with pytest.raises(SegmentFileError) as raised:
        load_segments(folder)
    assert [str(p) for p in raised.value.problems] == [
        f"{folder / 'c.yaml'}: rule: in_segment 'nobody': no such segment (known: a, c)"
    ]


def test_segments_defined_through_each_other_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "segments"
    write(folder, "a.yaml", {"key": "a", "rule": {"in_segment": "b"}})
    write(folder, "b.yaml", {"key": "b", "rule": {"not": {"in_segment": "a"}}})
    with pytest.raises(SegmentFileError, match=r"a -> b -> a|b -> a -> b"):
        load_segments(folder)


# --------------------------------------------------------------------------- on ingest


async def test_purchases_over_50_enter_buyers_and_store_segment_entered(store: Store) -> None:
    contact = unique("c")
    ingest = Ingest(store, None, clock=lambda: T0, audience=audience(store, BUYERS))

    await ingest.track(purchase(contact, 30, T0))
    assert await memberships(store, contact) == []
    second = await ingest.track(purchase(contact, 25, T0 + timedelta(hours=1)))

    [row] = await memberships(store, contact)
    assert (row.segment, row.entered_at, row.exited_at) == ("buyers", T0 + timedelta(hours=1),
                                                            None)
    [entered] = await events_named(store, contact, "segment_entered")
    assert entered.properties == {"segment": "buyers"}
    assert entered.message_id == f"{second.message_id}/segment_entered/buyers"
    assert entered.type == "audience"
    # a third purchase keeps the contact in: nothing new is entered or stored
    await ingest.track(purchase(contact, 10, T0 + timedelta(hours=2)))
    assert len(await memberships(store, contact)) == 1
    assert len(await events_named(store, contact, "segment_entered")) == 1


async def test_leaving_a_segment_closes_the_membership_and_emits_segment_exited(
    store: Store,
) -> None:
    contact = unique("c")
    big_cart = {"key": "big_cart", "rule": {"attribute": "cart_value", "gt": 100}}
    ingest = Ingest(store, None, clock=lambda: T0, audience=audience(store, big_cart))

    await ingest.identify(IdentifyCall(user_id=contact, traits={"cart_value": 150}, timestamp=T0))
    left = await ingest.identify(IdentifyCall(user_id=contact, traits={"cart_value": 20},
                                              timestamp=T0 + timedelta(days=1)))
    await ingest.identify(IdentifyCall(user_id=contact, traits={"cart_value": 300},
                                       timestamp=T0 + timedelta(days=2)))

    rows = await memberships(store, contact)
    assert [(r.entered_at, r.exited_at) for r in rows] == [
        (T0, T0 + timedelta(days=1)), (T0 + timedelta(days=2), None)]
    [exited] = await events_named(store, contact, "segment_exited")
    assert exited.properties == {"segment": "big_cart"}
    assert exited.message_id == f"{left.message_id}/segment_exited/big_cart"
    assert len(await events_named(store, contact, "segment_entered")) == 2


async def test_page_visits_by_exact_url_words_and_regular_expression(store: Store) -> None:
    contact = unique("c")
    rules = audience(
        store,
        {"key": "pricing_page", "rule": {"visited": {"url": "https://shop.example/pricing"}}},
        {"key": "enterprise_interest", "rule": {"visited": {
            "url_contains": ["enterprise", "plans"], "within": "7d"}}},
        {"key": "course_pages", "rule": {"visited": {"url_matches": r"/courses/[0-9]+$",
                                                     "count": {"gte": 2}}}},
    )
    ingest = Ingest(store, None, clock=lambda: T0, audience=rules)

    async def visit(url: str, at: datetime) -> None:
        await ingest.page(PageCall(user_id=contact, name="page", properties={"url": url},
                                   timestamp=at))

    await visit("https://shop.example/pricing?ref=ad", T0)
    await visit("https://shop.example/plans/enterprise", T0)
    await visit("https://shop.example/courses/12", T0)
    await visit("https://shop.example/courses/12/reviews", T0)
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact)
    assert snapshot is not None
    assert snapshot.segments == ["enterprise_interest"]  # not the exact URL, one course page

    await visit("https://shop.example/pricing", T0 + timedelta(days=8))
    await visit("https://shop.example/courses/7", T0 + timedelta(days=8))
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact)
    assert snapshot is not None
    # the enterprise visit is now older than 7 days: the contact left that segment
    assert snapshot.segments == ["course_pages", "pricing_page"]
    stored = (await events_named(store, contact, "page_viewed"))[0]
    assert stored.type == "page"
    assert stored.properties == {"url": "https://shop.example/pricing?ref=ad", "name": "page"}


async def test_last_seen_older_than_and_membership_of_other_segments(store: Store) -> None:
    contact = unique("c")
    rules = audience(
        store,
        {"key": "inactive_30d", "rule": {"attribute": "last_seen_at", "older_than": "30d"}},
        {"key": "lapsed_buyers", "rule": {"all": [{"in_segment": "inactive_30d"},
                                                  {"attribute": "plan", "eq": "pro"}]}},
    )
    async with store.session() as session, session.begin():
        await contacts_repo.identify(session, contact, {"plan": "pro"}, T0)
    # an event that arrives late (it happened 40 days after the contact was last seen)
    late = TrackCall(user_id=contact, event="reminder_opened", timestamp=T0 + timedelta(days=40),
                     message_id=unique("m"))
    await rules.apply(_message(late))
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact)
    assert snapshot is not None
    assert snapshot.segments == ["inactive_30d", "lapsed_buyers"]

    # the contact comes back: seen again, so both segments are left
    await Ingest(store, None, audience=rules).track(
        TrackCall(user_id=contact, event="login", timestamp=T0 + timedelta(days=41)))
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact)
    assert snapshot is not None
    assert snapshot.segments == []
    exited = await events_named(store, contact, "segment_exited")
    assert sorted(e.properties["segment"] for e in exited) == ["inactive_30d", "lapsed_buyers"]


def _message(call: TrackCall) -> EventMessage:
    assert call.timestamp is not None
    return EventMessage(message_id=call.message_id, event=call.event, contact_id=call.contact_id,
                        properties=call.properties, timestamp=call.timestamp)


# --------------------------------------------------------------------------- journeys


async def test_entering_buyers_starts_a_journey_triggered_by_segment_entered(
    temporal_env: WorkflowEnvironment, store: Store,
) -> None:
    key, contact = unique("welcome-buyer"), unique("c")
    journey = Journey.model_validate({
        "key": key, "name": "Welcome a buyer",
        "trigger": {"event": "segment_entered", "where": {"properties.segment": "buyers"}},
        "steps": {"thanks": {"score": {"add": 5}, "next": "bye"}, "bye": {"end": "welcomed"}},
    })
    async with store.session() as session, session.begin():
        await journeys_repo.publish(session, journey, source=None, now=T0)
    queue = unique("segments")
    workers = journey_workers(temporal_env.client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery")
    router = Router(temporal_env.client, store, task_queue=queue,
                    delivery_task_queue=f"{queue}-delivery")
    ingest = Ingest(store, router, clock=lambda: T0, audience=audience(store, BUYERS))
    async with running(workers):
        small = await ingest.track(purchase(contact, 20, T0))
        assert [r for r in small.routes if r.journey == key] == []
        big = await ingest.track(purchase(contact, 40, T0))
        assert big.routed

        [entered] = await events_named(store, contact, "segment_entered")
        assert entered.routed_at is not None
        wid = f"journey/{key}/{contact}"
        handle = temporal_env.client.get_workflow_handle(wid, result_type=JourneyResult)
        result = await handle.result()
        assert result.outcome == "ended:welcomed"
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    # the run was started by the segment_entered event, not by the purchase
    async with store.session() as session:
        entry = await entries_repo.last_entry(session, key, contact)
    assert entry is not None
    assert entry.trigger_message_id == entered.message_id
