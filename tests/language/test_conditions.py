"""The condition language decides like a marketer expects, and says why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter

from cairn.conditions import (
    Condition,
    ConditionScope,
    HasDone,
    ReachableSpec,
    Verdict,
    evaluate,
    evaluate_event_filter,
    parse_condition,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)

CONTACT = {
    "attributes": {"cart": {"items": 2}, "plan": "trial", "last_login": "2026-01-01T00:00:00Z"},
    "scores": {"global": 45, "sales": 12},
    "segments": ["buyers"],
}


def scope(event: dict | None = None, counts: int = 0) -> ConditionScope:
    async def count(spec: HasDone) -> int:
        return counts

    def reachable(spec: ReachableSpec) -> Verdict:
        return Verdict(spec.channel == "email", f"{spec.channel}: checked")

    return ConditionScope(
        now=NOW, contact=CONTACT, event=event, count_events=count, reachable=reachable
    )


def condition(data: object) -> Condition:
    return CONDITION.validate_python(parse_condition(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"attribute": "cart.items", "gt": 0}, True),
        ({"attribute": "cart.items", "gte": 3}, False),
        ({"attribute": "plan", "in": ["trial", "free"]}, True),
        ({"attribute": "plan", "starts_with": "tri"}, True),
        ({"attribute": "missing", "exists": False}, True),
        ({"attribute": "missing", "gt": 1}, False),
        ({"attribute": "missing", "ne": 1}, True),
        ({"attribute": "last_login", "older_than": "30d"}, True),
        ({"attribute": "last_login", "newer_than": "30d"}, False),
        ({"score": "global", "gte": 40}, True),
        ({"score": "sales", "gt": 50}, False),
        ({"score": "unknown", "eq": 0}, True),
        ({"in_segment": "buyers"}, True),
        ({"not": {"in_segment": "buyers"}}, False),
        ({"all": [{"in_segment": "buyers"}, {"score": "global", "gt": 50}]}, False),
        ({"any": [{"in_segment": "vip"}, {"score": "global", "gt": 40}]}, True),
        ({"reachable": "email"}, True),
        ({"reachable": {"channel": "push", "category": "transactional"}}, False),
    ],
)
async def test_contact_conditions(data: object, expected: bool) -> None:
    verdict = await evaluate(condition(data), scope())
    assert verdict.result is expected, verdict.reason


async def test_has_done_compares_the_count() -> None:
    spec = condition({"has_done": {"event": "whitepaper_downloaded", "count": {"gte": 2}}})
    assert (await evaluate(spec, scope(counts=2))).result
    verdict = await evaluate(spec, scope(counts=1))
    assert not verdict.result
    assert "whitepaper_downloaded 1x" in verdict.reason


async def test_property_reads_the_event_in_scope() -> None:
    event = {"event": "purchase", "properties": {"total": 70, "source": "organic"}}
    assert (await evaluate(condition({"property": "total", "gt": 50}), scope(event))).result
    assert (
        await evaluate(condition({"property": "properties.source", "eq": "organic"}), scope(event))
    ).result
    assert (await evaluate(condition({"property": "event", "eq": "purchase"}), scope(event))).result


async def test_a_property_condition_reads_the_caught_event_not_the_trigger() -> None:
    answer = condition({"property": "properties.answer", "event": "form_submitted", "eq": "yes"})
    trigger = {"event": "go", "properties": {"answer": "no"}}
    caught = {"form_submitted": {"event": "form_submitted", "properties": {"answer": "yes"}}}

    held = await evaluate(answer, ConditionScope(now=NOW, event=trigger, caught=caught))
    assert held.result and held.reason == "caught form_submitted properties.answer: holds"

    none = await evaluate(answer, ConditionScope(now=NOW, event=trigger))
    assert not none.result
    assert none.reason == "caught form_submitted (none caught) properties.answer: eq 'yes' " \
                          "failed (missing)"
    short = condition({"property": "answer", "event": "form_submitted", "eq": "yes"})
    assert (await evaluate(short, ConditionScope(now=NOW, caught=caught))).result
    # the trigger is still what a plain property condition reads
    plain = condition({"property": "answer", "eq": "yes"})
    assert not (await evaluate(plain, ConditionScope(now=NOW, event=trigger, caught=caught))).result


async def test_a_reason_for_a_journey_path_does_not_quote_the_contact_value() -> None:
    """Reasons enter the run's Temporal history (the path): the failing value stays out."""
    email = condition({"attribute": "email_domain", "eq": "example.org"})
    contact = {"attributes": {"email_domain": "ana-private.ro"}}
    shown = await evaluate(email, ConditionScope(now=NOW, contact=contact))
    assert shown.reason == "attribute email_domain: eq 'example.org' failed ('ana-private.ro')"
    hidden = await evaluate(email, ConditionScope(now=NOW, contact=contact, show_values=False))
    assert not hidden.result
    assert hidden.reason == "attribute email_domain: eq 'example.org' failed (value not shown)"
    missing = await evaluate(email, ConditionScope(now=NOW, show_values=False))
    assert missing.reason.endswith("failed (missing)")


def test_filter_shorthand_is_all_of_property_comparisons() -> None:
    where = condition({"properties.value": {"gte": 20}, "properties.currency": "EUR"})
    ok = {"event": "x", "properties": {"value": 25, "currency": "EUR"}}
    low = {"event": "x", "properties": {"value": 5, "currency": "EUR"}}
    other = {"event": "x", "properties": {"value": 25, "currency": "USD"}}
    assert evaluate_event_filter(where, ok, NOW).result
    assert not evaluate_event_filter(where, low, NOW).result
    assert not evaluate_event_filter(where, other, NOW).result


def test_event_filters_refuse_store_conditions() -> None:
    with pytest.raises(ValueError, match="has_done"):
        evaluate_event_filter(condition({"has_done": {"event": "x"}}), {"event": "y"}, NOW)


def test_numbers_in_strings_compare_as_numbers() -> None:
    where = condition({"properties.value": {"gt": 9}})
    assert evaluate_event_filter(where, {"properties": {"value": "10"}}, NOW).result


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"attribute": "x"}, "give at least one comparison"),
        ({"attribute": "x", "gt": 1, "bogus": 2}, "Extra inputs"),
        ({"has_done": {"event": "x", "within": "7 days"}}, "bad duration"),
        ({"has_done": {"event": "x", "within": "7d", "since": "entry"}}, "not both"),
        ({"in_segment": "a", "reachable": "email"}, "exactly one of"),
    ],
)
def test_bad_conditions_are_explained(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        condition(data)


def test_conditions_dump_back_to_what_was_written() -> None:
    written = {"any": [{"attribute": "cart.items", "gt": 0}, {"not": {"in_segment": "vip"}}]}
    parsed = condition(written)
    assert CONDITION.dump_python(parsed, mode="json") == written
