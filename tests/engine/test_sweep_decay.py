"""The segment sweep's batch activity called directly at chosen moments (a journey time), on
every configured database: inactivity decays (`{without: login, after: 7d, add: -10}`) applied
once per inactivity period with history and threshold crossings, and the set-based batch
evaluation deciding segments exactly as ingest decides them for one contact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import delete, select

from activities.sweeps import SweepActivities
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import ProfileRules
from cairn.journey_run import EventMessage
from cairn.scoring import decay_key
from cairn.store import contacts as contacts_repo
from cairn.store import events as events_repo
from cairn.store import scores as scores_repo
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.store.schema import Event, SegmentMembership
from cairn.sweeps import SweepBatch, SweepBatchResult, SweepConfig

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write(folder: Path, name: str, data: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(data))


ENGAGEMENT = {
    "key": "engagement",
    "rules": [{"event": "form_submitted", "add": 10, "reason": "submitted a form"}],
    "decay": [{"without": "login", "after": "7d", "add": -10, "reason": "no login for 7 days"}],
    "thresholds": {"global": [0]},
}


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "journeys"
    write(folder / "scoring", "engagement.yaml", ENGAGEMENT)
    write(folder / "segments", "hot.yaml", {"key": "hot", "rule": {"score": "global", "gte": 10}})
    return folder


async def sweep(store: Store, catalog: Path, now: datetime, sweep_id: str | None = None,
                batch_size: int = 500) -> SweepBatchResult:
    """Every batch of one sweep at `now`, as the workflow runs them; the totals of all."""
    config = SweepConfig(journeys_dir=str(catalog), batch_size=batch_size)
    batch = SweepBatch(config=config, now=now, sweep_id=sweep_id or unique("sweep"))
    total = SweepBatchResult(contacts=0)
    while True:
        result = await SweepActivities(store).sweep_segments(batch)
        total.contacts += result.contacts
        total.emitted += result.emitted
        if result.finished(batch_size):
            return total
        batch.after = result.last


async def track(store: Store, catalog: Path, contact: str, event: str, at: datetime) -> None:
    rules = ProfileRules.from_folder(store, catalog)
    ingest = Ingest(store, None, clock=lambda: at, profile_rules=rules)
    await ingest.track(TrackCall(user_id=contact, event=event, timestamp=at,
                                 message_id=unique("m")))


async def history(store: Store, contact: str) -> list[Any]:
    async with store.session() as session:
        return await scores_repo.score_history(session, contact_id=contact)


async def events_named(store: Store, contact: str, name: str) -> list[Event]:
    async with store.session() as session:
        rows = await session.scalars(select(Event).where(Event.contact_id == contact,
                                                         Event.name == name).order_by(Event.id))
        return list(rows)


async def segments_of(store: Store, contact: str) -> list[str]:
    async with store.session() as session:
        return await segments_repo.active_segments(session, contact)


# --------------------------------------------------------------------------- inactivity decay


async def test_no_login_for_7_days_takes_10_points_once_per_period(
    store: Store, catalog: Path
) -> None:
    ana = unique("ana")
    await track(store, catalog, ana, "login", T0)
    await track(store, catalog, ana, "form_submitted", T0 + timedelta(hours=1))  # 10: hot

    six_days = await sweep(store, catalog, T0 + timedelta(days=6, hours=23))
    assert six_days.emitted == 0
    assert [h.delta for h in await history(store, ana)] == [10]

    sweep_id = unique("sweep")
    seventh = await sweep(store, catalog, T0 + timedelta(days=7), sweep_id)
    [_, decay] = await history(store, ana)
    assert (decay.delta, decay.total, decay.reason) == (-10, 0, "no login for 7 days")
    assert decay.source == f"sweep:{sweep_id}"
    assert decay.idempotency_key == decay_key("engagement.decay0", ana, T0)
    assert decay.at == T0 + timedelta(days=7)
    # 10 -> 0 reaches no lower threshold (0 is reached, not fallen below), but the score no
    # longer holds `hot` (score >= 10): the decayed contact's segments are decided again.
    assert await segments_of(store, ana) == []
    async with store.session() as session:
        [membership] = await session.scalars(
            select(SegmentMembership).where(SegmentMembership.contact_id == ana))
    assert (membership.entered_at, membership.exited_at) == (T0 + timedelta(hours=1),
                                                             T0 + timedelta(days=7))
    [left] = await events_named(store, ana, "segment_exited")
    assert left.message_id == f"sweep/{sweep_id}/{ana}/segment_exited/hot"
    assert seventh.emitted == 1

    # The same batch redone (a retry) and the hourly sweeps after it: the period is decayed.
    assert (await sweep(store, catalog, T0 + timedelta(days=7), sweep_id)).emitted == 0
    for days in (8, 13, 30):
        assert (await sweep(store, catalog, T0 + timedelta(days=days))).emitted == 0
    assert [h.delta for h in await history(store, ana)] == [10, -10]

    # A login starts a new period: 7 quiet days later it decays again, once.
    await track(store, catalog, ana, "login", T0 + timedelta(days=31))
    await sweep(store, catalog, T0 + timedelta(days=37, hours=23))
    assert [h.delta for h in await history(store, ana)] == [10, -10]
    await sweep(store, catalog, T0 + timedelta(days=38))
    await sweep(store, catalog, T0 + timedelta(days=45))
    changes = await history(store, ana)
    assert [(h.delta, h.total) for h in changes] == [(10, 10), (-10, 0), (-10, -10)]
    assert changes[-1].idempotency_key == decay_key("engagement.decay0", ana,
                                                    T0 + timedelta(days=31))
    # From 0 to -10 falls below the threshold 0: one score_crossed, down.
    [crossed] = await events_named(store, ana, "score_crossed")
    assert crossed.properties == {"dimension": "global", "threshold": 0, "direction": "down",
                                  "total": -10}
    assert crossed.type == "audience"
    assert crossed.timestamp == T0 + timedelta(days=38)


async def test_a_contact_who_never_logged_in_decays_7_days_after_first_seen(
    store: Store, catalog: Path
) -> None:
    bo, cy, dee = unique("bo"), unique("cy"), unique("dee")
    for contact in (bo, cy, dee):
        await track(store, catalog, contact, "page_opened", T0)
    await track(store, catalog, cy, "login", T0 + timedelta(days=5))
    # Active after the moment the sweep judges (it began at T0 + 8d): judged as of that
    # activity, so this login counts and dee is not "8 days without login".
    await track(store, catalog, dee, "login", T0 + timedelta(days=8, minutes=5))

    await sweep(store, catalog, T0 + timedelta(days=8), batch_size=1)
    [decay] = await history(store, bo)  # seen, never logged in
    assert (decay.delta, decay.idempotency_key) == (-10, decay_key("engagement.decay0", bo, T0))
    assert decay.at == T0 + timedelta(days=8)
    assert await history(store, cy) == []  # logged in 3 days before
    assert await history(store, dee) == []


async def test_the_decay_rule_moves_a_score_that_reached_a_threshold_down_once(
    store: Store, tmp_path: Path
) -> None:
    catalog = tmp_path / "journeys"
    write(catalog / "scoring", "engagement.yaml", {
        "key": "engagement",
        "decay": [{"without": "login", "after": "7d", "add": -10},
                  {"without": "purchase", "after": "30d", "add": -5, "dimension": "tag:b2b"}],
        "thresholds": {"global": [50]},
    })
    dee = unique("dee")
    async with store.session() as session, session.begin():
        await contacts_repo.ensure_contact(session, dee, T0)
        await scores_repo.change_score(session, contact_id=dee, dimension="global", delta=55,
                                       reason="seed", source=None, workflow_id=None,
                                       idempotency_key=None, now=T0)
    sweep_id = unique("sweep")
    result = await sweep(store, catalog, T0 + timedelta(days=31), sweep_id)
    changes = await history(store, dee)
    assert [(h.dimension, h.delta, h.total, h.reason) for h in changes] == [
        ("global", 55, 55, "seed"),
        ("global", -10, 45, "no login for 7d -10"),
        ("tag:b2b", -5, -5, "no purchase for 30d -5"),
    ]
    [crossed] = await events_named(store, dee, "score_crossed")
    assert crossed.message_id == f"sweep/{sweep_id}/{dee}/score_crossed/engagement.decay0/50"
    assert crossed.properties == {"dimension": "global", "threshold": 50, "direction": "down",
                                  "total": 45}
    assert result.emitted == 1
    assert (await sweep(store, catalog, T0 + timedelta(days=32))).emitted == 0
    assert len(await history(store, dee)) == 3


# --------------------------------------------------------------------------- batch semantics


async def test_the_batch_decides_has_done_rules_as_ingest_decides_one_contact(
    store: Store, tmp_path: Path
) -> None:
    """Counts, `where` filters, sums and windows, decided for a whole batch, give the same
    memberships as `ProfileRules` deciding each contact alone (the reference)."""
    definitions = [
        {"key": "recent_eur_spenders", "rule": {"has_done": {
            "event": "purchase", "within": "30d", "where": {"currency": "EUR"},
            "sum": "total", "total": {"gt": 100}}}},
        {"key": "regulars", "rule": {"has_done": {"event": "login", "within": "7d",
                                                  "count": {"gte": 3}}}},
        {"key": "recent_course_visitors", "rule": {"visited": {
            "url_matches": "/courses/[0-9]+$", "within": "14d"}}},
        {"key": "lapsed_regulars", "rule": {"all": [
            {"not": {"in_segment": "regulars"}},
            {"has_done": {"event": "login", "count": {"gte": 3}}}]}},
    ]
    catalog = tmp_path / "journeys"
    for data in definitions:
        write(catalog / "segments", f"{data['key']}.yaml", data)

    now = T0 + timedelta(days=40)
    plan: dict[str, list[tuple[str, timedelta, dict[str, Any]]]] = {
        "a": [("purchase", timedelta(days=35), {"total": 90, "currency": "EUR"}),
              ("purchase", timedelta(days=3), {"total": 20, "currency": "EUR"})],
        "b": [("purchase", timedelta(days=3), {"total": 80, "currency": "EUR"}),
              ("purchase", timedelta(days=2), {"total": 30, "currency": "EUR"}),
              ("purchase", timedelta(days=1), {"total": 500, "currency": "USD"})],
        "c": [("purchase", timedelta(days=1), {"total": "lots", "currency": "EUR"}),
              ("purchase", timedelta(days=1), {"total": True, "currency": "EUR"})],
        "d": [("login", timedelta(days=d), {}) for d in (1, 2, 6)],
        "e": [("login", timedelta(days=d), {}) for d in (1, 2, 8, 9)],
        "f": [("page_viewed", timedelta(days=3), {"url": "https://x.example/courses/12"})],
        "g": [("page_viewed", timedelta(days=20), {"url": "https://x.example/courses/12"}),
              ("page_viewed", timedelta(days=1), {"url": "https://x.example/courses/12/a"})],
        # Seen after the moment judged: judged as of that activity, as ingest judges (so the
        # three logins count).
        "h": [("login", timedelta(days=-1), {}) for _ in range(3)],
        # An event stored without touching the contact (Cairn's own, a late import) after the
        # moment judged: not counted.
        "i": [("login", timedelta(days=10), {})],
    }
    contacts = {name: unique(name) for name in plan}
    for name, events in plan.items():
        for event, ago, properties in events:
            ingest = Ingest(store, None, clock=lambda: now)
            await ingest.track(TrackCall(user_id=contacts[name], event=event,
                                         properties=properties, timestamp=now - ago,
                                         message_id=unique("m")))
    async with store.session() as session, session.begin():
        await events_repo.record_event(
            session, message_id=unique("late"), type="track", contact_id=contacts["i"],
            name="login", properties={}, timestamp=now + timedelta(days=1), received_at=now)
        for _ in range(2):
            await events_repo.record_event(
                session, message_id=unique("late"), type="track", contact_id=contacts["i"],
                name="login", properties={}, timestamp=now + timedelta(hours=1),
                received_at=now)

    await sweep(store, catalog, now, batch_size=3)
    swept = {name: await segments_of(store, contact) for name, contact in contacts.items()}
    async with store.session() as session:
        entered_at = dict((await session.execute(select(
            SegmentMembership.contact_id, SegmentMembership.entered_at))).all())
    # memberships start when the contact is judged: h at their latest activity
    assert entered_at == {contacts[n]: now for n in ("b", "d", "e", "f")} | {
        contacts["h"]: now + timedelta(days=1)}
    assert swept == {
        "a": [], "b": ["recent_eur_spenders"], "c": [], "d": ["regulars"],
        "e": ["lapsed_regulars"], "f": ["recent_course_visitors"], "g": [], "h": ["regulars"],
        "i": [],
    }
    # The reference: each contact decided alone by the ingest path, memberships forgotten.
    reference = ProfileRules.from_folder(store, catalog)
    async with store.session() as session, session.begin():
        await session.execute(delete(SegmentMembership))
    for name, contact in contacts.items():
        await reference.apply(EventMessage(message_id=unique("tick"), event="tick",
                                           contact_id=contact, timestamp=now))
        assert await segments_of(store, contact) == swept[name], name


# --------------------------------------------------------------------------- bulk score changes


async def test_change_scores_in_bulk_keys_each_change_and_survives_a_lost_race(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several changes to one score in one upsert get the totals they would get one by one; a
    key recorded by a concurrent writer rolls the bulk back and the one-by-one path skips it."""
    eve = unique("eve")
    async with store.session() as session, session.begin():
        await contacts_repo.ensure_contact(session, eve, T0)
        await scores_repo.change_score(session, contact_id=eve, dimension="global", delta=7,
                                       reason="seed", source=None, workflow_id=None,
                                       idempotency_key="seed", now=T0)

    def change(key: str, delta: int, dimension: str = "global") -> scores_repo.ScoreChange:
        return scores_repo.ScoreChange(contact_id=eve, dimension=dimension, delta=delta,
                                       reason=key, source="test", idempotency_key=key, at=T0)

    async with store.session() as session, session.begin():
        totals = await scores_repo.change_scores(session, [
            change("a", -10), change("b", -5), change("seed", 100), change("c", 3, "tag:x")])
    assert totals == {"a": -3, "b": -8, "c": 3}

    # "d" is recorded by someone else after this writer looked (the look is made to miss it)
    async with store.session() as session, session.begin():
        await scores_repo.change_score(session, contact_id=eve, dimension="global", delta=-1,
                                       reason="d", source=None, workflow_id=None,
                                       idempotency_key="d", now=T0)

    async def looked_too_early(s: Any, keys: Any) -> set[str]:
        return {"a", "b", "c", "seed"} & set(keys)

    monkeypatch.setattr(scores_repo, "recorded_keys", looked_too_early)
    async with store.session() as session, session.begin():
        totals = await scores_repo.change_scores(session, [change("d", -1), change("e", -2)])
    assert totals == {"e": -11}
    async with store.session() as session:
        assert await scores_repo.scores_of(session, eve) == {"global": -11, "tag:x": 3}
        changes = await scores_repo.score_history(session, contact_id=eve)
    assert [(h.idempotency_key, h.delta, h.total) for h in changes] == [
        ("seed", 7, 7), ("a", -10, -3), ("b", -5, -8), ("c", 3, 3), ("d", -1, -9),
        ("e", -2, -11)]
