"""FCM HTTP v1 and browser web push against local stand-ins that check auth and decrypt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from cairn.channels.base import OutgoingMessage, Provider, ProviderError
from cairn.channels.fcm import SCOPE, FcmProvider, FcmSettings
from cairn.channels.webpush import WebPushProvider, WebPushSettings, b64url, topic_for
from tests.standins.fcm import (
    TOKEN_PATH,
    FcmState,
    ServiceAccountKey,
    build_fcm_app,
    rpc_error,
)
from tests.standins.server import StandInServer, refused_url
from tests.standins.webpush import BrowserSubscription, PushServiceState, build_push_service_app

# --------------------------------------------------------------------------- FCM fixtures


@pytest.fixture(scope="module")
def account() -> ServiceAccountKey:
    return ServiceAccountKey.generate("cairn-test")


@pytest.fixture(scope="module")
def fcm_server(account: ServiceAccountKey) -> Iterator[tuple[StandInServer, FcmState]]:
    state = FcmState(account)
    with StandInServer(build_fcm_app(state)) as server:
        yield server, state


class FakeClock:
    """Monotonic seconds the test moves by hand, for the token cache."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FcmCase:
    """One test's view of the stand-in plus a way to build providers against it."""

    def __init__(self, server: StandInServer, state: FcmState, account: ServiceAccountKey):
        self.url = server.url
        self.state = state
        self.account = account
        self.token_uri = f"{server.url}{TOKEN_PATH}"

    def provider(self, *, base_url: str | None = None, token_uri: str | None = None,
                 timeout: float = 2.0, clock: FakeClock | None = None,
                 info: dict[str, Any] | None = None) -> FcmProvider:
        settings = FcmSettings(
            service_account_json=SecretStr(json.dumps(info or self.account.info(self.token_uri))),
            base_url=base_url or self.url, token_uri=token_uri, timeout=timeout,
        )
        if clock is None:
            return FcmProvider(settings)
        return FcmProvider(settings, clock=clock)


@pytest.fixture
def fcm(fcm_server: tuple[StandInServer, FcmState], account: ServiceAccountKey) -> FcmCase:
    server, state = fcm_server
    state.reset()
    return FcmCase(server, state, account)


def push_message(to: str = "device-token-1", key: str = "d-1:push", **changes: Any
                 ) -> OutgoingMessage:
    message = OutgoingMessage(
        channel="push", to=to,
        parts={"title": "Your order shipped", "body": "Arrives Thursday",
               "url": "https://shop.example/orders/42"},
        category="transactional", idempotency_key=key, contact_id="c-1",
        metadata={"delivery": "d-1", "journey": "onboarding"},
    )
    return replace(message, **changes)


async def failure_of(provider: FcmProvider | WebPushProvider, message: OutgoingMessage
                     ) -> ProviderError:
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send(message)
    finally:
        await provider.aclose()
    return caught.value


# --------------------------------------------------------------------------- FCM: success, token


async def test_fcm_sends_v1_message_with_bearer_token(fcm: FcmCase) -> None:
    provider = fcm.provider()
    assert isinstance(provider, Provider)
    assert (provider.name, provider.channels, provider.idempotent) == ("fcm", ("push",), False)
    try:
        receipt = await provider.send(push_message())
    finally:
        await provider.aclose()

    [exchange] = fcm.state.token_requests
    claims = exchange["claims"]
    assert claims["iss"] == fcm.account.client_email
    assert claims["scope"] == SCOPE
    assert claims["aud"] == fcm.token_uri
    assert claims["exp"] - claims["iat"] == 3600
    assert exchange["kid"] == fcm.account.private_key_id

    [request] = fcm.state.script.requests
    assert request["path"] == "/v1/projects/cairn-test/messages:send"
    assert request["authorization"].startswith("Bearer ya29.")
    assert request["authorization"][7:] in fcm.state.tokens
    assert request["body"] == {"message": {
        "token": "device-token-1",
        "notification": {"title": "Your order shipped", "body": "Arrives Thursday"},
        "data": {"url": "https://shop.example/orders/42", "cairn_delivery": "d-1",
                 "cairn_journey": "onboarding"},
    }}
    [accepted] = fcm.state.script.accepted
    assert receipt.provider == "fcm"
    assert receipt.provider_message_id == accepted["name"]
    assert str(receipt.provider_message_id).startswith("projects/cairn-test/messages/")


async def test_fcm_token_is_cached_across_sends(fcm: FcmCase) -> None:
    provider = fcm.provider()
    try:
        await provider.send(push_message(key="a"))
        await provider.send(push_message(key="b"))
    finally:
        await provider.aclose()
    assert len(fcm.state.token_requests) == 1
    first, second = fcm.state.script.requests
    assert first["authorization"] == second["authorization"]
    assert len(fcm.state.script.accepted) == 2


async def test_fcm_token_is_refreshed_a_minute_before_expiry(fcm: FcmCase) -> None:
    clock = FakeClock()
    fcm.state.expires_in = 3599
    provider = fcm.provider(clock=clock)
    try:
        await provider.send(push_message(key="a"))
        clock.now += 3538  # 61 s left: still used
        await provider.send(push_message(key="b"))
        assert len(fcm.state.token_requests) == 1
        clock.now += 2  # 59 s left: replaced before it can expire in flight
        await provider.send(push_message(key="c"))
    finally:
        await provider.aclose()
    assert len(fcm.state.token_requests) == 2
    bearers = [r["authorization"] for r in fcm.state.script.requests]
    assert bearers[0] == bearers[1] != bearers[2]


async def test_fcm_concurrent_sends_share_one_token_exchange(fcm: FcmCase) -> None:
    provider = fcm.provider()
    try:
        await asyncio.gather(*(provider.send(push_message(key=f"k{i}")) for i in range(6)))
    finally:
        await provider.aclose()
    assert len(fcm.state.token_requests) == 1
    assert len(fcm.state.script.accepted) == 6


async def test_fcm_401_refreshes_token_once_and_succeeds(fcm: FcmCase) -> None:
    provider = fcm.provider()
    try:
        await provider.send(push_message(key="a"))
        fcm.state.expire_tokens()  # revoked early: the cached token still looks fresh
        receipt = await provider.send(push_message(key="b"))
    finally:
        await provider.aclose()
    assert len(fcm.state.token_requests) == 2
    first, refused, retried = fcm.state.script.requests
    assert first["authorization"] == refused["authorization"] != retried["authorization"]
    assert [a["message"]["token"] for a in fcm.state.script.accepted] == ["device-token-1"] * 2
    assert receipt.provider_message_id == fcm.state.script.accepted[-1]["name"]


async def test_fcm_401_twice_is_permanent_after_one_refresh(fcm: FcmCase) -> None:
    fcm.state.script.fail(401, body=rpc_error(401, "Request had invalid authentication "
                                                   "credentials."), times=2)
    error = await failure_of(fcm.provider(), push_message())
    assert (error.status, error.retryable, error.invalid_recipient) == (401, False, False)
    assert error.code == "UNAUTHENTICATED"
    assert "Cloud Messaging API Admin" in str(error)
    assert len(fcm.state.token_requests) == 2
    assert len(fcm.state.script.requests) == 2
    assert fcm.state.script.accepted == []


async def test_fcm_third_party_auth_error_does_not_refresh_our_token(fcm: FcmCase) -> None:
    fcm.state.script.fail(401, body=rpc_error(401, "Auth error from APNS or Web Push Service",
                                              "THIRD_PARTY_AUTH_ERROR"))
    error = await failure_of(fcm.provider(), push_message())
    assert (error.status, error.code, error.retryable) == (401, "THIRD_PARTY_AUTH_ERROR", False)
    assert "APNs" in str(error)
    assert len(fcm.state.token_requests) == 1
    assert len(fcm.state.script.requests) == 1


# --------------------------------------------------------------------------- FCM: errors


async def test_fcm_unregistered_token_is_invalid_recipient(fcm: FcmCase) -> None:
    fcm.state.unregistered.add("stale-token")
    error = await failure_of(fcm.provider(), push_message(to="stale-token"))
    assert (error.status, error.code) == (404, "UNREGISTERED")
    assert error.invalid_recipient and not error.retryable and not error.outcome_unknown
    assert fcm.state.script.accepted == []


async def test_fcm_malformed_token_is_invalid_recipient(fcm: FcmCase) -> None:
    fcm.state.malformed.add("not-a-token")
    error = await failure_of(fcm.provider(), push_message(to="not-a-token"))
    assert (error.status, error.code) == (400, "INVALID_ARGUMENT")
    assert error.invalid_recipient and not error.retryable


async def test_fcm_invalid_payload_is_permanent_but_keeps_token(fcm: FcmCase) -> None:
    fcm.state.script.fail(400, body=rpc_error(
        400, "Invalid value at 'message.data[0].value' (TYPE_STRING), 12", "INVALID_ARGUMENT",
        [{"field": "message.data[0].value", "description": "Invalid value"}]))
    error = await failure_of(fcm.provider(), push_message())
    assert (error.status, error.code) == (400, "INVALID_ARGUMENT")
    assert not error.retryable and not error.invalid_recipient


async def test_fcm_sender_id_mismatch_is_permanent_not_invalid_recipient(fcm: FcmCase) -> None:
    fcm.state.other_sender.add("other-app-token")
    error = await failure_of(fcm.provider(), push_message(to="other-app-token"))
    assert (error.status, error.code) == (403, "SENDER_ID_MISMATCH")
    assert not error.retryable and not error.invalid_recipient
    assert "CAIRN_FCM_PROJECT_ID" in str(error)


@pytest.mark.parametrize(("status", "code"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
async def test_fcm_server_errors_are_retryable(fcm: FcmCase, status: int, code: str) -> None:
    fcm.state.script.fail(status)
    error = await failure_of(fcm.provider(), push_message())
    assert (error.status, error.code, error.retryable) == (status, code, True)
    assert not error.outcome_unknown and not error.invalid_recipient


async def test_fcm_quota_exceeded_carries_retry_after(fcm: FcmCase) -> None:
    fcm.state.script.fail(429, retry_after="17")
    error = await failure_of(fcm.provider(), push_message())
    assert (error.status, error.code, error.retryable) == (429, "QUOTA_EXCEEDED", True)
    assert error.retry_after == 17.0


async def test_fcm_slow_answer_is_outcome_unknown_and_was_accepted(fcm: FcmCase) -> None:
    fcm.state.script.slow(1.0, accept=True)
    error = await failure_of(fcm.provider(timeout=0.3), push_message(key="slow"))
    assert error.retryable and error.outcome_unknown
    [accepted] = fcm.state.script.accepted
    assert accepted["message"]["token"] == "device-token-1"


async def test_fcm_refused_connection_is_retryable_and_nothing_sent(fcm: FcmCase) -> None:
    error = await failure_of(fcm.provider(base_url=refused_url()), push_message())
    assert error.retryable and not error.outcome_unknown
    assert len(fcm.state.token_requests) == 1


async def test_fcm_token_endpoint_down_is_retryable_and_nothing_sent(fcm: FcmCase) -> None:
    error = await failure_of(fcm.provider(token_uri=f"{refused_url()}/token"), push_message())
    assert error.code == "token_unavailable"
    assert error.retryable and not error.outcome_unknown
    assert fcm.state.script.requests == []


async def test_fcm_wrong_private_key_is_refused_at_token_exchange(fcm: FcmCase) -> None:
    impostor = ServiceAccountKey.generate("cairn-test")
    info = impostor.info(fcm.token_uri)
    info["client_email"] = fcm.account.client_email  # right account, wrong key
    error = await failure_of(fcm.provider(info=info), push_message())
    assert (error.status, error.code, error.retryable) == (400, "auth_failed", False)
    assert "invalid_grant" in str(error)
    assert fcm.state.rejected_assertions and "Signature" in fcm.state.rejected_assertions[0]
    assert fcm.state.script.requests == []


async def test_fcm_without_service_account_names_the_setting(fcm: FcmCase) -> None:
    provider = FcmProvider(FcmSettings(base_url=fcm.url))
    error = await failure_of(provider, push_message())
    assert error.code == "config" and not error.retryable
    assert "CAIRN_FCM_SERVICE_ACCOUNT_FILE" in str(error)


async def test_fcm_service_account_file_and_project_override(
    fcm: FcmCase, tmp_path: Any,
) -> None:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(fcm.account.info(fcm.token_uri)))
    provider = FcmProvider(FcmSettings(service_account_file=path, project_id="another-project",
                                       base_url=fcm.url))
    error = await failure_of(provider, push_message())
    assert fcm.state.script.requests[0]["path"] == "/v1/projects/another-project/messages:send"
    assert (error.status, error.retryable) == (403, False)


async def test_fcm_push_without_text_is_refused_before_sending(fcm: FcmCase) -> None:
    error = await failure_of(fcm.provider(), push_message(parts={"url": "https://x.example"}))
    assert error.code == "empty_body" and not error.retryable
    assert fcm.state.token_requests == [] and fcm.state.script.requests == []


# --------------------------------------------------------------------------- web push fixtures


@pytest.fixture(scope="module")
def push_server() -> Iterator[tuple[StandInServer, PushServiceState]]:
    state = PushServiceState()
    with StandInServer(build_push_service_app(state)) as server:
        yield server, state


@pytest.fixture(scope="module")
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def vapid_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def vapid_raw(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


class PushCase:
    def __init__(self, server: StandInServer, state: PushServiceState,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self.url = server.url
        self.state = state
        self.key = key

    def provider(self, *, key_text: str | None = None, timeout: float = 2.0,
                 allow_http: bool = True) -> WebPushProvider:
        return WebPushProvider(WebPushSettings(
            vapid_private_key=SecretStr(key_text or vapid_pem(self.key)),
            vapid_subject="mailto:ops@cairn.example", timeout=timeout, allow_http=allow_http,
        ))

    def subscribe(self, server_key: bytes | None = None) -> BrowserSubscription:
        return self.state.subscribe(server_key or public_raw(self.key))

    def message(self, sub: BrowserSubscription, key: str = "d-7:web_push", **changes: Any
                ) -> OutgoingMessage:
        message = OutgoingMessage(
            channel="web_push", to=f"{self.url}/push/{sub.id}",
            parts={"title": "Back in stock", "body": "The blue kettle is back ☕",
                   "url": "https://shop.example/kettle"},
            category="transactional", idempotency_key=key, contact_id="c-7",
            extra={"keys": sub.keys()},
        )
        return replace(message, **changes)


@pytest.fixture
def wp(push_server: tuple[StandInServer, PushServiceState],
       vapid_key: ec.EllipticCurvePrivateKey) -> PushCase:
    server, state = push_server
    state.reset()
    return PushCase(server, state, vapid_key)


# --------------------------------------------------------------------------- web push: success


@pytest.mark.parametrize("form", ["pem", "raw"])
async def test_webpush_payload_arrives_decrypted_with_vapid(wp: PushCase, form: str) -> None:
    key_text = vapid_pem(wp.key) if form == "pem" else vapid_raw(wp.key)
    provider = wp.provider(key_text=key_text)
    assert isinstance(provider, Provider)
    assert (provider.name, provider.channels, provider.idempotent) == (
        "webpush", ("web_push",), False)
    sub = wp.subscribe()
    try:
        receipt = await provider.send(wp.message(sub))
    finally:
        await provider.aclose()

    [delivered] = wp.state.script.accepted
    assert delivered["payload"] == {"title": "Back in stock", "body": "The blue kettle is back ☕",
                                    "url": "https://shop.example/kettle"}
    assert delivered["subscription"] == sub.id
    assert receipt.provider_message_id == f"{wp.url}/message/{delivered['id']}"

    headers = wp.state.script.requests[0]["headers"]
    assert headers["ttl"] == "86400"
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["urgency"] == "high"
    assert headers["topic"] == topic_for("d-7:web_push")
    scheme, _, params = headers["authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert fields["k"] == b64url(public_raw(wp.key))
    claims = jwt.decode(fields["t"], wp.key.public_key(), algorithms=["ES256"],
                        audience=wp.url)
    assert claims["sub"] == "mailto:ops@cairn.example"


async def test_webpush_topic_is_stable_for_a_key_and_replaces_pending(wp: PushCase) -> None:
    provider = wp.provider()
    sub = wp.subscribe()
    try:
        await provider.send(wp.message(sub, key="d-9:web_push"))
        await provider.send(wp.message(sub, key="d-9:web_push",
                                       parts={"title": "Retry", "body": "same send"}))
        await provider.send(wp.message(sub, key="d-10:web_push"))
    finally:
        await provider.aclose()
    topics = [r["headers"]["topic"] for r in wp.state.script.requests]
    assert topics[0] == topics[1] != topics[2]
    assert all(len(t) <= 32 for t in topics)
    pending = wp.state.pending[sub.id]
    assert len(pending) == 2
    assert pending[topics[0]]["payload"]["title"] == "Retry"


async def test_webpush_urgency_follows_category_and_extra(wp: PushCase) -> None:
    provider = wp.provider()
    sub = wp.subscribe()
    try:
        await provider.send(wp.message(sub, key="m", category="marketing"))
        await provider.send(wp.message(sub, key="l", extra={"keys": sub.keys(),
                                                            "urgency": "low"}))
    finally:
        await provider.aclose()
    assert [r["headers"]["urgency"] for r in wp.state.script.requests] == ["normal", "low"]


# --------------------------------------------------------------------------- web push: errors


async def test_webpush_gone_subscription_is_invalid_recipient(wp: PushCase) -> None:
    sub = wp.subscribe()
    wp.state.unsubscribe(sub)
    error = await failure_of(wp.provider(), wp.message(sub))
    assert (error.status, error.code) == (410, "subscription_gone")
    assert error.invalid_recipient and not error.retryable
    assert wp.state.script.accepted == []


async def test_webpush_unknown_subscription_is_invalid_recipient(wp: PushCase) -> None:
    sub = wp.subscribe()
    del wp.state.subscriptions[sub.id]
    error = await failure_of(wp.provider(), wp.message(sub))
    assert (error.status, error.invalid_recipient, error.retryable) == (404, True, False)


async def test_webpush_other_application_server_key_is_refused(wp: PushCase) -> None:
    sub = wp.subscribe(public_raw(ec.generate_private_key(ec.SECP256R1())))
    error = await failure_of(wp.provider(), wp.message(sub))
    assert (error.status, error.code) == (403, "vapid_rejected")
    assert not error.retryable and not error.invalid_recipient
    assert wp.state.rejected == [
        "VAPID key does not match the subscription's applicationServerKey"]


async def test_webpush_413_is_permanent(wp: PushCase) -> None:
    wp.state.script.fail(413, body="too big")
    error = await failure_of(wp.provider(), wp.message(wp.subscribe()))
    assert (error.status, error.code, error.retryable) == (413, "payload_too_large", False)
    assert not error.invalid_recipient


async def test_webpush_oversized_payload_is_refused_before_sending(wp: PushCase) -> None:
    sub = wp.subscribe()
    error = await failure_of(wp.provider(), wp.message(sub, parts={"title": "x",
                                                                   "body": "y" * 4000}))
    assert error.code == "payload_too_large" and not error.retryable
    assert wp.state.script.requests == []


async def test_webpush_largest_payload_fits_one_record(wp: PushCase) -> None:
    sub = wp.subscribe()
    envelope = len(json.dumps({"title": "", "body": ""}, separators=(",", ":")))
    body = "y" * (4096 - 86 - 17 - envelope)
    provider = wp.provider()
    try:
        await provider.send(wp.message(sub, parts={"title": "", "body": body}))
    finally:
        await provider.aclose()
    assert wp.state.script.requests[0]["size"] == 4096
    assert wp.state.script.accepted[0]["payload"]["body"] == body


@pytest.mark.parametrize("status", [500, 503])
async def test_webpush_server_errors_are_retryable(wp: PushCase, status: int) -> None:
    wp.state.script.fail(status)
    error = await failure_of(wp.provider(), wp.message(wp.subscribe()))
    assert (error.status, error.retryable, error.outcome_unknown) == (status, True, False)
    assert not error.invalid_recipient


async def test_webpush_429_carries_retry_after(wp: PushCase) -> None:
    wp.state.script.fail(429, retry_after="30")
    error = await failure_of(wp.provider(), wp.message(wp.subscribe()))
    assert (error.status, error.retryable, error.retry_after) == (429, True, 30.0)


async def test_webpush_slow_answer_is_outcome_unknown_and_was_accepted(wp: PushCase) -> None:
    wp.state.script.slow(1.0, accept=True)
    sub = wp.subscribe()
    error = await failure_of(wp.provider(timeout=0.3), wp.message(sub))
    assert error.retryable and error.outcome_unknown
    [delivered] = wp.state.script.accepted
    assert delivered["payload"]["title"] == "Back in stock"


async def test_webpush_refused_connection_is_retryable(wp: PushCase) -> None:
    sub = wp.subscribe()
    error = await failure_of(wp.provider(), wp.message(sub, to=f"{refused_url()}/push/x"))
    assert error.retryable and not error.outcome_unknown and not error.invalid_recipient


async def test_webpush_missing_keys_is_our_bug_not_a_dead_subscription(wp: PushCase) -> None:
    sub = wp.subscribe()
    error = await failure_of(wp.provider(), wp.message(sub, extra={}))
    assert error.code == "missing_keys"
    assert not error.retryable and not error.invalid_recipient
    assert wp.state.script.requests == []


async def test_webpush_undecodable_keys_mark_the_subscription_dead(wp: PushCase) -> None:
    sub = wp.subscribe()
    broken = {"keys": {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": sub.keys()["auth"]}}
    error = await failure_of(wp.provider(), wp.message(sub, extra=broken))
    assert error.code == "invalid_subscription" and error.invalid_recipient
    assert wp.state.script.requests == []


async def test_webpush_plain_http_endpoint_is_refused_by_default(wp: PushCase) -> None:
    sub = wp.subscribe()
    error = await failure_of(wp.provider(allow_http=False), wp.message(sub))
    assert error.code == "invalid_subscription" and not error.retryable
    assert wp.state.script.requests == []


async def test_webpush_without_vapid_key_names_the_setting(wp: PushCase) -> None:
    provider = WebPushProvider(WebPushSettings(vapid_subject="mailto:ops@cairn.example",
                                               allow_http=True))
    error = await failure_of(provider, wp.message(wp.subscribe()))
    assert error.code == "config" and "CAIRN_WEBPUSH_VAPID_PRIVATE_KEY" in str(error)
