"""Templates render with contact, event and journey in scope; errors name template, part, line.

`update.set` values are Liquid too (`cairn.update_values`), with date filters such as
`add_months` for "due date + 1 month".
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cairn.contact import ContactSnapshot
from cairn.templates import (
    TemplateRenderError,
    message_scope,
    parse_part,
    render,
    render_text,
    template_problems,
)
from cairn.update_values import render_values, set_problems

CART = {
    "email": {
        "subject": "{{ contact.first_name | default: 'there' }}, your cart misses you",
        "body": (
            "Hi {{ contact.first_name | default: 'there' }},\n"
            "{% for item in event.properties.items %}- {{ item.name }} x{{ item.qty }}\n"
            "{% endfor %}Total: {{ event.properties.total }} EUR\n"
            "{% if journey.recs %}Also: {{ journey.recs.products | map: 'name' | join: ', ' }}\n"
            "{% endif %}{{ event.properties.url | default: 'https://shop.example/cart' }}"
        ),
    },
    "sms": {"body": "{{ contact.email }}: {{ event.properties.total }} EUR in your cart"},
}


def contact() -> ContactSnapshot:
    return ContactSnapshot(
        id="c-1", email="ana@example.com", timezone="Europe/Bucharest",
        attributes={"first_name": "Ana", "cart": {"items": 2}}, scores={"global": 35},
        last_seen_at=datetime(2026, 3, 2, 9, tzinfo=UTC),
    )


EVENT = {
    "event": "cart_item_added",
    "properties": {"items": [{"name": "Shoes", "qty": 1}, {"name": "Socks", "qty": 3}],
                   "total": 85, "url": "https://shop.example/cart/abc"},
}


def test_renders_contact_event_and_journey_scope() -> None:
    scope = message_scope(contact().as_scope(), EVENT,
                          {"recs": {"products": [{"name": "Hat"}, {"name": "Scarf"}]}})

    rendered = render("cart", CART, "email", scope)

    assert rendered == {
        "subject": "Ana, your cart misses you",
        "body": "Hi Ana,\n- Shoes x1\n- Socks x3\nTotal: 85 EUR\nAlso: Hat, Scarf\n"
                "https://shop.example/cart/abc",
    }
    assert render("cart", CART, "sms", scope) == {"body": "ana@example.com: 85 EUR in your cart"}


def test_missing_variables_render_empty_and_defaults_apply() -> None:
    rendered = render("cart", CART, "email", message_scope(None, None, None))

    assert rendered["subject"] == "there, your cart misses you"
    assert rendered["body"] == "Hi there,\nTotal:  EUR\nhttps://shop.example/cart"


def test_contact_scope_reads_attributes_and_profile_fields() -> None:
    text = "{{ contact.cart.items }} {{ contact.scores.global }} {{ contact.timezone }}"
    assert render_text("t", "sms.body", text, {"contact": contact().as_scope()}) == (
        "2 35 Europe/Bucharest"
    )


def test_syntax_error_names_template_part_and_line() -> None:
    parts = {"email": {"subject": "ok", "body": "line one\nline two\n{% if x %}never closed"}}

    with pytest.raises(TemplateRenderError) as raised:
        render("cart-reminder", parts, "email", message_scope(None, None, None))

    error = raised.value
    assert (error.template, error.part, error.line) == ("cart-reminder", "email.body", 3)
    assert str(error) == ("template 'cart-reminder', part email.body, line 3: Liquid syntax "
                          "error: expected tag endif, found end of expression")


def test_error_inside_a_tag_expression_keeps_its_line() -> None:
    with pytest.raises(TemplateRenderError) as raised:
        parse_part("t", "sms.body", "a\nb\n{% if contact.x == %}c{% endif %}")
    assert raised.value.line == 3
    assert "expected a primitive expression" in str(raised.value)


def test_unknown_tag_is_a_syntax_error_with_line() -> None:
    assert template_problems("t", {"push": {"title": "x", "body": "a\n{% shout %}"}}) == [
        "push.body: template 't', part push.body, line 2: Liquid syntax error: unexpected tag "
        "'shout'"
    ]


def test_template_problems_cover_shape_parts_and_filters() -> None:
    assert template_problems("t", {
        "email": {"body": "{{ contact.name | capitalise }}"},
        "sms": "text",
    }) == [
        "email: missing part 'subject'",
        "email.body: template 't', part email.body, line 1: unknown filter 'capitalise'",
        "sms: give the channel's parts as a mapping, e.g. {subject: ..., body: ...}",
    ]
    assert template_problems("t", CART) == []
    assert template_problems("t", []) == [
        "a template is a mapping of channel -> part -> text, e.g. email: {subject: ..., body: ...}"
    ]


def test_channel_without_part_is_an_error() -> None:
    with pytest.raises(TemplateRenderError) as raised:
        render("cart", CART, "push", {})
    assert str(raised.value) == (
        "template 'cart', part push: no part for channel 'push' (the template has: email, sms)"
    )


def test_render_time_error_names_the_line() -> None:
    with pytest.raises(TemplateRenderError) as raised:
        render_text("t", "sms.body", "x\n{{ 10 | divided_by: event.properties.zero }}",
                    {"event": {"properties": {"zero": 0}}})
    assert (raised.value.part, raised.value.line) == ("sms.body", 2)


def test_each_text_is_parsed_once() -> None:
    text = "cached {{ contact.id }} " + "x" * 10
    first = parse_part("a", "sms.body", text)
    assert parse_part("b", "email.body", text) is first
    assert first.render(contact={"id": "c-9"}) == "cached c-9 " + "x" * 10


# --------------------------------------------------------------------------- update.set values


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ contact.due | add_months: 1 }}", "2026-02-28"),
    ("{{ contact.leap | add_months: 1 }}", "2028-02-29"),
    ("{{ contact.due | add_months: -2 }}", "2025-11-30"),
    ("{{ contact.due | add_months: 13 }}", "2027-02-28"),
    ("{{ contact.due | add_days: 1 }}", "2026-02-01"),
    ("{{ contact.due | add_days: -31 }}", "2025-12-31"),
    ("{{ contact.moment | add_months: 1 }}", "2026-02-28T10:30:00Z"),
    ("{{ contact.local | add_days: 2 }}", "2026-02-02T10:30:00+02:00"),
    ("{{ '2028-02-29' | add_years: 1 }}", "2029-02-28"),
    ("{{ contact.missing | add_months: 1 }}", ""),
    ("  {{ contact.due | add_months: '1' }}\n", "2026-02-28"),
    ("Due {{ contact.due | add_months: 1 | date: '%d %b' }}", "Due 28 Feb"),
])
def test_date_filters(template: str, expected: str) -> None:
    scope = {"contact": {"due": "2026-01-31", "leap": "2028-01-31",
                         "moment": "2026-01-31T10:30:00Z",
                         "local": "2026-01-31T10:30:00+02:00"}}
    assert render_values("move", {"value": template}, scope) == {"value": expected}


def test_set_values_render_nested_and_leave_plain_values_alone() -> None:
    scope = {"contact": {"plan": "pro"}, "event": {"properties": {"sku": "mug"}},
             "journey": {"offer": {"code": "CART10"}}, "now": "2026-03-02T09:00:00Z"}
    values = {"count": 3, "flag": True, "text": "no braces", "tier": "{{ contact.plan }}",
              "last": {"sku": "{{ event.properties.sku }}", "codes": ["{{ journey.offer.code }}"]},
              "trial_ends": "{{ now | add_days: 14 }}"}
    assert render_values("mark", values, scope) == {
        "count": 3, "flag": True, "text": "no braces", "tier": "pro",
        "last": {"sku": "mug", "codes": ["CART10"]}, "trial_ends": "2026-03-16T09:00:00Z",
    }


@pytest.mark.parametrize(("template", "message"), [
    ("{{ contact.plan | add_months: 1 }}", "add_months: 'pro' is not an ISO date"),
    ("{{ contact.due | add_months: 'x' }}", "the amount must be a whole number, got 'x'"),
    ("{{ contact.due | add_months: 120000 }}", "leaves the calendar"),
])
def test_date_filters_refuse_what_is_not_a_date(template: str, message: str) -> None:
    with pytest.raises(TemplateRenderError) as raised:
        render_values("move", {"due": template}, {"contact": {"due": "2026-01-31",
                                                              "plan": "pro"}})
    assert str(raised.value).startswith("template 'steps.move', part update.set.due, line 1: ")
    assert message in str(raised.value)


def test_set_templates_are_checked_like_message_templates() -> None:
    assert set_problems("move", {"a": "{{ x | add_months: 1 }}", "b": 5, "c": "plain"}) == []
    assert set_problems("move", {"a": "{{ x | shout }}", "n": {"b": "{% if %}"}}) == [
        ("a", "template 'steps.move', part update.set.a, line 1: unknown filter 'shout' "
              "(date filters: add_days, add_months, add_years)"),
        ("n.b", "template 'steps.move', part update.set.n.b, line 1: Liquid syntax error: "
                "missing expression"),
    ]
