"""Segments: definitions loaded from files, memberships decided on ingest with the real SQLite
store and the real Ingest, and `segment_entered` starting a journey on the time-skipping server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cairn.catalog_folder import load_segments
from cairn.conditions import ConditionScope, HasDone, ReachableSpec, Verdict, window_start
from cairn.contact import ContactSnapshot
from cairn.events.calls import IdentifyCall, PageCall, TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import ProfileRules
from cairn.events.router import Router
from cairn.journey import Journey
from cairn.journey_run import EventMessage, JourneyResult
from cairn.reachability import reachability
from cairn.scoring import Scoring
from cairn.segments import (
    Segment,
    SegmentFileError,
    decide,
    has_done_specs,
    members,
    parse_segment,
    time_based,
)
from cairn.store import contacts as contacts_repo
from cairn.store import entries as entries_repo
from cairn.store import events as events_repo
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import Event, SegmentMembership
from cairn.store.segments import enter_segment as segments_repo_enter
from starter.worker import journey_workers, running

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = Path(__file__).resolve().parents[2] / "journeys"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def segment(data: dict[str, Any]) -> Segment:
    found, problems = parse_segment("test.yaml", data)
    assert not problems, problems
    assert found is not None
    return found


def profile_rules(store: Store, *segments: dict[str, Any]) -> ProfileRules:
    return ProfileRules(store, [segment(s) for s in segments], Scoring([]))


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
    segments = load_segments(CATALOG)
    keys = [s.key for s in segments]
    # The catalog grows with the seed journeys; these four are ActiveCollab's and WebEngage's.
    assert {"buyers", "frequent_buyers", "vip", "inactive_30d"} <= set(keys)
    assert keys.index("frequent_buyers") < keys.index("vip")
    for key in keys:  # every segment after the segments it reads
        used = next(s for s in segments if s.key == key).segments_used()
        assert all(keys.index(u) < keys.index(key) for u in used), key
    kinds = {s.key: s.kind for s in segments}
    assert {k: kinds[k] for k in ("buyers", "frequent_buyers", "vip", "inactive_30d")} == {
        "buyers": "event", "frequent_buyers": "time", "vip": "event", "inactive_30d": "time"}
    timed = time_based(segments)
    assert {"frequent_buyers", "vip", "inactive_30d"} <= timed
    assert "buyers" not in timed


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
        load_segments(tmp_path)
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
        load_segments(tmp_path)
    assert [str(p) for p in raised.value.problems] == [
        f"{folder / 'c.yaml'}: rule: in_segment 'nobody': no such segment (known: a, c)"
    ]


def test_segments_defined_through_each_other_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "segments"
    write(folder, "a.yaml", {"key": "a", "rule": {"in_segment": "b"}})
    write(folder, "b.yaml", {"key": "b", "rule": {"not": {"in_segment": "a"}}})
    with pytest.raises(SegmentFileError, match=r"a -> b -> a|b -> a -> b"):
        load_segments(tmp_path)


# --------------------------------------------------------------------------- on ingest


async def test_purchases_over_50_enter_buyers_and_store_segment_entered(store: Store) -> None:
    contact = unique("c")
    ingest = Ingest(store, None, clock=lambda: T0, profile_rules=profile_rules(store, BUYERS))

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
    ingest = Ingest(store, None, clock=lambda: T0, profile_rules=profile_rules(store, big_cart))

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
    rules = profile_rules(
        store,
        {"key": "pricing_page", "rule": {"visited": {"url": "https://shop.example/pricing"}}},
        {"key": "enterprise_interest", "rule": {"visited": {
            "url_contains": ["enterprise", "plans"], "within": "7d"}}},
        {"key": "course_pages", "rule": {"visited": {"url_matches": r"/courses/[0-9]+$",
                                                     "count": {"gte": 2}}}},
    )
    ingest = Ingest(store, None, clock=lambda: T0, profile_rules=rules)

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


async def test_an_event_decided_late_does_not_undo_a_newer_membership(store: Store) -> None:
    """Routing runs in the background, so an older event (a derived score_crossed, a late
    batch item) may be decided after a newer page view: membership is decided as of the
    contact's latest activity, so the page-visit segment holds."""
    contact = unique("c")
    rules = profile_rules(store, {"key": "pricing_page", "rule": {"visited": {
        "url": "https://shop.example/pricing", "within": "30d"}}})
    ingest = Ingest(store, None, clock=lambda: T0, profile_rules=rules)
    await ingest.page(PageCall(user_id=contact, name="page", timestamp=T0,
                               properties={"url": "https://shop.example/pricing"}))
    await ingest.track(TrackCall(user_id=contact, event="form_submitted",
                                 timestamp=T0 - timedelta(minutes=5)))
    async with store.session() as session:
        snapshot = await contacts_repo.snapshot(session, contact)
    assert snapshot is not None and snapshot.segments == ["pricing_page"]
    assert [e.name for e in await events_named(store, contact, "segment_exited")] == []


async def test_last_seen_older_than_and_membership_of_other_segments(store: Store) -> None:
    contact = unique("c")
    rules = profile_rules(
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
    await Ingest(store, None, profile_rules=rules).track(
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
    ingest = Ingest(store, router, clock=lambda: T0, profile_rules=profile_rules(store, BUYERS))
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


# --------------------------------------------------------------------------- the sweep's judge


async def test_membership_only_decisions_match_decide_for_a_batch(store: Store) -> None:
    """`members` with one memo for the batch and the sweep's set-based counts decides exactly
    what `decide` decides with the per-contact counts ingest uses: the catalog's segments and
    rules whose values differ only by type (True, 1, 1.0, "1") or are missing, lists, sums."""
    from cairn.store.sweeps import BatchHistory

    extras = [segment(data) for data in (
        {"key": "flag_positive", "rule": {"attribute": "flag", "gt": 0}},
        {"key": "flag_one", "rule": {"attribute": "flag", "eq": 1}},
        {"key": "no_plan", "rule": {"attribute": "plan", "exists": False}},
        {"key": "likes_tea", "rule": {"attribute": "likes", "contains": "tea"}},
        {"key": "new_here", "rule": {"attribute": "first_seen_at", "newer_than": "3d"}},
        {"key": "low_score", "rule": {"any": [{"score": "global", "lt": 0},
                                              {"not": {"in_segment": "buyers"}}]}},
        {"key": "mailable", "rule": {"reachable": "email"}},
        {"key": "big_eur", "rule": {"has_done": {"event": "purchase", "within": "30d",
                                                 "where": {"currency": "EUR"},
                                                 "sum": "total", "total": {"gte": 100}}}},
    )]
    segments = [*load_segments(CATALOG), *extras]
    now = T0 + timedelta(days=45)
    people: dict[str, tuple[dict[str, Any], list[tuple[str, int, dict[str, Any]]]]] = {
        "a": ({"flag": True, "likes": ["tea", "cake"], "email": "a@example.com",
               "consent": {"marketing": True}},
              [("purchase", 1, {"total": 60, "currency": "EUR"}),
               ("purchase", 2, {"total": 50, "currency": "EUR"})]),
        "b": ({"flag": 1, "plan": "pro", "likes": "teapots"},
              [("purchase", 40, {"total": 500}),
               ("page_viewed", 35, {"url": "https://www.example.com/pricing"})]),
        "c": ({"flag": 1.0, "sales_stage": "decision"},
              [("page_viewed", 2, {"url": "https://www.example.com/pricing"}),
               ("study_session", 1, {"minutes": 45}), ("study_session", 2, {"minutes": 20}),
               ("lesson_completed", 1, {}), ("lesson_completed", 2, {}),
               ("lesson_completed", 3, {})]),
        "d": ({"flag": "1", "email": "d@example.com"},
              [("page_viewed", d, {"url": "https://shop.example/products/tea"})
               for d in (1, 2, 3, 4)]),
        "e": ({}, [("whitepaper_downloaded", 5, {}), ("whitepaper_downloaded", 20, {})]),
    }
    ids = {name: unique(name) for name in people}
    for name, (traits, events) in people.items():
        first = now - timedelta(days=60 if name in ("b", "e") else 1)
        ingest = Ingest(store, None, clock=partial(_at, first))
        await ingest.identify(IdentifyCall(user_id=ids[name], traits=traits, timestamp=first))
        for event, days_ago, properties in events:
            await ingest.track(TrackCall(user_id=ids[name], event=event, properties=properties,
                                         timestamp=now - timedelta(days=days_ago),
                                         message_id=unique("m")))
    async with store.session() as session, session.begin():
        await segments_repo_enter(session, ids["a"], "buyers", now)

    async with store.session() as session:
        # every rule fetched for the batch up front, and each rule fetched when first asked
        planned = BatchHistory(session, list(ids.values()), now, has_done_specs(segments))
        lazy = BatchHistory(session, list(ids.values()), now)
        memo: dict[Any, bool] = {}
        decided_somewhere = set()
        for name, contact_id in ids.items():
            contact = await contacts_repo.snapshot(session, contact_id)
            assert contact is not None
            reference_scope = ConditionScope(
                now=now,
                count_events=partial(_count, session, contact_id, now),
                sum_events=partial(_sum, session, contact_id, now),
                reachable=partial(_reachable, contact),
            )
            reference = {m.segment: m.member
                         for m in await decide(segments, contact, reference_scope)}
            fast = await members(segments, contact, planned.scope(contact, now), memo)
            assert fast == reference, name
            assert await members(segments, contact, lazy.scope(contact, now)) == reference
            decided_somewhere |= {key for key, member in fast.items() if member}
    # the people above put every kind of rule to work, both ways
    assert {"flag_positive", "flag_one", "no_plan", "likes_tea", "new_here", "low_score",
            "mailable", "big_eur", "inactive_30d", "frequent_buyers", "active_learners",
            "trial_engaged", "pricing_visitors", "repeat_browsers", "whitepaper_readers",
            "customers", "cold_leads"} <= decided_somewhere
    assert len(memo) > 0


def _at(moment: datetime) -> datetime:
    return moment


# The reference: one query per question, for one contact (the event store's own counts and sums).
async def _count(s: Any, contact_id: str, now: datetime, spec: HasDone) -> int:
    return await events_repo.count_events(s, contact_id, spec.event,
                                          since=window_start(spec, now, None), until=now,
                                          where=spec.where)


async def _sum(s: Any, contact_id: str, now: datetime, spec: HasDone) -> float:
    assert spec.sum is not None
    return await events_repo.sum_event_property(s, contact_id, spec.event, spec.sum,
                                                since=window_start(spec, now, None), until=now,
                                                where=spec.where)


def _reachable(contact: ContactSnapshot, spec: ReachableSpec) -> Verdict:
    return reachability(contact, spec.channel, spec.category)


async def test_events_routed_together_decide_as_events_routed_one_by_one(store: Store) -> None:
    """A batch reads its contacts and their history ahead for all of them (`prepare`); what it
    decides is what routing the same events one at a time decides."""
    rules = ProfileRules.from_folder(store, CATALOG)
    twins = {mode: [unique(f"c-{mode}") for _ in range(3)] for mode in ("together", "alone")}
    for contacts in twins.values():
        for contact in contacts:
            ingest = Ingest(store, None, profile_rules=rules, clock=partial(_at, T0))
            await ingest.identify(IdentifyCall(user_id=contact, traits={"email": "x@example.com"},
                                               timestamp=T0))
            for day in (1, 2):
                await ingest.track(TrackCall(user_id=contact, event="purchase",
                                             properties={"total": 40},
                                             timestamp=T0 + timedelta(days=day)))
    later = T0 + timedelta(days=40)
    ingest = Ingest(store, None, profile_rules=rules, clock=partial(_at, later))
    # An event no rule reads: only the segments time changes are decided for it.
    read_ahead: list[int] = []
    prepare = rules.prepare

    async def counted(events: list[EventMessage]) -> dict[str, Any]:
        found = await prepare(events)
        read_ahead.append(len(found))
        return found

    rules.prepare = counted  # type: ignore[method-assign]
    await ingest.batch([TrackCall(user_id=contact, event="app_opened", timestamp=later)
                        for contact in twins["together"]])
    for contact in twins["alone"]:
        await ingest.track(TrackCall(user_id=contact, event="app_opened", timestamp=later))
    assert read_ahead == [3], "the batch's contacts were not read ahead together"

    decided: dict[str, list[tuple[list[str], list[str]]]] = {}
    for mode, contacts in twins.items():
        for contact in contacts:
            async with store.session() as session:
                snapshot = await contacts_repo.snapshot(session, contact)
            assert snapshot is not None
            exited = [e.properties["segment"] for e in
                      await events_named(store, contact, "segment_exited")]
            decided.setdefault(mode, []).append((snapshot.segments, sorted(exited)))
    assert decided["together"] == decided["alone"]
    assert decided["together"] == [(["buyers", "customers"], ["frequent_buyers"])] * 3
