"""Clicks in simulations: a scenario clicks a link of a message by its label, the click becomes
`link_clicked` (resuming a `wait_for_event`, or reaching an exit goal), and the report lists it.

Runs on the session's time-skipping server with the real interpreter, activities, ingest and
router, as every simulation does.
"""

from __future__ import annotations

from typing import Any

import pytest

from starter.testing import ScenarioError, SimulationError, Simulator, parse_scenario, simulate

NOW = "2026-03-02T09:00:00Z"
TEMPLATE = {"email": {
    "subject": "Your cart",
    "html": '<p>Still thinking?</p><a href="https://shop.example/cart">View cart</a> '
            '<a href="https://shop.example/similar" data-label="Similar">See more</a>',
    "body": "View cart: https://shop.example/cart"}}


def journey(**changes: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "key": "cart-clicks",
        "name": "Cart reminder that waits for a click",
        "trigger": {"event": "cart_item_added"},
        "steps": {
            "wait_2h": {"wait": "2h", "next": "email_reminder"},
            "email_reminder": {"send": {"channel": "email", "template": "cart-reminder"},
                               "next": "wait_click"},
            "wait_click": {"wait_for_event": {"event": "link_clicked",
                                              "where": {"properties.link": {"eq": "View cart"}},
                                              "timeout": "1d"},
                           "then": "clicked", "timeout_next": "no_click"},
            "clicked": {"end": "clicked_cart"},
            "no_click": {"end": "no_click"},
        },
        "templates": {"cart-reminder": TEMPLATE},
    }
    definition.update(changes)
    return definition


def scenario(*events: dict[str, Any]) -> dict[str, Any]:
    return {"now": NOW,
            "contact": {"id": "c-1", "email": "ana@example.com", "consent": {"marketing": True}},
            "events": [{"at": "+0s", "event": "cart_item_added"}, *events], "until": "+2d"}


async def test_a_click_by_label_resumes_the_wait_and_is_reported(simulator: Simulator) -> None:
    report = await simulate(journey(), scenario(
        {"at": "+3h", "click": "Similar"},
        {"at": "+4h", "click": "View cart", "step": "email_reminder"},
    ), simulator=simulator)
    assert report.outcome == "ended:clicked_cart"
    assert report.steps == ["wait_2h", "email_reminder", "wait_click", "clicked"]
    dumped = report.model_dump(mode="json")
    assert dumped["clicks"] == [
        {"at": "2026-03-02T12:00:00Z", "step": "email_reminder", "channel": "email",
         "template": "cart-reminder", "link": "Similar", "url": "https://shop.example/similar"},
        {"at": "2026-03-02T13:00:00Z", "step": "email_reminder", "channel": "email",
         "template": "cart-reminder", "link": "View cart", "url": "https://shop.example/cart"},
    ]
    assert list(dumped)[:7] == ["journey", "version", "contact", "outcome", "path", "sends",
                                "clicks"]
    clicked = report.path[-1]
    assert clicked.at.isoformat().startswith("2026-03-02T13:00")

    # without the click, the wait times out
    report = await simulate(journey(), scenario({"at": "+3h", "click": "Similar"}),
                            simulator=simulator)
    assert report.outcome == "ended:no_click"
    assert [c.link for c in report.clicks] == ["Similar"]


async def test_a_click_reaches_an_exit_goal(simulator: Simulator) -> None:
    definition = journey(exit=[{"event": "link_clicked", "goal": "clicked_through"}])
    definition["steps"]["email_reminder"]["next"] = "wait_1d"
    definition["steps"]["wait_1d"] = {"wait": "1d", "next": "end"}
    for name in ("wait_click", "clicked", "no_click"):
        del definition["steps"][name]
    report = await simulate(definition, scenario(
        {"at": "+5h", "click": "https://shop.example/cart"}), simulator=simulator)
    assert report.outcome == "clicked_through"
    assert [(c.link, c.url) for c in report.clicks] == [
        ("View cart", "https://shop.example/cart")]


async def test_a_click_on_a_link_no_message_had_says_which_links_there_were(
    simulator: Simulator,
) -> None:
    with pytest.raises(SimulationError, match=r"'Checkout'.*the links sent: 'View cart' "
                                              r"\(email_reminder\), 'Similar' \(email_reminder\)"):
        await simulate(journey(), scenario({"at": "+3h", "click": "Checkout"}),
                       simulator=simulator)
    # before the message was sent there is nothing to click
    with pytest.raises(SimulationError, match="no tracked links were sent"):
        await simulate(journey(), scenario({"at": "+1h", "click": "View cart"}),
                       simulator=simulator)


def test_click_events_are_validated() -> None:
    parsed = parse_scenario(scenario({"at": "+3h", "click": "View cart", "step": "email"}))
    click = parsed.events[1]
    assert (click.type, click.click, click.step, click.label) == (
        "click", "View cart", "email", "link_clicked")
    for bad, words in (
        ({"click": "View cart", "event": "x"}, "give only `click`"),
        ({"type": "click"}, "a click needs `click`"),
        ({"event": "x", "step": "email"}, "belong to a click"),
    ):
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(scenario({"at": "+3h", **bad}))
        assert any(words in p for p in caught.value.problems), caught.value.problems
