"""Lead scoring on ingest with the real SQLite store and Ingest: points per dimension with history,
threshold crossings as events, decay on entering a segment, idempotency, and file errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from cairn.catalog_folder import load_scoring, load_segments
from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.profile_rules import ProfileRules
from cairn.journey_run import EventMessage
from cairn.scoring import ScoringFileError
from cairn.segments import parse_segment
from cairn.store import events as events_repo
from cairn.store import scores as scores_repo
from cairn.store.db import Store
from cairn.store.schema import Event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = Path(__file__).resolve().parents[2] / "journeys"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write(folder: Path, name: str, data: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(data))


def scoring_rules(store: Store, tmp_path: Path, rules: dict[str, Any],
                     *segments: dict[str, Any]) -> ProfileRules:
    write(tmp_path / "scoring", "rules.yaml", rules)
    parsed = []
    for data in segments:
        found, problems = parse_segment("test.yaml", data)
        assert found is not None, problems
        parsed.append(found)
    return ProfileRules(store, parsed, load_scoring(tmp_path, segments={s.key for s in parsed}))


def track(contact: str, name: str, at: datetime = T0, **properties: Any) -> TrackCall:
    return TrackCall(user_id=contact, event=name, properties=properties, timestamp=at,
                     message_id=unique("m"))


async def events_named(store: Store, contact: str, name: str) -> list[Event]:
    async with store.session() as session:
        rows = await session.scalars(select(Event).where(Event.contact_id == contact,
                                                         Event.name == name).order_by(Event.id))
        return list(rows)


SALES = {
    "key": "sales",
    "rules": [
        {"event": "whitepaper_downloaded", "add": 20, "reason": "downloaded a whitepaper"},
        {"event": "price_list_viewed", "add": 15, "dimension": "stage:negotiation"},
        {"event": "purchase", "where": {"total": {"gte": 100}}, "add": 30,
         "dimension": "tag:b2b", "reason": "large order"},
        {"event": "push_dismissed", "add": -10},
    ],
    "thresholds": {"global": [50]},
}


async def test_rules_add_points_per_dimension_with_history(store: Store, tmp_path: Path) -> None:
    contact = unique("c")
    ingest = Ingest(store, None, profile_rules=scoring_rules(store, tmp_path, SALES))
    paper = await ingest.track(track(contact, "whitepaper_downloaded"))
    await ingest.track(track(contact, "price_list_viewed"))
    await ingest.track(track(contact, "purchase", total=40))  # below the filter: no points
    await ingest.track(track(contact, "purchase", total=120))
    await ingest.track(track(contact, "push_dismissed"))

    async with store.session() as session:
        assert await scores_repo.scores_of(session, contact) == {
            "global": 10, "stage:negotiation": 15, "tag:b2b": 30}
        history = await scores_repo.score_history(session, contact_id=contact)
    assert [(h.dimension, h.delta, h.total, h.reason) for h in history] == [
        ("global", 20, 20, "downloaded a whitepaper"),
        ("stage:negotiation", 15, 15, "price_list_viewed +15"),
        ("tag:b2b", 30, 30, "large order"),
        ("global", -10, 10, "push_dismissed -10"),
    ]
    assert history[0].source == f"event:whitepaper_downloaded:{paper.message_id}"
    assert history[0].idempotency_key == f"score/{paper.message_id}/sales.0"


async def test_crossing_50_emits_one_score_crossed_each_way(store: Store, tmp_path: Path) -> None:
    contact = unique("c")
    ingest = Ingest(store, None, profile_rules=scoring_rules(store, tmp_path, SALES))
    await ingest.track(track(contact, "whitepaper_downloaded"))
    await ingest.track(track(contact, "whitepaper_downloaded"))
    assert await events_named(store, contact, "score_crossed") == []
    third = await ingest.track(track(contact, "whitepaper_downloaded"))  # 60
    await ingest.track(track(contact, "whitepaper_downloaded"))  # 80: stays above, no event

    [up] = await events_named(store, contact, "score_crossed")
    assert up.properties == {"dimension": "global", "threshold": 50, "direction": "up",
                             "total": 60}
    assert up.message_id == f"{third.message_id}/score_crossed/sales.0/50"

    for _ in range(3):
        await ingest.track(track(contact, "push_dismissed"))  # 70, 60, 50: still at 50
    assert len(await events_named(store, contact, "score_crossed")) == 1
    await ingest.track(track(contact, "push_dismissed"))  # 40
    crossed = await events_named(store, contact, "score_crossed")
    assert [(e.properties["direction"], e.properties["total"]) for e in crossed] == [
        ("up", 60), ("down", 40)]


async def test_the_same_message_scores_once(store: Store, tmp_path: Path) -> None:
    contact = unique("c")
    rules = scoring_rules(store, tmp_path, SALES)
    ingest = Ingest(store, None, profile_rules=rules)
    first = await ingest.track(track(contact, "whitepaper_downloaded"))
    call = track(contact, "whitepaper_downloaded")
    await ingest.track(call)
    again = await ingest.track(call)  # a client retry with the same messageId
    assert again.duplicate
    # the relay (or a retried route) handing the stored event to the audience again
    async with store.session() as session:
        row = await events_repo.event_by_message_id(session, call.message_id)
    assert row is not None
    assert await rules.apply(events_repo.event_message(row)) == []
    await ingest.route_events([first.event_id, row.id])

    async with store.session() as session:
        assert await scores_repo.scores_of(session, contact) == {"global": 40}
        assert len(await scores_repo.score_history(session, contact_id=contact)) == 2


async def test_entering_inactive_30d_takes_50_points(store: Store, tmp_path: Path) -> None:
    contact = unique("c")
    rules = scoring_rules(
        store, tmp_path,
        {"key": "engagement", "rules": [{"event": "form_submitted", "add": 10}],
         "decay": [{"segment_entered": "inactive_30d", "add": -50}]},
        {"key": "inactive_30d", "rule": {"attribute": "last_seen_at", "older_than": "30d"}},
    )
    ingest = Ingest(store, None, profile_rules=rules)
    await ingest.track(track(contact, "form_submitted", T0))
    # an event stored by the system 31 days later (it does not make the contact seen)
    stored = await rules.apply(EventMessage(message_id=unique("sweep"), event="tick",
                                            contact_id=contact, properties={},
                                            timestamp=T0 + timedelta(days=31)))
    await ingest.route_events(stored)  # the segment_entered event scores the decay

    async with store.session() as session:
        assert await scores_repo.scores_of(session, contact) == {"global": -40}
        history = await scores_repo.score_history(session, contact_id=contact)
    assert history[-1].reason == "entered inactive_30d -50"
    assert history[-1].source is not None
    assert history[-1].source.startswith("event:segment_entered:")


def test_the_catalog_scoring_loads() -> None:
    segments = {s.key for s in load_segments(CATALOG)}
    scoring = load_scoring(CATALOG, segments=segments)
    [engagement] = scoring.files
    assert [r.add for r in engagement.rules] == [10, 10, 10, -10]
    assert [d.add for d in engagement.decay] == [-50, -10]
    assert engagement.decay[1].time_based
    assert scoring.thresholds("global") == [50]


def test_bad_scoring_files_name_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "scoring"
    write(folder, "a.yaml", {"key": "a", "rules": [{"event": "x", "add": 5,
                                                    "dimension": "region:eu"}]})
    write(folder, "b.yaml", {"key": "b", "rules": [{"event": "x", "points": 5}]})
    write(folder, "c.yaml", {"key": "c", "decay": [{"without": "login", "add": -10}]})
    write(folder, "d.yaml", {"key": "d", "decay": [{"segment_entered": "ghosts", "add": -5}]})
    write(folder, "e.yaml", {"key": "e", "rules": [{"event": "x", "add": 1,
                                                    "where": {"total": {"gtt": 1}}}]})
    with pytest.raises(ScoringFileError) as raised:
        load_scoring(tmp_path, segments={"inactive_30d"})
    found = [str(p) for p in raised.value.problems]
    assert any(p.startswith(f"{folder / 'a.yaml'}: rules[0].dimension: unknown dimension "
                            "'region:eu'") for p in found)
    assert f"{folder / 'b.yaml'}: rules[0]: unknown field 'points'" in found
    assert f"{folder / 'b.yaml'}: rules[0]: missing required field 'add'" in found
    assert any(p.startswith(f"{folder / 'c.yaml'}: decay[0]: `without` needs `after`")
               for p in found)
    assert f"{folder / 'd.yaml'}: decay[0].segment_entered: no segment 'ghosts' (known: " \
           "inactive_30d)" in found
    assert any(p.startswith(f"{folder / 'e.yaml'}: rules[0].where.total") for p in found)


def test_bad_inactivity_decays_name_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "scoring"
    write(folder, "decay.yaml", {"key": "decay", "decay": [
        {"without": "login", "after": "soon", "add": -10},
        {"without": "login", "after": "-7d", "add": -10},
        {"segment_entered": "inactive_30d", "after": "7d", "add": -50},
        {"without": "login", "after": "7d", "add": 0},
        {"without": "score_crossed", "after": "7d", "add": -1},
        {"without": "login", "segment_entered": "inactive_30d", "after": "7d", "add": -1},
        {"without": "login", "for": "7d", "add": -10},
        {"without": "login", "after": "7d", "add": -10, "dimension": "region:eu"},
    ]})
    with pytest.raises(ScoringFileError) as raised:
        load_scoring(tmp_path, segments={"inactive_30d"})
    file = folder / "decay.yaml"
    found = [str(p) for p in raised.value.problems]
    assert found[:7] == [
        f"{file}: decay[0].after: bad duration 'soon': use a number and a unit (ms, s, m, h, "
        "d, w), e.g. '90s', '2h', '1h30m', '-10d'",
        f"{file}: decay[1].after: duration '-7d' must be positive",
        f"{file}: decay[2]: `after` goes with `without`, not with `segment_entered`",
        f"{file}: decay[3].add: a decay that adds 0 points does nothing; give a negative (or "
        "positive) number",
        f"{file}: decay[4]: `without: score_crossed`: Cairn emits score_crossed itself; name an "
        "event contacts do (e.g. login)",
        f"{file}: decay[5]: a decay rule needs exactly one of: segment_entered (a segment key) "
        "or without (an event name, with after: a duration)",
        f"{file}: decay[6]: unknown field 'for': how long without the event is `after` "
        "(after: 7d)",
    ]
    assert found[7].startswith(f"{file}: decay[7].dimension: unknown dimension 'region:eu'")


def test_inactivity_decays_keep_their_rule_ids_and_reasons() -> None:
    segments = {s.key for s in load_segments(CATALOG)}
    scoring = load_scoring(CATALOG, segments=segments)
    [decay] = scoring.inactivity_decays()
    assert (decay.id, decay.event, decay.after) == ("engagement.decay1", "login",
                                                    timedelta(days=7))
    assert decay.says() == "no login for 7 days"
    assert not decay.due(T0, T0 + timedelta(days=6, hours=23, minutes=59))
    assert decay.due(T0, T0 + timedelta(days=7))
    assert decay.key("c-1", T0) == "decay/engagement.decay1/c-1/2026-03-02T09:00:00+00:00"
    # the segment-entry decay stays an event rule, with the id the sweep does not use
    assert [r.id for r in scoring.rules()][-1] == "engagement.decay0"
