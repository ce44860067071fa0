"""Postmark: sending against a local stand-in of `POST /email`, and webhook parsing.

Webhook samples follow the shapes in Postmark's webhook documentation (Delivery, Bounce,
SpamComplaint, Open, Click, SubscriptionChange), with our own values.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cairn.channels.base import FeedbackRejected, OutgoingMessage, Provider, ProviderError
from cairn.channels.postmark import (
    PostmarkProvider,
    PostmarkSettings,
    parse_postmark_webhook,
)
from tests.standins.postmark import TOKEN, postmark_app
from tests.standins.server import Script, StandInServer, refused_url

INACTIVE = "gone@example.com"


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[StandInServer, Script]]:
    script = Script()
    with StandInServer(postmark_app(script, inactive=[INACTIVE])) as server:
        yield server, script


@pytest.fixture
def script(stand_in: tuple[StandInServer, Script]) -> Script:
    script = stand_in[1]
    script.plans.clear()
    script.accepted.clear()
    script.requests.clear()
    return script


def settings_for(url: str, **overrides: Any) -> PostmarkSettings:
    values: dict[str, Any] = {
        "server_token": SecretStr(TOKEN), "from_address": "news@shop.example",
        "base_url": url, "timeout": 2.0,
    }
    values.update(overrides)
    return PostmarkSettings(**values)


@pytest.fixture
async def provider(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> AsyncIterator[PostmarkProvider]:
    provider = PostmarkProvider(settings_for(stand_in[0].url))
    yield provider
    await provider.aclose()


def message(**overrides: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "channel": "email",
        "to": "ada@example.com",
        "parts": {"subject": "Your cart", "body": "Still thinking?", "html": "<p>Still?</p>"},
        "category": "transactional",
        "idempotency_key": "delivery-7f3a",
        "contact_id": "c-42",
        "headers": {"List-Unsubscribe": "<https://shop.example/u/c-42>"},
        "metadata": {"journey": "cart-recovery", "step": "first-nudge", "contact": "c-42"},
    }
    values.update(overrides)
    return OutgoingMessage(**values)


async def send_error(provider: PostmarkProvider, msg: OutgoingMessage) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.send(msg)
    return caught.value


# --------------------------------------------------------------------------- sending


async def test_success_sends_postmark_body_and_token(
    provider: PostmarkProvider, script: Script,
) -> None:
    receipt = await provider.send(message())

    assert len(script.requests) == 1
    request = script.requests[0]
    assert request["path"] == "/email"
    assert request["headers"]["x-postmark-server-token"] == TOKEN
    assert request["headers"]["accept"] == "application/json"
    assert request["headers"]["content-type"] == "application/json"
    assert len(script.accepted) == 1
    sent = script.accepted[0]
    assert receipt.provider == "postmark"
    assert receipt.provider_message_id == sent["MessageID"]
    assert receipt.response["ErrorCode"] == 0
    assert {k: v for k, v in sent.items() if k != "MessageID"} == {
        "From": "news@shop.example",
        "To": "ada@example.com",
        "Subject": "Your cart",
        "TextBody": "Still thinking?",
        "HtmlBody": "<p>Still?</p>",
        "MessageStream": "outbound",
        "Headers": [{"Name": "List-Unsubscribe", "Value": "<https://shop.example/u/c-42>"}],
        "Metadata": {"journey": "cart-recovery", "step": "first-nudge", "contact": "c-42",
                     "cairn_key": "delivery-7f3a"},
        "TrackOpens": True,
        "TrackLinks": "HtmlAndText",
        "Tag": "cart-recovery",
    }


async def test_marketing_goes_to_broadcast_stream_and_optional_fields_are_left_out(
    provider: PostmarkProvider, script: Script,
) -> None:
    await provider.send(message(category="marketing", parts={"subject": "Sale", "body": "50%"},
                                headers={}, metadata={}))

    sent = script.accepted[0]
    assert sent["MessageStream"] == "broadcast"
    assert sent["Metadata"] == {"cairn_key": "delivery-7f3a"}
    assert "HtmlBody" not in sent
    assert "Headers" not in sent
    assert "Tag" not in sent


async def test_tracking_settings_are_sent(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    provider = PostmarkProvider(settings_for(stand_in[0].url, track_opens=False,
                                             track_links="None", message_stream="broadcast"))
    try:
        await provider.send(message())
    finally:
        await provider.aclose()
    assert script.accepted[0]["TrackOpens"] is False
    assert script.accepted[0]["TrackLinks"] == "None"
    assert script.accepted[0]["MessageStream"] == "broadcast"


async def test_wrong_token_is_permanent_and_names_the_setting(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    provider = PostmarkProvider(settings_for(stand_in[0].url, server_token=SecretStr("stale")))
    try:
        error = await send_error(provider, message())
    finally:
        await provider.aclose()
    assert error.status == 401
    assert error.code == "10"
    assert not error.retryable
    assert not error.invalid_recipient
    assert "CAIRN_POSTMARK_SERVER_TOKEN" in str(error)
    assert script.requests[0]["headers"]["x-postmark-server-token"] == "stale"
    assert script.accepted == []


async def test_missing_token_fails_before_any_request(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    provider = PostmarkProvider(settings_for(stand_in[0].url, server_token=None))
    try:
        error = await send_error(provider, message())
    finally:
        await provider.aclose()
    assert not error.retryable
    assert "CAIRN_POSTMARK_SERVER_TOKEN" in str(error)
    assert script.requests == []


async def test_missing_sender_fails_before_any_request(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    provider = PostmarkProvider(settings_for(stand_in[0].url, from_address=None))
    try:
        error = await send_error(provider, message())
    finally:
        await provider.aclose()
    assert not error.retryable
    assert "CAIRN_POSTMARK_FROM_ADDRESS" in str(error)
    assert script.requests == []


async def test_message_without_body_fails_before_any_request(
    provider: PostmarkProvider, script: Script,
) -> None:
    error = await send_error(provider, message(parts={"subject": "Empty"}))
    assert not error.retryable
    assert error.code == "empty_body"
    assert script.requests == []


async def test_inactive_recipient_is_invalid_recipient(
    provider: PostmarkProvider, script: Script,
) -> None:
    error = await send_error(provider, message(to=INACTIVE))
    assert error.status == 422
    assert error.code == "406"
    assert error.invalid_recipient
    assert not error.retryable
    assert not error.outcome_unknown
    assert script.accepted == []


async def test_malformed_recipient_is_invalid_recipient(
    provider: PostmarkProvider, script: Script,
) -> None:
    error = await send_error(provider, message(to="not-an-address"))
    assert error.status == 422
    assert error.code == "300"
    assert error.invalid_recipient
    assert not error.retryable
    assert script.accepted == []


async def test_bad_sender_is_permanent_but_not_the_recipients_fault(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    provider = PostmarkProvider(settings_for(stand_in[0].url, from_address="shop"))
    try:
        error = await send_error(provider, message())
    finally:
        await provider.aclose()
    assert error.status == 422
    assert error.code == "300"
    assert not error.retryable
    assert not error.invalid_recipient
    assert "'From'" in str(error)


async def test_other_4xx_is_permanent(provider: PostmarkProvider, script: Script) -> None:
    script.fail(422, {"ErrorCode": 400, "Message": "Sender signature not found for this From."})
    error = await send_error(provider, message())
    assert error.status == 422
    assert error.code == "400"
    assert not error.retryable
    assert not error.invalid_recipient
    assert "Sender signature not found" in str(error)


async def test_500_is_retryable(provider: PostmarkProvider, script: Script) -> None:
    script.fail(500)
    error = await send_error(provider, message())
    assert error.status == 500
    assert error.retryable
    assert not error.outcome_unknown
    assert not error.invalid_recipient
    assert script.accepted == []


async def test_503_maintenance_is_retryable_with_retry_after(
    provider: PostmarkProvider, script: Script,
) -> None:
    script.fail(503, retry_after="30")
    error = await send_error(provider, message())
    assert error.status == 503
    assert error.code == "100"
    assert error.retryable
    assert error.retry_after == 30.0


async def test_429_is_retryable_with_retry_after(
    provider: PostmarkProvider, script: Script,
) -> None:
    script.fail(429, retry_after="7")
    error = await send_error(provider, message())
    assert error.status == 429
    assert error.code == "429"
    assert error.retryable
    assert error.retry_after == 7.0
    assert not error.outcome_unknown


async def test_slow_answer_is_outcome_unknown_and_postmark_accepted(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    provider = PostmarkProvider(settings_for(stand_in[0].url, timeout=0.3))
    script.slow(1.0)
    try:
        error = await send_error(provider, message())
    finally:
        await provider.aclose()
    assert error.retryable
    assert error.outcome_unknown
    assert not provider.idempotent
    assert len(script.accepted) == 1
    assert script.accepted[0]["Metadata"]["cairn_key"] == "delivery-7f3a"


async def test_refused_connection_is_retryable_and_nothing_went_out() -> None:
    provider = PostmarkProvider(settings_for(refused_url()))
    try:
        error = await send_error(provider, message())
    finally:
        await provider.aclose()
    assert error.retryable
    assert not error.outcome_unknown
    assert error.status is None


async def test_shared_client_is_used_and_left_open(
    stand_in: tuple[StandInServer, Script], script: Script,
) -> None:
    async with httpx.AsyncClient() as client:
        provider = PostmarkProvider(settings_for(stand_in[0].url), client=client)
        await provider.send(message())
        await provider.aclose()
        assert not client.is_closed
    assert len(script.accepted) == 1


def test_provider_shape_and_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_POSTMARK_SERVER_TOKEN", "from-env")
    monkeypatch.setenv("CAIRN_POSTMARK_FROM_ADDRESS", "hi@shop.example")
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_USERNAME", "hook")
    settings = PostmarkSettings()
    assert settings.server_token is not None
    assert settings.server_token.get_secret_value() == "from-env"
    assert settings.from_address == "hi@shop.example"
    assert settings.webhook_username == "hook"
    assert settings.base_url == "https://api.postmarkapp.com"
    assert settings.message_stream == "outbound"
    assert settings.broadcast_stream == "broadcast"
    assert settings.track_links == "HtmlAndText"
    provider = PostmarkProvider(settings)
    assert isinstance(provider, Provider)
    assert provider.name == "postmark"
    assert provider.channels == ("email",)
    assert provider.idempotent is False


# --------------------------------------------------------------------------- webhooks

OPEN_SETTINGS = PostmarkSettings(webhook_username=None)
AUTH_SETTINGS = PostmarkSettings(webhook_username="postmark", webhook_password=SecretStr("s3cret"))
METADATA = {"cairn_key": "delivery-7f3a", "journey": "cart-recovery"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


DELIVERY = {
    "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": "ada@example.com",
    "Tag": "cart-recovery", "DeliveredAt": "2024-03-01T10:15:30.1234567Z",
    "Details": "smtp;250 2.0.0 OK", "Metadata": METADATA,
}


def bounce(bounce_type: str, code: int) -> dict[str, Any]:
    return {
        "RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807,
        "Type": bounce_type, "TypeCode": code, "Name": bounce_type, "Tag": "cart-recovery",
        "MessageID": "a1b2c3d4-0000-4000-8000-000000000001", "Metadata": METADATA,
        "ServerID": 23, "Description": "The server could not deliver the message.",
        "Details": "smtp;550 5.1.1 user unknown", "Email": "ada@example.com",
        "From": "news@shop.example", "BouncedAt": "2024-03-01T10:16:00-05:00",
        "DumpAvailable": True, "Inactive": code == 1, "CanActivate": True,
        "Subject": "Your cart", "Content": "dump",
    }


SPAM = {
    "RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42,
    "Type": "SpamComplaint", "TypeCode": 512, "Name": "Spam complaint", "Tag": "cart-recovery",
    "MessageID": "a1b2c3d4-0000-4000-8000-000000000002", "Metadata": METADATA, "ServerID": 23,
    "Description": "", "Details": "complaint via feedback loop", "Email": "ada@example.com",
    "From": "news@shop.example", "BouncedAt": "2024-03-02T08:00:00Z", "DumpAvailable": True,
    "Inactive": True, "CanActivate": False, "Subject": "Your cart",
}

OPEN = {
    "RecordType": "Open", "MessageStream": "outbound", "Metadata": METADATA, "FirstOpen": True,
    "Recipient": "ada@example.com", "MessageID": "a1b2c3d4-0000-4000-8000-000000000003",
    "ReceivedAt": "2024-03-01T11:00:00.5Z", "Platform": "WebMail", "ReadSeconds": 5,
    "Tag": "cart-recovery", "UserAgent": "Mozilla/5.0",
    "OS": {"Name": "OS X", "Family": "OS X", "Company": "Apple"},
    "Client": {"Name": "Chrome", "Family": "Chrome", "Company": "Google"},
    "Geo": {"CountryISOCode": "DE", "Country": "Germany", "City": "Berlin"},
}

CLICK = {
    "RecordType": "Click", "MessageStream": "outbound", "Metadata": METADATA,
    "Recipient": "ada@example.com", "MessageID": "a1b2c3d4-0000-4000-8000-000000000004",
    "ReceivedAt": "2024-03-01T11:01:00Z", "Platform": "Desktop", "ClickLocation": "HTML",
    "OriginalLink": "https://shop.example/cart?c=42", "Tag": "cart-recovery",
    "UserAgent": "Mozilla/5.0", "OS": {"Name": "Windows"}, "Client": {"Name": "Firefox"},
    "Geo": {"CountryISOCode": "FR"},
}


def subscription(suppress: bool, reason: str | None) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange", "MessageID": "a1b2c3d4-0000-4000-8000-000000000005",
        "ServerID": 23, "MessageStream": "broadcast", "ChangedAt": "2024-03-03T09:30:00Z",
        "Recipient": "ada@example.com", "Origin": "Recipient", "SuppressSending": suppress,
        "SuppressionReason": reason, "Tag": "cart-recovery" if suppress else None,
        "Metadata": METADATA if suppress else {},
    }


def test_delivery_webhook() -> None:
    event = parse_postmark_webhook(DELIVERY, None, OPEN_SETTINGS)
    assert event.provider == "postmark"
    assert event.kind == "delivered"
    assert event.channel == "email"
    assert event.provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"
    assert event.recipient == "ada@example.com"
    assert event.occurred_at == datetime(2024, 3, 1, 10, 15, 30, 123456, tzinfo=UTC)
    assert event.metadata == METADATA
    assert not event.permanent


@pytest.mark.parametrize(("bounce_type", "code", "permanent"), [
    ("HardBounce", 1, True),
    ("BadEmailAddress", 100000, True),
    ("ManuallyDeactivated", 100002, True),
    ("SoftBounce", 4096, False),
    ("Transient", 2, False),
    ("DnsError", 256, False),
    ("AutoResponder", 64, False),
])
def test_bounce_webhook(bounce_type: str, code: int, permanent: bool) -> None:
    event = parse_postmark_webhook(bounce(bounce_type, code), None, OPEN_SETTINGS)
    assert event.kind == "bounced"
    assert event.permanent is permanent
    assert event.recipient == "ada@example.com"
    assert event.provider_message_id == "a1b2c3d4-0000-4000-8000-000000000001"
    assert event.occurred_at == datetime(2024, 3, 1, 10, 16,
                                         tzinfo=timezone(timedelta(hours=-5)))
    assert event.detail["bounce_type"] == bounce_type
    assert event.detail["type_code"] == code
    assert event.metadata == METADATA


def test_spam_complaint_webhook() -> None:
    event = parse_postmark_webhook(SPAM, None, OPEN_SETTINGS)
    assert event.kind == "complained"
    assert event.permanent
    assert event.recipient == "ada@example.com"
    assert event.occurred_at == datetime(2024, 3, 2, 8, tzinfo=UTC)
    assert event.metadata["cairn_key"] == "delivery-7f3a"


def test_open_webhook() -> None:
    event = parse_postmark_webhook(OPEN, None, OPEN_SETTINGS)
    assert event.kind == "opened"
    assert event.recipient == "ada@example.com"
    assert event.occurred_at == datetime(2024, 3, 1, 11, 0, 0, 500000, tzinfo=UTC)
    assert event.detail["first_open"] is True
    assert event.detail["platform"] == "WebMail"
    assert not event.permanent


def test_click_webhook_keeps_the_original_link() -> None:
    event = parse_postmark_webhook(CLICK, None, OPEN_SETTINGS)
    assert event.kind == "clicked"
    assert event.detail["url"] == "https://shop.example/cart?c=42"
    assert event.detail["click_location"] == "HTML"
    assert event.provider_message_id == "a1b2c3d4-0000-4000-8000-000000000004"
    assert event.metadata == METADATA


@pytest.mark.parametrize(("reason", "kind", "permanent"), [
    ("ManualSuppression", "unsubscribed", False),
    ("HardBounce", "bounced", True),
    ("SpamComplaint", "complained", True),
])
def test_subscription_change_suppression(reason: str, kind: str, permanent: bool) -> None:
    event = parse_postmark_webhook(subscription(True, reason), None, OPEN_SETTINGS)
    assert event.kind == kind
    assert event.permanent is permanent
    assert event.recipient == "ada@example.com"
    assert event.occurred_at == datetime(2024, 3, 3, 9, 30, tzinfo=UTC)
    assert event.detail["reason"] == reason
    assert event.detail["origin"] == "Recipient"
    assert event.metadata == METADATA


def test_subscription_reactivation_is_resubscribed() -> None:
    event = parse_postmark_webhook(subscription(False, None), None, OPEN_SETTINGS)
    assert event.kind == "resubscribed"
    assert not event.permanent
    assert event.metadata == {}


def test_unknown_record_type_is_rejected_by_name() -> None:
    with pytest.raises(FeedbackRejected, match="Inbound"):
        parse_postmark_webhook({"RecordType": "Inbound", "MessageID": "x"}, None, OPEN_SETTINGS)


def test_bad_timestamp_is_rejected() -> None:
    with pytest.raises(FeedbackRejected, match="DeliveredAt"):
        parse_postmark_webhook({**DELIVERY, "DeliveredAt": "yesterday"}, None, OPEN_SETTINGS)


def test_metadata_values_become_strings() -> None:
    event = parse_postmark_webhook({**DELIVERY, "Metadata": {"user_id": 43}}, None,
                                   OPEN_SETTINGS)
    assert event.metadata == {"user_id": "43"}


def test_basic_auth_accepts_the_configured_credentials() -> None:
    event = parse_postmark_webhook(DELIVERY, basic("postmark", "s3cret"), AUTH_SETTINGS)
    assert event.kind == "delivered"


@pytest.mark.parametrize("authorization", [
    None,
    "",
    basic("postmark", "wrong"),
    basic("someone", "s3cret"),
    "Basic !!!not-base64!!!",
    "Bearer s3cret",
    "Basic " + base64.b64encode(b"postmark").decode(),
])
def test_basic_auth_rejects_anything_else(authorization: str | None) -> None:
    with pytest.raises(FeedbackRejected):
        parse_postmark_webhook(DELIVERY, authorization, AUTH_SETTINGS)


async def test_webhook_metadata_matches_what_was_sent(
    provider: PostmarkProvider, script: Script,
) -> None:
    """The key sent in Metadata is what a webhook echoes back: delivery ids round-trip."""
    receipt = await provider.send(message())
    sent = script.accepted[0]
    hook = {**DELIVERY, "MessageID": receipt.provider_message_id, "Metadata": sent["Metadata"]}
    event = parse_postmark_webhook(hook, None, OPEN_SETTINGS)
    assert event.provider_message_id == receipt.provider_message_id
    assert event.metadata["cairn_key"] == "delivery-7f3a"
