"""Outgoing webhooks: a journey's `webhook` step calling a customer's own endpoint, signed.

Every request carries:

- `Idempotency-Key: <key>`: the key is stable across every retry of one step, so a receiver that
  de-duplicates by it (as it should) processes the call once. That is what makes `idempotent =
  True` honest: after a read timeout the outcome is unknown, and the retry re-sends the SAME key
  (with a fresh timestamp and signature), which the receiver recognises;
- `X-Cairn-Timestamp: <unix seconds>` and `X-Cairn-Signature: v1=<hex>`, an HMAC-SHA256 with the
  shared signing secret over `"<timestamp>.<body>"`. Signing the timestamp with the body lets a
  receiver reject a captured request replayed later (see `verify_signature`, which receivers may
  copy: it only needs the standard library).

Redirects are never followed: a signed POST re-issued to wherever a `Location` points would
hand the signature and the data to an endpoint nobody configured, so a 3xx is a permanent error
naming the `Location` to put in the journey instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn import __version__
from cairn.channels.base import (
    HttpClientHolder,
    ProviderError,
    error_from_transport,
    retry_after_seconds,
)
from cairn.log import get_logger

log = get_logger(__name__)

NAME = "webhook"
SIGNATURE_VERSION = "v1"
MAX_REPLY_BYTES = 1024 * 1024
DEFAULT_TOLERANCE_S = 300.0
# 425 Too Early is a receiver saying "not yet": retrying later is the point of it.
_RETRYABLE_4XX = frozenset({408, 425, 429})
_RESERVED_HEADERS = frozenset({"idempotency-key", "x-cairn-timestamp", "x-cairn-signature"})


class WebhookSettings(BaseSettings):
    """`CAIRN_WEBHOOK_*`. Without a signing secret nothing is called: an unsigned webhook lets
    anyone who learns the URL forge journey events, so the receiver must have a secret to check."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_WEBHOOK_", extra="ignore")

    signing_secret: SecretStr | None = None
    timeout: float = 10.0
    user_agent: str = f"Cairn-Webhooks/{__version__}"


@dataclass(frozen=True)
class WebhookReply:
    """What the receiver answered on success: `json` when the body parsed as JSON, else `text`.

    `truncated` marks a body cut at `MAX_REPLY_BYTES` (kept as text, since half a JSON document
    does not parse): a journey may branch on a reply, but must not be able to exhaust memory.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    text: str | None = None
    truncated: bool = False


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `"<timestamp>.<body>"`: the `v1` scheme."""
    key = secret.encode() if isinstance(secret, str) else secret
    message = str(timestamp).encode() + b"." + body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int | None,
    body: str | bytes,
    header: str | None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `X-Cairn-Signature` (`header`) signs this body at this `X-Cairn-Timestamp`.

    False when either header is missing or malformed, when the timestamp is more than
    `tolerance_s` away from `now` (a replay of an old capture, or a badly skewed clock), or when
    no `v1=` entry matches. Several comma-separated entries are accepted so a sender can sign
    with an old and a new secret while the secret is rotated. Comparison is constant-time.
    """
    if not header or timestamp is None:
        return False
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, sent_at, raw)
    candidates = [
        part.strip()[len(SIGNATURE_VERSION) + 1:]
        for part in header.split(",")
        if part.strip().startswith(f"{SIGNATURE_VERSION}=")
    ]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def _is_json(body: bytes) -> bool:
    if not body:
        return False
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


class WebhookCaller(HttpClientHolder):
    """Calls journey-configured URLs with signed, idempotency-keyed requests.

    Not a `Provider` (there is no recipient or channel), but it classifies failures with the
    same `ProviderError` so the delivery activity's retry and exactly-once rules apply unchanged.
    """

    name = NAME
    idempotent = True

    def __init__(
        self, settings: WebhookSettings | None = None, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings or WebhookSettings()
        self._hold_client(client, timeout=httpx.Timeout(self.settings.timeout),
                          follow_redirects=False)

    def _secret(self) -> str:
        if self.settings.signing_secret is None:
            raise ProviderError(
                NAME,
                "no signing secret: set CAIRN_WEBHOOK_SIGNING_SECRET and give the same value to "
                "the receiver, which checks X-Cairn-Signature with it",
                retryable=False, code="not_configured",
            )
        return self.settings.signing_secret.get_secret_value()

    async def call(
        self,
        method: str,
        url: str,
        body: str | bytes | None,
        headers: dict[str, str],
        idempotency_key: str,
    ) -> WebhookReply:
        """Send one signed request; return the 2xx reply or raise a classified `ProviderError`."""
        secret = self._secret()
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ProviderError(
                NAME, f"{url!r} is not an http(s) URL: fix the webhook step's url",
                retryable=False, code="bad_url",
            )
        raw = body.encode() if isinstance(body, str) else (body or b"")
        timestamp = int(time.time())
        # Ours win: a step's headers must not be able to replace the key or the signature.
        sent = {k: v for k, v in headers.items() if k.lower() not in _RESERVED_HEADERS}
        lowered = {k.lower() for k in sent}
        if "content-type" not in lowered and _is_json(raw):
            sent["Content-Type"] = "application/json"
        if "user-agent" not in lowered:
            sent["User-Agent"] = self.settings.user_agent
        sent["Idempotency-Key"] = idempotency_key
        sent["X-Cairn-Timestamp"] = str(timestamp)
        sent["X-Cairn-Signature"] = f"{SIGNATURE_VERSION}={sign(secret, timestamp, raw)}"

        request = self._client.build_request(
            method.upper(), parsed, content=raw or None, headers=sent,
            timeout=httpx.Timeout(self.settings.timeout),
        )
        try:
            response = await self._client.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as error:
            failure = error_from_transport(NAME, error)
            log.warning("webhook.transport_error", url=_loggable(parsed), method=method,
                        outcome_unknown=failure.outcome_unknown, error=repr(error))
            raise failure from error
        try:
            return await self._classify(response, parsed, method)
        finally:
            await response.aclose()

    async def _classify(
        self, response: httpx.Response, url: httpx.URL, method: str,
    ) -> WebhookReply:
        status = response.status_code
        content, truncated = await _read_capped(response)
        if 200 <= status < 300:
            log.info("webhook.delivered", url=_loggable(url), method=method, status=status,
                     bytes=len(content), truncated=truncated)
            return _reply(response, content, truncated)
        text = content[:300].decode(errors="replace")
        if 300 <= status < 400:
            location = response.headers.get("location", "(no Location header)")
            raise ProviderError(
                NAME,
                f"HTTP {status} redirect to {location}: redirects are not followed (a signed "
                "request must not go where nobody configured); put that URL in the step",
                retryable=False, status=status, code="redirect",
            )
        retryable = status in _RETRYABLE_4XX or status >= 500
        log.warning("webhook.rejected", url=_loggable(url), method=method, status=status,
                    retryable=retryable)
        raise ProviderError(
            NAME, f"HTTP {status} from {_loggable(url)}: {text}",
            retryable=retryable, status=status,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    """Up to `MAX_REPLY_BYTES` of the body; a stream cut after the status line keeps what came
    (the receiver already answered, so the call's outcome is known)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                return b"".join(chunks)[:MAX_REPLY_BYTES], True
    except httpx.TransportError as error:
        log.warning("webhook.reply_cut", status=response.status_code, error=repr(error))
        return b"".join(chunks), True
    return b"".join(chunks), False


def _reply(response: httpx.Response, content: bytes, truncated: bool) -> WebhookReply:
    headers = dict(response.headers.items())
    charset = response.charset_encoding or "utf-8"
    if not truncated and content:
        try:
            return WebhookReply(response.status_code, headers, json=json.loads(content))
        except ValueError:
            pass
    text = content.decode(charset, errors="replace") if content else None
    return WebhookReply(response.status_code, headers, text=text, truncated=truncated)


def _loggable(url: httpx.URL) -> str:
    """The URL without query or credentials: customers put tokens in webhook query strings."""
    return str(url.copy_with(query=None, userinfo=b""))
