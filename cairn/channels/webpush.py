"""Browser web push: an encrypted payload POSTed to the subscription's push service.

There is no provider account: each subscription names its own push service (Mozilla autopush,
FCM for Chrome, Apple's web push) in its endpoint URL. Cairn proves who it is with VAPID
(RFC 8292: an ES256 JWT for the endpoint's origin plus the public key the browser subscribed
with) and encrypts the payload for the browser alone (RFC 8291, `aes128gcm`) with the
subscription's `p256dh` key and `auth` secret, so the push service never reads it.

Encryption uses `http_ece` (the reference RFC 8188 implementation pywebpush uses); the request
itself is ours, on httpx, so timeouts and failures are classified like every other provider.

Push services have no idempotency key. The closest thing is the `Topic` header: a message with
the same topic replaces one still waiting for the browser. Cairn derives the topic from the
idempotency key, so a resend after an unknown outcome at worst replaces the undelivered first
copy, but the provider still declares itself not idempotent (a delivered copy is not replaced).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import (
    HttpClientHolder,
    OutgoingMessage,
    ProviderError,
    Receipt,
    error_from_response,
    error_from_transport,
)
from cairn.log import get_logger

log = get_logger(__name__)

PROVIDER = "webpush"
URGENCIES = ("very-low", "low", "normal", "high")
MAX_BODY = 4096
"""Push services must accept 4096 octets of encrypted body (RFC 8030 7.2) and may refuse more."""
HEADER_OVERHEAD = 16 + 4 + 1 + 65
"""aes128gcm header: salt, record size, key id length, the sender's uncompressed P-256 key."""
RECORD_OVERHEAD = 16 + 1
"""AES-GCM tag and the padding delimiter of the single record RFC 8291 allows."""
MAX_PLAINTEXT = MAX_BODY - HEADER_OVERHEAD - RECORD_OVERHEAD
VAPID_LIFETIME = 12 * 3600
"""RFC 8292 caps `exp` at 24 hours; half leaves room for clock skew at the push service."""


class WebPushSettings(BaseSettings):
    """VAPID identity and delivery defaults (`CAIRN_WEBPUSH_*`).

    `vapid_private_key` is the application server key whose public half the site passed to
    `pushManager.subscribe()`: PEM, or the base64url raw 32-byte form that `web-push
    generate-vapid-keys` prints. `allow_http` admits plain-http endpoints, which no real push
    service uses: only for a local push service in tests.
    """

    model_config = SettingsConfigDict(env_prefix="CAIRN_WEBPUSH_", extra="ignore")

    vapid_private_key: SecretStr | None = None
    vapid_subject: str | None = None
    ttl: int = 86400
    timeout: float = 10.0
    allow_http: bool = False


@dataclass(frozen=True)
class Subscription:
    """A browser's `PushSubscription`: where to send and the keys to encrypt for."""

    endpoint: str
    p256dh: bytes
    auth: bytes


def b64url_decode(value: str) -> bytes:
    """Subscriptions and keys travel as unpadded base64url; some tools add padding anyway."""
    text = value.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_vapid_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM, base64url DER, or the base64url raw 32-byte scalar."""
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key: Any = load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text)
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = load_der_private_key(raw, password=None)
    except (ValueError, TypeError, binascii.Error) as error:
        raise _config_error(
            f"CAIRN_WEBPUSH_VAPID_PRIVATE_KEY is not a usable key ({error}): give the PEM or the "
            "base64url private key printed by `web-push generate-vapid-keys`"
        ) from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise _config_error("CAIRN_WEBPUSH_VAPID_PRIVATE_KEY must be a P-256 (prime256v1) key")
    return key


def _config_error(message: str) -> ProviderError:
    return ProviderError(PROVIDER, message, retryable=False, code="config")


def topic_for(idempotency_key: str) -> str:
    """A Topic (≤32 chars of the base64url alphabet) that is the same for every retry of a send.

    Hashed, because the key may hold characters the header forbids and is usually longer.
    """
    return b64url(hashlib.sha256(idempotency_key.encode()).digest())[:32]


def origin(url: str) -> str:
    """`scheme://host[:port]`: the VAPID audience is the push service's origin, not the URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def subscription_of(message: OutgoingMessage) -> Subscription:
    """The endpoint from `to`, the keys from `extra["keys"]` as the browser's `toJSON()` gives.

    Missing keys are our bug (the caller forgot them); keys that do not decode mean the stored
    subscription is unusable, which is the recipient's address being dead.
    """
    keys = message.extra.get("keys")
    if not isinstance(keys, dict) or not keys.get("p256dh") or not keys.get("auth"):
        raise ProviderError(
            PROVIDER, "web push needs the subscription keys: pass the subscription's "
            "{p256dh, auth} in message.extra['keys']", retryable=False, code="missing_keys",
        )
    try:
        p256dh = b64url_decode(str(keys["p256dh"]))
        auth = b64url_decode(str(keys["auth"]))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except (ValueError, binascii.Error) as error:
        raise ProviderError(
            PROVIDER, f"subscription keys do not decode: {error}", retryable=False,
            invalid_recipient=True, code="invalid_subscription",
        ) from error
    if len(auth) != 16:
        raise ProviderError(
            PROVIDER, f"subscription auth secret is {len(auth)} bytes, not 16", retryable=False,
            invalid_recipient=True, code="invalid_subscription",
        )
    return Subscription(message.to, p256dh, auth)


def encrypt(payload: bytes, subscription: Subscription) -> bytes:
    """RFC 8291 `aes128gcm`: a fresh sender key pair and salt per message, one record."""
    sender = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        payload, salt=os.urandom(16), private_key=sender, dh=subscription.p256dh,
        auth_secret=subscription.auth, version="aes128gcm", rs=MAX_BODY,
    )
    return body


class WebPushProvider(HttpClientHolder):
    """Sends one push message per message to `message.to`, the subscription endpoint."""

    name = PROVIDER
    channels: tuple[str, ...] = ("web_push",)
    idempotent = False

    def __init__(
        self, settings: WebPushSettings, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._hold_client(client)
        self._timeout = httpx.Timeout(settings.timeout)
        self._key: ec.EllipticCurvePrivateKey | None = None

    @property
    def vapid_key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            secret = self.settings.vapid_private_key
            if secret is None or not secret.get_secret_value().strip():
                raise _config_error(
                    "no VAPID key: set CAIRN_WEBPUSH_VAPID_PRIVATE_KEY to the private half of "
                    "the applicationServerKey your site subscribes with"
                )
            self._key = load_vapid_key(secret.get_secret_value())
        return self._key

    @property
    def public_key(self) -> str:
        """The `applicationServerKey` browsers must subscribe with (base64url, uncompressed)."""
        point = self.vapid_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint)
        return b64url(point)

    def authorization(self, endpoint: str) -> str:
        """`vapid t=<JWT>, k=<public key>` for the endpoint's push service (RFC 8292)."""
        subject = self.settings.vapid_subject or ""
        if not subject.startswith(("mailto:", "https:")):
            raise _config_error(
                "CAIRN_WEBPUSH_VAPID_SUBJECT must be a contact URI the push service can use to "
                f"reach you, 'mailto:ops@example.com' or an https URL (got {subject!r})"
            )
        claims = {"aud": origin(endpoint), "exp": int(time.time()) + VAPID_LIFETIME,
                  "sub": subject}
        token = jwt.encode(claims, self.vapid_key, algorithm="ES256", headers={"typ": "JWT"})
        return f"vapid t={token}, k={self.public_key}"

    def payload(self, message: OutgoingMessage) -> bytes:
        """What the service worker's `push` event reads with `event.data.json()`."""
        title = message.parts.get("title", "")
        body = message.parts.get("body", "")
        if not title and not body:
            raise ProviderError(
                PROVIDER, "the push has no text: the template must render a `title` or a `body` "
                "part for the web_push channel", retryable=False, code="empty_body",
            )
        content: dict[str, str] = {"title": title, "body": body}
        if message.parts.get("url"):
            content["url"] = message.parts["url"]
        data = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) > MAX_PLAINTEXT:
            raise ProviderError(
                PROVIDER, f"the push payload is {len(data)} bytes; push services take at most "
                f"{MAX_PLAINTEXT} before encryption: shorten the title/body", retryable=False,
                code="payload_too_large",
            )
        return data

    def urgency(self, message: OutgoingMessage) -> str:
        """`extra["urgency"]` when valid; otherwise transactional pushes wake the device
        (`high`) and marketing waits for a convenient moment (`normal`)."""
        wanted = message.extra.get("urgency")
        if wanted in URGENCIES:
            return str(wanted)
        return "high" if message.category == "transactional" else "normal"

    def _check_endpoint(self, endpoint: str) -> None:
        scheme = urlsplit(endpoint).scheme
        if scheme == "https" or (scheme == "http" and self.settings.allow_http):
            return
        raise ProviderError(
            PROVIDER, f"the subscription endpoint {endpoint!r} is not an https URL; push "
            "services only use https", retryable=False, invalid_recipient=True,
            code="invalid_subscription",
        )

    async def send(self, message: OutgoingMessage) -> Receipt:
        self._check_endpoint(message.to)
        subscription = subscription_of(message)
        body = encrypt(self.payload(message), subscription)
        headers = {
            "TTL": str(self.settings.ttl),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.authorization(subscription.endpoint),
            "Urgency": self.urgency(message),
            "Topic": topic_for(message.idempotency_key),
        }
        try:
            response = await self._client.post(
                subscription.endpoint, content=body, headers=headers, timeout=self._timeout,
            )
        except httpx.TransportError as error:
            failure = error_from_transport(PROVIDER, error)
            log.warning("webpush.send_failed", key=message.idempotency_key,
                        outcome_unknown=failure.outcome_unknown, error=str(failure))
            raise failure from error
        if response.is_success:
            location = response.headers.get("location")
            log.info("webpush.sent", key=message.idempotency_key, location=location,
                     push_service=origin(subscription.endpoint))
            return Receipt(PROVIDER, location, {
                "status": response.status_code, "location": location,
                "ttl": response.headers.get("ttl"), "topic": headers["Topic"],
            })
        failure = classify_error(response)
        log.warning("webpush.rejected", key=message.idempotency_key,
                    status=response.status_code, code=failure.code,
                    retryable=failure.retryable, invalid_recipient=failure.invalid_recipient)
        raise failure


def classify_error(response: httpx.Response) -> ProviderError:
    """RFC 8030 statuses: 404/410 the subscription is gone (drop it), 413 the payload is too
    big, 401/403 our VAPID identity is refused; 429 and 5xx retry."""
    status = response.status_code
    text = response.text[:300] or response.reason_phrase
    if status in (404, 410):
        return error_from_response(
            PROVIDER, response, f"subscription expired or unsubscribed ({text})",
            invalid_recipient=True, code="subscription_gone",
        )
    if status == 413:
        return error_from_response(PROVIDER, response, f"payload too large ({text})",
                                   code="payload_too_large")
    if status in (401, 403):
        return error_from_response(
            PROVIDER, response, f"VAPID authorization refused ({text}): the subscription was "
            "made with another applicationServerKey, or CAIRN_WEBPUSH_VAPID_SUBJECT/clock is "
            "wrong", code="vapid_rejected",
        )
    return error_from_response(PROVIDER, response, text, code=str(status))
