"""Twilio SMS/WhatsApp provider against a local stand-in of the Messages API, plus the callback
signature check and the status-callback and inbound-message parsers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.datastructures import FormData

from cairn.channels.base import (
    FeedbackRejected,
    OutgoingMessage,
    Provider,
    ProviderError,
    SendLookup,
)
from cairn.channels.twilio import (
    TwilioProvider,
    TwilioSettings,
    compute_twilio_signature,
    parse_inbound_message,
    parse_status_callback,
    validate_twilio_signature,
)
from tests.standins.server import Script, StandInServer, refused_url
from tests.standins.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    POOL_NUMBER,
    TwilioAccount,
    twilio_app,
)

INVALID = "+15005550001"
NOT_MOBILE = "+15005550009"
OPTED_OUT = "+15005550004"
CALLBACK = "https://cairn.example.com/feedback/twilio/status"

_script = Script()
SMART_SERVICE = "MG" + "cd" * 16
"""A Messaging Service with Smart Encoding on."""
_account = TwilioAccount(invalid_numbers={INVALID}, not_mobile={NOT_MOBILE},
                         opted_out={OPTED_OUT}, smart_encoded_services={SMART_SERVICE})


@pytest.fixture(scope="module")
def server() -> Iterator[StandInServer]:
    with StandInServer(twilio_app(_script, _account)) as running:
        yield running


@pytest.fixture
def script(server: StandInServer) -> Script:
    _script.plans.clear()
    _script.accepted.clear()
    _script.requests.clear()
    return _script


def settings(base_url: str, **overrides: object) -> TwilioSettings:
    values: dict[str, object] = {
        "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": "+15017122661",
        "status_callback_url": CALLBACK, "base_url": base_url, "timeout": 2.0,
    }
    values.update(overrides)
    return TwilioSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def provider(server: StandInServer, script: Script) -> AsyncIterator[TwilioProvider]:
    sender = TwilioProvider(settings(server.url))
    yield sender
    await sender.aclose()


def sms(
    to: str = "+14155550123", body: str = "Your order shipped", **parts: str,
) -> OutgoingMessage:
    return OutgoingMessage(channel="sms", to=to, parts={"body": body, **parts},
                           category="transactional", idempotency_key="delivery-1",
                           contact_id="contact-1")


def whatsapp(to: str = "+14155550123", body: str = "Hola") -> OutgoingMessage:
    return OutgoingMessage(channel="whatsapp", to=to, parts={"body": body},
                           category="transactional", idempotency_key="delivery-2",
                           contact_id="contact-1")


async def send_failure(sender: TwilioProvider, message: OutgoingMessage) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await sender.send(message)
    return caught.value


# --------------------------------------------------------------------------- sending


async def test_sms_success_posts_form_with_basic_auth(
    provider: TwilioProvider, script: Script,
) -> None:
    receipt = await provider.send(sms())

    assert len(script.accepted) == 1
    accepted = script.accepted[0]
    assert accepted["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert accepted["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    assert accepted["form"] == {"To": "+14155550123", "From": "+15017122661",
                                "Body": "Your order shipped", "StatusCallback": CALLBACK}
    request = script.requests[0]
    assert request["method"] == "POST"
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert receipt.provider == "twilio"
    sid = receipt.provider_message_id
    assert sid == accepted["sid"]
    assert sid is not None and sid.startswith("SM") and len(sid) == 34
    assert receipt.response["status"] == "queued"
    assert "body" not in receipt.response  # the message text is not kept in the ledger


async def test_messaging_service_replaces_from_and_media_url_is_sent(
    server: StandInServer, script: Script,
) -> None:
    service = "MG" + "ab" * 16
    sender = TwilioProvider(settings(server.url, messaging_service_sid=service,
                                     status_callback_url=None))
    try:
        receipt = await sender.send(sms(media_url="https://cdn.example.com/a.png"))
    finally:
        await sender.aclose()

    assert script.accepted[0]["form"] == {
        "To": "+14155550123", "MessagingServiceSid": service, "Body": "Your order shipped",
        "MediaUrl": "https://cdn.example.com/a.png",
    }
    assert receipt.response["status"] == "accepted"


async def test_whatsapp_prefixes_to_and_from(server: StandInServer, script: Script) -> None:
    sender = TwilioProvider(settings(server.url, whatsapp_from="+14155238886"))
    try:
        first = await sender.send(whatsapp())
        # An address already carrying the prefix is not prefixed twice.
        await sender.send(whatsapp(to="whatsapp:+14155550124"))
    finally:
        await sender.aclose()

    assert [a["form"]["To"] for a in script.accepted] == ["whatsapp:+14155550123",
                                                          "whatsapp:+14155550124"]
    assert {a["form"]["From"] for a in script.accepted} == {"whatsapp:+14155238886"}
    assert first.provider_message_id == script.accepted[0]["sid"]


async def test_whatsapp_without_sender_fails_before_any_request(
    provider: TwilioProvider, script: Script,
) -> None:
    error = await send_failure(provider, whatsapp())

    assert not error.retryable
    assert "CAIRN_TWILIO_WHATSAPP_FROM" in str(error)
    assert script.requests == []


async def test_empty_body_fails_before_any_request(
    provider: TwilioProvider, script: Script,
) -> None:
    error = await send_failure(provider, sms(body="  "))

    assert not error.retryable and not error.invalid_recipient
    assert script.requests == []


async def test_wrong_auth_token_is_permanent_and_names_the_setting(
    server: StandInServer, script: Script,
) -> None:
    sender = TwilioProvider(settings(server.url, auth_token="not-the-token"))
    try:
        error = await send_failure(sender, sms())
    finally:
        await sender.aclose()

    assert error.status == 401
    assert error.code == "20003"
    assert not error.retryable and not error.invalid_recipient
    assert "CAIRN_TWILIO_AUTH_TOKEN" in str(error)
    assert script.requests[0]["auth"] == (ACCOUNT_SID, "not-the-token")
    assert script.accepted == []


@pytest.mark.parametrize(("number", "code"), [
    (INVALID, "21211"), ("+1 (415) 555-0123", "21211"), (NOT_MOBILE, "21614"),
    (OPTED_OUT, "21610"),
])
async def test_dead_numbers_are_invalid_recipients(
    provider: TwilioProvider, script: Script, number: str, code: str,
) -> None:
    error = await send_failure(provider, sms(to=number))

    assert error.invalid_recipient
    assert not error.retryable and not error.outcome_unknown
    assert error.status == 400
    assert error.code == code
    assert script.accepted == []


async def test_opted_out_whatsapp_recipient_says_stop(
    server: StandInServer, script: Script,
) -> None:
    sender = TwilioProvider(settings(server.url, whatsapp_from="whatsapp:+14155238886"))
    try:
        error = await send_failure(sender, whatsapp(to=OPTED_OUT))
    finally:
        await sender.aclose()

    assert error.invalid_recipient and not error.retryable
    assert script.requests[0]["form"]["To"] == f"whatsapp:{OPTED_OUT}"

    assert error.code == "21610"
    assert "STOP" in str(error)


async def test_other_4xx_is_permanent_and_not_the_recipients_fault(
    provider: TwilioProvider, script: Script,
) -> None:
    script.fail(400, body={"code": 21606, "status": 400,
                           "message": "The From phone number is not a valid, SMS-capable "
                                      "inbound phone number for your account.",
                           "more_info": "https://www.twilio.com/docs/errors/21606"})

    error = await send_failure(provider, sms())

    assert not error.retryable and not error.invalid_recipient
    assert error.code == "21606"
    assert "CAIRN_TWILIO_FROM_NUMBER" in str(error)


async def test_5xx_is_retryable_and_nothing_was_accepted(
    provider: TwilioProvider, script: Script,
) -> None:
    script.fail(500)

    error = await send_failure(provider, sms())

    assert error.retryable and not error.outcome_unknown and not error.invalid_recipient
    assert error.status == 500
    assert error.code == "20500"
    assert script.accepted == []
    # The plan is used up: the retry goes through.
    receipt = await provider.send(sms())
    assert receipt.provider_message_id == script.accepted[0]["sid"]


async def test_429_is_retryable_with_retry_after(provider: TwilioProvider, script: Script) -> None:
    script.fail(429, retry_after="7")

    error = await send_failure(provider, sms())

    assert error.retryable and not error.outcome_unknown
    assert error.status == 429
    assert error.code == "20429"
    assert error.retry_after == 7.0


async def test_slow_answer_is_outcome_unknown_and_the_message_went_out(
    server: StandInServer, script: Script,
) -> None:
    sender = TwilioProvider(settings(server.url, timeout=0.3))
    script.slow(1.0)
    try:
        error = await send_failure(sender, sms())
    finally:
        await sender.aclose()

    assert error.retryable and error.outcome_unknown
    assert len(script.accepted) == 1
    assert TwilioProvider.idempotent is False  # so the activity will not send it again


async def test_refused_connection_is_retryable_and_nothing_went_out() -> None:
    sender = TwilioProvider(settings(refused_url()))
    try:
        error = await send_failure(sender, sms())
    finally:
        await sender.aclose()

    assert error.retryable and not error.outcome_unknown


async def test_shared_client_is_left_open(server: StandInServer, script: Script) -> None:
    async with httpx.AsyncClient() as client:
        sender = TwilioProvider(settings(server.url), client=client)
        assert isinstance(sender, Provider)
        await sender.send(sms())
        await sender.aclose()
        assert not client.is_closed
        assert script.accepted[0]["auth"] == (ACCOUNT_SID, AUTH_TOKEN)


# --------------------------------------------------------------------------- the stand-in itself


async def test_standin_rejects_what_twilio_rejects(server: StandInServer, script: Script) -> None:
    url = f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    async with httpx.AsyncClient(timeout=2.0) as client:
        as_json = await client.post(url, json={"To": "+14155550123", "From": "+15017122661",
                                               "Body": "x"}, auth=auth)
        no_sender = await client.post(url, data={"To": "+14155550123", "Body": "x"}, auth=auth)
        no_body = await client.post(url, data={"To": "+14155550123", "From": "+15017122661"},
                                    auth=auth)
        mixed = await client.post(url, data={"To": "whatsapp:+14155550123",
                                             "From": "+15017122661", "Body": "x"}, auth=auth)
        no_auth = await client.post(url, data={"To": "+14155550123", "Body": "x"})

    assert (as_json.status_code, as_json.json()["code"]) == (400, 21604)
    assert (no_sender.status_code, no_sender.json()["code"]) == (400, 21603)
    assert (no_body.status_code, no_body.json()["code"]) == (400, 21602)
    assert (mixed.status_code, mixed.json()["code"]) == (400, 63007)
    assert (no_auth.status_code, no_auth.json()["code"]) == (401, 20003)
    assert script.accepted == []


# --------------------------------------------------------------------------- settings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("CAIRN_TWILIO_AUTH_TOKEN", "secret")
    monkeypatch.setenv("CAIRN_TWILIO_FROM_NUMBER", "+15017122661")
    monkeypatch.setenv("CAIRN_TWILIO_WHATSAPP_FROM", "+14155238886")
    monkeypatch.setenv("CAIRN_TWILIO_MESSAGING_SERVICE_SID", "")

    loaded = TwilioSettings()

    assert loaded.account_sid == ACCOUNT_SID
    assert loaded.auth_token.get_secret_value() == "secret"
    assert "secret" not in repr(loaded)
    assert loaded.whatsapp_from == "whatsapp:+14155238886"
    assert loaded.messaging_service_sid is None
    assert loaded.base_url == "https://api.twilio.com"


def test_bad_sender_number_is_refused_with_the_variable_name() -> None:
    with pytest.raises(ValueError, match="CAIRN_TWILIO_FROM_NUMBER"):
        TwilioSettings(account_sid=ACCOUNT_SID, auth_token="t",  # type: ignore[arg-type]
                       from_number="0415 555 0123")


def test_provider_needs_credentials() -> None:
    with pytest.raises(ValueError, match="CAIRN_TWILIO_AUTH_TOKEN"):
        TwilioProvider(TwilioSettings(account_sid=ACCOUNT_SID))


# --------------------------------------------------------------------------- signatures


def reference_signature(url: str, params: dict[str, str], token: str) -> str:
    """Twilio's scheme written out independently of the module under test."""
    data = url
    for name in sorted(params):
        data += name + params[name]
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


STATUS_URL = "https://cairn.example.com/feedback/twilio/status?workspace=acme"
# Deliberately not in name order, so a signature that forgets to sort fails.
STATUS_PARAMS = {
    "To": "+14155550123", "SmsStatus": "delivered", "MessageSid": "SM" + "1" * 32,
    "AccountSid": ACCOUNT_SID, "From": "+15017122661", "MessageStatus": "delivered",
    "ApiVersion": "2010-04-01", "SmsSid": "SM" + "1" * 32,
}


def test_signature_matches_twilios_published_example() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}

    assert compute_twilio_signature(url, params, "12345") == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert validate_twilio_signature(url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", "12345")


def test_signature_validates_against_an_independent_computation() -> None:
    signature = reference_signature(STATUS_URL, STATUS_PARAMS, AUTH_TOKEN)

    assert validate_twilio_signature(STATUS_URL, STATUS_PARAMS, signature, AUTH_TOKEN)


@pytest.mark.parametrize("tamper", ["param", "extra", "missing", "url", "token", "blank"])
def test_tampered_callbacks_fail_the_signature(tamper: str) -> None:
    signature = reference_signature(STATUS_URL, STATUS_PARAMS, AUTH_TOKEN)
    params, url, token = dict(STATUS_PARAMS), STATUS_URL, AUTH_TOKEN
    if tamper == "param":
        params["MessageStatus"] = "undelivered"
    elif tamper == "extra":
        params["ErrorCode"] = "30005"
    elif tamper == "missing":
        del params["SmsStatus"]
    elif tamper == "url":
        url = STATUS_URL.replace("acme", "other")
    elif tamper == "token":
        token = "another-token"
    else:
        signature = ""

    assert not validate_twilio_signature(url, params, signature, token)


def test_signature_tolerates_the_default_port_either_way() -> None:
    with_port = "https://cairn.example.com:443/feedback/twilio/status"
    without_port = "https://cairn.example.com/feedback/twilio/status"

    signed_with = reference_signature(with_port, STATUS_PARAMS, AUTH_TOKEN)
    signed_without = reference_signature(without_port, STATUS_PARAMS, AUTH_TOKEN)

    assert validate_twilio_signature(without_port, STATUS_PARAMS, signed_with, AUTH_TOKEN)
    assert validate_twilio_signature(with_port, STATUS_PARAMS, signed_without, AUTH_TOKEN)


def test_signature_over_a_form_multidict_and_odd_headers() -> None:
    form = FormData([("To", "+14155550123"), ("MediaUrl", "b"), ("MediaUrl", "a")])
    expected = base64.b64encode(hmac.new(
        AUTH_TOKEN.encode(), (CALLBACK + "MediaUrlaMediaUrlbTo+14155550123").encode(),
        hashlib.sha1,
    ).digest()).decode()

    assert validate_twilio_signature(CALLBACK, form, expected, AUTH_TOKEN)
    assert not validate_twilio_signature(CALLBACK, form, "sïgnature", AUTH_TOKEN)


# --------------------------------------------------------------------------- status callbacks


def test_delivered_callback() -> None:
    event = parse_status_callback(STATUS_PARAMS)

    assert event is not None
    assert (event.provider, event.kind, event.channel) == ("twilio", "delivered", "sms")
    assert event.provider_message_id == "SM" + "1" * 32
    assert event.recipient == "+14155550123"
    assert not event.permanent


@pytest.mark.parametrize(("status", "code", "permanent"), [
    ("undelivered", "30003", False),  # handset off or out of coverage: usually temporary
    ("undelivered", "30005", True),   # unknown or inactive number
    ("undelivered", "30006", True),   # landline or unreachable carrier
    ("failed", "21610", True),        # unsubscribed, surfaced through a Messaging Service
    ("failed", "30007", False),       # carrier filtering: the content, not the number
    ("failed", "", False),
])
def test_failed_callbacks(status: str, code: str, permanent: bool) -> None:
    params = {**STATUS_PARAMS, "MessageStatus": status, "SmsStatus": status, "ErrorCode": code}

    event = parse_status_callback(params)

    assert event is not None
    assert event.kind == "failed"
    assert event.permanent is permanent
    assert event.detail.get("error_code") == (code or None)
    assert event.detail["status"] == status


def test_read_receipt_on_whatsapp_is_an_open() -> None:
    params = {**STATUS_PARAMS, "MessageStatus": "read", "From": "whatsapp:+14155238886",
              "To": "whatsapp:+14155550123", "ChannelPrefix": "whatsapp"}

    event = parse_status_callback(params)

    assert event is not None
    assert (event.kind, event.channel, event.recipient) == ("opened", "whatsapp", "+14155550123")


@pytest.mark.parametrize("status", ["queued", "accepted", "sending", "sent", "scheduled"])
def test_intermediate_statuses_are_no_news(status: str) -> None:
    assert parse_status_callback({**STATUS_PARAMS, "MessageStatus": status}) is None


def test_status_callback_without_sid_is_rejected() -> None:
    with pytest.raises(FeedbackRejected):
        parse_status_callback({"MessageStatus": "delivered", "To": "+14155550123"})


# --------------------------------------------------------------------------- inbound replies


INBOUND = {"AccountSid": ACCOUNT_SID, "MessageSid": "SM" + "2" * 32, "From": "+14155550123",
           "To": "+15017122661", "NumMedia": "0"}


@pytest.mark.parametrize("body", ["STOP", " stop ", "Unsubscribe", "stopall", "Quit\n", "END",
                                  "cancel"])
def test_opt_out_keywords_unsubscribe(body: str) -> None:
    event = parse_inbound_message({**INBOUND, "Body": body})

    assert (event.kind, event.channel, event.recipient) == ("unsubscribed", "sms",
                                                            "+14155550123")
    assert event.detail["body"] == body
    assert event.detail["to"] == "+15017122661"
    assert event.detail["keyword"] == "stop"


@pytest.mark.parametrize("body", ["START", "yes", " Unstop "])
def test_opt_in_keywords_are_replies_marked_start(body: str) -> None:
    event = parse_inbound_message({**INBOUND, "Body": body})

    assert event.kind == "replied"
    assert event.detail["keyword"] == "start"
    assert event.detail["body"] == body


def test_free_text_is_a_reply_even_when_it_mentions_stop() -> None:
    event = parse_inbound_message({**INBOUND, "Body": "Please stop by tomorrow at 3"})

    assert event.kind == "replied"
    assert "keyword" not in event.detail
    assert event.detail == {"body": "Please stop by tomorrow at 3", "to": "+15017122661",
                            "message_sid": "SM" + "2" * 32}
    assert event.provider_message_id is None


def test_advanced_opt_out_type_wins_over_the_default_list() -> None:
    event = parse_inbound_message({**INBOUND, "Body": "ARRET", "OptOutType": "STOP"})

    assert event.kind == "unsubscribed"


def test_whatsapp_reply_with_media_and_quoted_message() -> None:
    event = parse_inbound_message({
        **INBOUND, "From": "whatsapp:+14155550123", "To": "whatsapp:+14155238886",
        "Body": "Is this the one?", "NumMedia": "1", "MediaUrl0": "https://api.twilio.com/m/1",
        "OriginalRepliedMessageSid": "SM" + "3" * 32,
    })

    assert (event.kind, event.channel, event.recipient) == ("replied", "whatsapp",
                                                            "+14155550123")
    assert event.detail["to"] == "+14155238886"
    assert event.detail["media_urls"] == ["https://api.twilio.com/m/1"]
    assert event.provider_message_id == "SM" + "3" * 32


def test_inbound_without_sender_is_rejected() -> None:
    with pytest.raises(FeedbackRejected):
        parse_inbound_message({"Body": "STOP"})


# --------------------------------------------------------------------------- lost answers


async def test_a_lost_answer_is_found_in_twilios_message_list(
    server: StandInServer, script: Script,
) -> None:
    sender = TwilioProvider(settings(server.url, timeout=0.3))
    script.slow(1.0)
    message = sms(body="Your code is 4411")
    try:
        await send_failure(sender, message)
        await asyncio.sleep(0.8)
        found = await sender.find_sent(message)
        other = await sender.find_sent(sms(body="Another text"))
    finally:
        await sender.aclose()

    assert isinstance(sender, SendLookup)
    [accepted] = script.accepted
    assert found is not None and found.provider_message_id == accepted["sid"]
    assert found.accepted_at is not None
    assert other is None


async def test_a_message_twilio_never_took_is_not_found(
    server: StandInServer, script: Script,
) -> None:
    sender = TwilioProvider(settings(server.url, timeout=0.3))
    script.slow(0.6, accept=False)
    message = sms(body="Never delivered")
    try:
        await send_failure(sender, message)
        await asyncio.sleep(0.5)
        assert await sender.find_sent(message) is None
    finally:
        await sender.aclose()
    assert script.accepted == []


async def test_a_lost_answer_through_a_messaging_service_is_found_despite_smart_encoding(
    server: StandInServer, script: Script,
) -> None:
    sender = TwilioProvider(settings(server.url, timeout=0.3,
                                     messaging_service_sid=SMART_SERVICE))
    script.slow(1.0)
    body = "Your code \u201c4411\u201d \u2014 it\u2019s valid for 10\u00a0min\u2026"
    message = sms(body=body)
    try:
        await send_failure(sender, message)
        await asyncio.sleep(0.8)
        found = await sender.find_sent(message)
        other_code = await sender.find_sent(sms(body=body.replace("4411", "4412")))
        other_service = TwilioProvider(settings(server.url, messaging_service_sid="MG" + "ef" * 16))
        try:
            through_another = await other_service.find_sent(message)
        finally:
            await other_service.aclose()
    finally:
        await sender.aclose()

    [accepted] = script.accepted
    assert accepted["form"]["MessagingServiceSid"] == SMART_SERVICE
    listed = httpx.get(f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
                       auth=(ACCOUNT_SID, AUTH_TOKEN)).json()["messages"]
    assert listed[0]["body"] != body, "the stand-in rewrote the body as Twilio does"
    assert found is not None and found.provider_message_id == accepted["sid"]
    assert found.response["messaging_service_sid"] == SMART_SERVICE
    assert found.response["from"] == POOL_NUMBER
    assert other_code is None
    assert through_another is None
