"""Reachability: address, suppression and consent per channel and category, and the reasons."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.contact import ContactSnapshot
from cairn.reachability import blocker, normalised_phone, reachability, valid_email

FULL: dict[str, Any] = {
    "id": "c-1",
    "email": "ana@example.com",
    "phone": "+40722000000",
    "push_tokens": ["tok-1"],
    "web_push": [{"endpoint": "https://push.example/abc", "keys": {"auth": "x"}}],
    "consent": {"marketing": True},
}


def contact(**changes: Any) -> ContactSnapshot:
    return ContactSnapshot.model_validate({**FULL, **changes})


CASES: list[tuple[str, dict[str, Any], str, str, bool, str]] = [
    # (case, contact changes, channel, category, reachable, reason contains)
    ("email with consent", {}, "email", "marketing", True, "email: reachable for marketing"),
    ("no email", {"email": None}, "email", "marketing", False, "email: no email address"),
    ("bad email", {"email": "ana@"}, "email", "transactional", False, "email address is not valid"),
    ("email without dot", {"email": "ana@localhost"}, "email", "marketing", False, "not valid"),
    ("sms E.164", {}, "sms", "marketing", True, "sms: reachable"),
    ("sms spaced", {"phone": "+40 722-000-000"}, "sms", "marketing", True, "sms: reachable"),
    ("sms national", {"phone": "0722000000"}, "sms", "marketing", False,
     "sms: phone number is not"),
    ("sms too short", {"phone": "+4072"}, "sms", "transactional", False, "E.164"),
    ("sms too long", {"phone": "+4072200000000000"}, "sms", "marketing", False, "E.164"),
    ("no phone", {"phone": None}, "whatsapp", "marketing", False, "whatsapp: no phone number"),
    ("push token", {}, "push", "marketing", True, "push: reachable"),
    ("no push token", {"push_tokens": []}, "push", "transactional", False, "push: no push token"),
    ("web push", {}, "web_push", "marketing", True, "web_push: reachable"),
    ("no web push", {"web_push": []}, "web_push", "marketing", False,
     "web_push: no web push subscription"),
    ("in-app always", {"email": None, "phone": None}, "in_app", "marketing", True, "in_app"),
    ("on-site always", {"push_tokens": []}, "on_site", "transactional", True, "on_site"),
    ("suppressed", {"suppressed": ["email"]}, "email", "transactional", False,
     "email: suppressed"),
    ("suppressed elsewhere", {"suppressed": ["sms"]}, "email", "marketing", True, "reachable"),
    ("no consent at all", {"consent": {}}, "email", "marketing", False,
     "email: no marketing consent"),
    ("marketing false", {"consent": {"marketing": False}}, "push", "marketing", False,
     "push: no marketing consent"),
    ("channel bool overrides no", {"consent": {"marketing": True, "sms": False}}, "sms",
     "marketing", False, "sms: no marketing consent"),
    ("channel bool overrides yes", {"consent": {"email": True}}, "email", "marketing", True,
     "reachable"),
    ("channel mapping overrides", {"consent": {"marketing": True, "sms": {"marketing": False}}},
     "sms", "marketing", False, "sms: no marketing consent"),
    ("channel mapping grants", {"consent": {"push": {"marketing": True}}}, "push", "marketing",
     True, "reachable"),
    ("mapping without marketing falls back", {"consent": {"marketing": True, "sms": {}}}, "sms",
     "marketing", True, "reachable"),
    ("non-bool consent is no consent", {"consent": {"marketing": "yes"}}, "email", "marketing",
     False, "no marketing consent"),
    ("transactional implied", {"consent": {}}, "email", "transactional", True,
     "reachable for transactional"),
    ("transactional despite marketing no", {"consent": {"marketing": False, "sms": False}}, "sms",
     "transactional", True, "reachable"),
    ("transactional refused", {"consent": {"sms": {"transactional": False}}}, "sms",
     "transactional", False, "sms: transactional messages refused"),
    ("unknown channel", {}, "fax", "marketing", False, "fax: unknown channel"),
    ("unknown category", {}, "email", "promotional", False, "unknown category"),
]


@pytest.mark.parametrize(
    ("changes", "channel", "category", "reachable", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_reachability(changes: dict[str, Any], channel: str, category: str, reachable: bool,
                      reason: str) -> None:
    verdict = reachability(contact(**changes), channel, category)
    assert verdict.result is reachable
    assert reason in verdict.reason


def test_address_comes_before_suppression_and_consent() -> None:
    found = blocker(contact(email=None, suppressed=["email"], consent={}), "email", "marketing")
    assert found is not None and found.cause == "address"
    found = blocker(contact(suppressed=["email"], consent={}), "email", "marketing")
    assert found is not None and found.cause == "suppressed"
    found = blocker(contact(consent={}), "email", "marketing")
    assert found is not None and found.cause == "consent"


def test_reasons_never_show_the_address() -> None:
    verdict = reachability(contact(email="ana@@example.com"), "email", "marketing")
    assert not verdict.result and "ana" not in verdict.reason


def test_address_helpers() -> None:
    assert valid_email("first.last+tag@mail.example.co.uk")
    assert not valid_email("no at sign") and not valid_email(None)
    assert not valid_email("a@" + "b" * 250 + ".com")
    assert normalised_phone("+1 (415) 555-0100") == "+14155550100"
    assert normalised_phone("+0722000000") is None
    assert normalised_phone(None) is None
