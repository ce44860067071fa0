"""How given values merge into a contact's traits (`cairn.traits`), without a store."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.traits import (
    ContactTraitError,
    merge_consent,
    merge_subscriptions,
    profile_path,
    profile_traits,
    set_path,
    text_trait,
    timezone_trait,
    token_list,
    unset_path,
)


def test_single_values_are_checked_and_named_in_the_error() -> None:
    assert timezone_trait("Europe/Bucharest") == "Europe/Bucharest"
    assert timezone_trait("") is None
    with pytest.raises(ContactTraitError, match=r"timezone: 'Mars/Olympus' .* IANA"):
        timezone_trait("Mars/Olympus")
    assert text_trait("phone", 40712345678, 32) == "40712345678"
    assert text_trait("email", "  ", 320) is None
    with pytest.raises(ContactTraitError, match=r"phone: 40 characters .* 32 allowed"):
        text_trait("phone", "1" * 40, 32)
    assert token_list(["a", "", "b", "a"]) == ["a", "b"]
    with pytest.raises(ContactTraitError, match="list of texts"):
        token_list({"a": 1})


def test_consent_merges_per_key_and_subscriptions_per_endpoint() -> None:
    current: dict[str, Any] = {"marketing": True, "sms": {"marketing": True, "alerts": True}}
    merged = merge_consent(current, {"sms": {"marketing": False}})
    assert merged == {"marketing": True, "sms": {"marketing": False, "alerts": True}}
    assert current["sms"]["marketing"] is True  # the given mapping is left as it was
    assert merge_consent(current, None) == {}
    subs = merge_subscriptions([{"endpoint": "e1", "keys": {"p": "old"}}],
                               [{"endpoint": "e1", "keys": {"p": "new"}}, {"endpoint": "e2"}])
    assert subs == [{"endpoint": "e1", "keys": {"p": "new"}}, {"endpoint": "e2", "keys": {}}]
    with pytest.raises(ContactTraitError, match="needs an endpoint"):
        merge_subscriptions([], [{"keys": {}}])


def test_dotted_paths_address_a_column_or_inside_attributes() -> None:
    assert profile_path("cart.items") == ["attributes", "cart", "items"]
    assert profile_path("consent.sms.marketing") == ["consent", "sms", "marketing"]
    assert profile_traits(["cart.items", "attributes.cart.total", "consent.sms", "suppressed",
                           "email"]) == ["cart", "consent", "email"]
    profile = {"attributes": {"cart": "none"}, "email": "a@example.com"}
    set_path(profile, profile_path("cart.items"), 2)
    unset_path(profile, profile_path("email"))
    assert profile == {"attributes": {"cart": {"items": 2}}, "email": None}
    with pytest.raises(ContactTraitError, match="empty profile path"):
        profile_path("..")
