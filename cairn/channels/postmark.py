"""Email through Postmark's HTTP API, and Postmark's delivery webhooks read as `FeedbackEvent`s.

Postmark answers every error with a JSON body `{ErrorCode, Message}`; the HTTP status alone does
not say whether the recipient is dead (422 covers both an inactive recipient and a missing sender
signature), so the error code decides `invalid_recipient`. Postmark has no idempotency key, so the
provider is not idempotent: an attempt whose outcome is unknown is not sent again blindly. The key
travels in `Metadata` (`cairn_key`), so a webhook can be matched, and `find_sent` asks Postmark's
outbound message search (`GET /messages/outbound?metadata_cairn_key=...`) whether it accepted it.

Postmark does not sign webhooks; it can put HTTP Basic credentials in the webhook URL, which
`parse_postmark_webhook` checks when `CAIRN_POSTMARK_WEBHOOK_USERNAME` is set.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import (
    FeedbackEvent,
    FeedbackRejected,
    HttpClientHolder,
    OutgoingMessage,
    ProviderError,
    Receipt,
    error_from_transport,
    retry_after_seconds,
)
from cairn.log import get_logger

log = get_logger(__name__)

PROVIDER = "postmark"

INACTIVE_RECIPIENT = 406
"""The address hard bounced, complained or was suppressed (unsubscribed) on this stream."""
INVALID_EMAIL_REQUEST = 300
"""The request is not a valid email: a bad `To` (dead recipient) or a bad `From`/body (our bug)."""
BAD_SERVER_TOKEN = 10
"""Missing or wrong `X-Postmark-Server-Token`."""
RETRYABLE_CODES = frozenset({100, 429})
"""Maintenance and rate limiting: Postmark will take the same request later."""

HARD_BOUNCE_TYPES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
"""Bounce types after which the address will never take mail (Postmark deactivates it)."""


class PostmarkSettings(BaseSettings):
    """Postmark server credentials and sending defaults (`CAIRN_POSTMARK_*`)."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_POSTMARK_", extra="ignore")

    server_token: SecretStr | None = None
    from_address: str | None = None
    message_stream: str = "outbound"
    broadcast_stream: str = "broadcast"
    base_url: str = "https://api.postmarkapp.com"
    timeout: float = 10.0
    track_opens: bool = True
    track_links: str = "HtmlAndText"
    webhook_username: str | None = None
    webhook_password: SecretStr | None = None


class PostmarkProvider(HttpClientHolder):
    """Sends one email per message with `POST /email`."""

    name = PROVIDER
    channels: tuple[str, ...] = ("email",)
    idempotent = False

    def __init__(
        self, settings: PostmarkSettings, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._hold_client(client)
        self._timeout = httpx.Timeout(settings.timeout)

    def stream_for(self, message: OutgoingMessage) -> str:
        """Marketing goes out on the broadcast stream so it never harms transactional reputation."""
        if message.category == "marketing":
            return self.settings.broadcast_stream
        return self.settings.message_stream

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The `/email` body: metadata carries the idempotency key so webhooks can be matched."""
        if not self.settings.from_address:
            raise ProviderError(
                PROVIDER, "no sender: set CAIRN_POSTMARK_FROM_ADDRESS to a confirmed Postmark "
                "sender signature", retryable=False, code="config",
            )
        text = message.parts.get("body") or ""
        html = message.parts.get("html") or ""
        if not text and not html:
            raise ProviderError(
                PROVIDER, "the email has no body: the template must render a `body` or an "
                "`html` part", retryable=False, code="empty_body",
            )
        body: dict[str, Any] = {
            "From": self.settings.from_address,
            "To": message.to,
            "Subject": message.parts.get("subject", ""),
            "MessageStream": self.stream_for(message),
            "Metadata": {**message.metadata, "cairn_key": message.idempotency_key},
            "TrackOpens": self.settings.track_opens,
            "TrackLinks": self.settings.track_links,
        }
        if text:
            body["TextBody"] = text
        if html:
            body["HtmlBody"] = html
        if message.headers:
            body["Headers"] = [{"Name": k, "Value": v} for k, v in message.headers.items()]
        journey = message.metadata.get("journey")
        if journey:
            body["Tag"] = journey
        return body

    async def send(self, message: OutgoingMessage) -> Receipt:
        token = self.settings.server_token.get_secret_value() if self.settings.server_token else ""
        if not token:
            raise ProviderError(
                PROVIDER, "no server token: set CAIRN_POSTMARK_SERVER_TOKEN to the Server API "
                "token of your Postmark server", retryable=False, code=str(BAD_SERVER_TOKEN),
            )
        body = self.payload(message)
        headers = {
            "X-Postmark-Server-Token": token,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        url = f"{self.settings.base_url.rstrip('/')}/email"
        try:
            response = await self._client.post(
                url, json=body, headers=headers, timeout=self._timeout,
            )
        except httpx.TransportError as error:
            failure = error_from_transport(PROVIDER, error)
            log.warning("postmark.send_failed", key=message.idempotency_key,
                        outcome_unknown=failure.outcome_unknown, error=str(failure))
            raise failure from error
        answer = _json(response)
        if response.is_success and answer.get("ErrorCode", 0) == 0:
            message_id = answer.get("MessageID")
            log.info("postmark.sent", key=message.idempotency_key, message_id=message_id,
                     stream=body["MessageStream"])
            return Receipt(PROVIDER, str(message_id) if message_id else None, answer)
        failure = classify_error(response, answer)
        log.warning("postmark.rejected", key=message.idempotency_key, status=response.status_code,
                    code=failure.code, retryable=failure.retryable,
                    invalid_recipient=failure.invalid_recipient)
        raise failure


    async def find_sent(self, message: OutgoingMessage) -> Receipt | None:
        """Whether Postmark accepted this message (an attempt whose answer was lost): its
        outbound message search filtered by the `cairn_key` metadata the send carried."""
        token = self.settings.server_token.get_secret_value() if self.settings.server_token else ""
        url = f"{self.settings.base_url.rstrip('/')}/messages/outbound"
        params = {"count": "1", "offset": "0", "recipient": message.to,
                  "metadata_cairn_key": message.idempotency_key}
        try:
            response = await self._client.get(
                url, params=params, timeout=self._timeout,
                headers={"X-Postmark-Server-Token": token, "Accept": "application/json"},
            )
        except httpx.TransportError as error:
            raise ProviderError(PROVIDER, f"message search: no answer: {error!r}",
                                retryable=True) from error
        answer = _json(response)
        if not response.is_success:
            raise classify_error(response, answer)
        found = [m for m in answer.get("Messages") or [] if isinstance(m, dict)]
        if not found:
            return None
        accepted = found[0]
        message_id = accepted.get("MessageID")
        log.info("postmark.found_sent", key=message.idempotency_key, message_id=message_id)
        return Receipt(PROVIDER, str(message_id) if message_id else None,
                       {"MessageID": message_id, "Status": accepted.get("Status")},
                       accepted_at=_search_time(accepted))


def _json(response: httpx.Response) -> dict[str, Any]:
    """Postmark's answer as a dict; proxies and load balancers may answer with HTML or nothing."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def classify_error(response: httpx.Response, answer: dict[str, Any]) -> ProviderError:
    """Postmark's `ErrorCode` refines the HTTP status: it alone tells a dead recipient from our
    own misconfiguration, both of which arrive as 422."""
    status = response.status_code
    raw_code = answer.get("ErrorCode")
    code = raw_code if isinstance(raw_code, int) else None
    text = str(answer.get("Message") or response.text[:300] or response.reason_phrase)
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    retryable = status in (408, 429) or status >= 500 or code in RETRYABLE_CODES
    invalid_recipient = False
    if code == BAD_SERVER_TOKEN or status == 401:
        text = (f"Postmark rejected the server token ({text}): set CAIRN_POSTMARK_SERVER_TOKEN "
                "to the Server API token of the server you send from")
        retryable = False
    elif code == INACTIVE_RECIPIENT:
        invalid_recipient = True
    elif code == INVALID_EMAIL_REQUEST:
        invalid_recipient = _names_recipient(text)
    return ProviderError(
        PROVIDER, f"HTTP {status}, ErrorCode {raw_code}: {text}", retryable=retryable,
        status=status, retry_after=retry_after, invalid_recipient=invalid_recipient,
        code=str(code) if code is not None else None,
    )


def _names_recipient(message: str) -> bool:
    """ErrorCode 300 covers every invalid request; only a bad `To` means the address is dead.
    A bad `From` or a missing body is a configuration or template bug, not the contact's fault."""
    lowered = message.lower()
    return "'to'" in lowered or "recipient" in lowered


# --------------------------------------------------------------------------- webhooks


def check_basic_auth(authorization: str | None, settings: PostmarkSettings) -> None:
    """Postmark sends the credentials embedded in the webhook URL as HTTP Basic auth."""
    if not settings.webhook_username:
        return
    if not authorization or not authorization.lower().startswith("basic "):
        raise FeedbackRejected("Postmark webhook without Basic credentials: put "
                               "https://USER:PASSWORD@host/... in the Postmark webhook URL")
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise FeedbackRejected("Postmark webhook with malformed Basic credentials") from error
    username, sep, password = decoded.partition(":")
    expected = settings.webhook_password.get_secret_value() if settings.webhook_password else ""
    user_ok = hmac.compare_digest(username.encode(), settings.webhook_username.encode())
    password_ok = hmac.compare_digest(password.encode(), expected.encode())
    if not (sep and user_ok and password_ok):
        raise FeedbackRejected("Postmark webhook credentials do not match "
                               "CAIRN_POSTMARK_WEBHOOK_USERNAME / CAIRN_POSTMARK_WEBHOOK_PASSWORD")


_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def _search_time(found: dict[str, Any]) -> datetime | None:
    """When Postmark received a message found by search; None when it does not say clearly."""
    try:
        return _timestamp(found, "ReceivedAt")
    except FeedbackRejected:
        return None


def _timestamp(body: dict[str, Any], field: str) -> datetime | None:
    """Postmark's ISO 8601 times carry up to seven fractional digits; Python keeps six."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FeedbackRejected(f"Postmark webhook field {field} is not a timestamp: {value!r}")
    try:
        return datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", value.strip()))
    except ValueError as error:
        raise FeedbackRejected(
            f"Postmark webhook field {field} is not an ISO 8601 time: {value!r}"
        ) from error


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    raw = body.get("Metadata") or {}
    if not isinstance(raw, dict):
        raise FeedbackRejected("Postmark webhook Metadata is not an object")
    return {str(k): str(v) for k, v in raw.items() if v is not None}


def _suppression_kind(reason: str | None) -> tuple[str, bool]:
    """A suppression names why: on broadcast streams it is the only bounce/complaint report."""
    if reason == "HardBounce":
        return "bounced", True
    if reason == "SpamComplaint":
        return "complained", True
    return "unsubscribed", False


def parse_postmark_webhook(
    body: dict[str, Any], authorization: str | None, settings: PostmarkSettings,
) -> FeedbackEvent:
    """One Postmark webhook POST (any RecordType) in Cairn's words."""
    check_basic_auth(authorization, settings)
    if not isinstance(body, dict):
        raise FeedbackRejected("Postmark webhook body is not a JSON object")
    record = body.get("RecordType")
    message_id = body.get("MessageID")
    common: dict[str, Any] = {
        "provider": PROVIDER,
        "channel": "email",
        "provider_message_id": str(message_id) if message_id else None,
        "metadata": _metadata(body),
    }
    tracking = {"platform": body.get("Platform"), "user_agent": body.get("UserAgent")}
    if record == "Delivery":
        return FeedbackEvent(
            kind="delivered", recipient=body.get("Recipient"),
            occurred_at=_timestamp(body, "DeliveredAt"),
            detail={"details": body.get("Details")}, **common,
        )
    if record == "Bounce":
        bounce_type = body.get("Type")
        return FeedbackEvent(
            kind="bounced", recipient=body.get("Email"),
            occurred_at=_timestamp(body, "BouncedAt"),
            permanent=bounce_type in HARD_BOUNCE_TYPES,
            detail={"bounce_type": bounce_type, "type_code": body.get("TypeCode"),
                    "description": body.get("Description"), "details": body.get("Details"),
                    "inactive": body.get("Inactive")},
            **common,
        )
    if record == "SpamComplaint":
        return FeedbackEvent(
            kind="complained", recipient=body.get("Email"),
            occurred_at=_timestamp(body, "BouncedAt"), permanent=True,
            detail={"details": body.get("Details")}, **common,
        )
    if record == "Open":
        return FeedbackEvent(
            kind="opened", recipient=body.get("Recipient"),
            occurred_at=_timestamp(body, "ReceivedAt"),
            detail={"first_open": body.get("FirstOpen"), **tracking}, **common,
        )
    if record == "Click":
        return FeedbackEvent(
            kind="clicked", recipient=body.get("Recipient"),
            occurred_at=_timestamp(body, "ReceivedAt"),
            detail={"url": body.get("OriginalLink"), "click_location": body.get("ClickLocation"),
                    **tracking},
            **common,
        )
    if record == "SubscriptionChange":
        detail = {"origin": body.get("Origin"), "reason": body.get("SuppressionReason"),
                  "stream": body.get("MessageStream")}
        if body.get("SuppressSending") is True:
            kind, permanent = _suppression_kind(body.get("SuppressionReason"))
        else:
            kind, permanent = "resubscribed", False
        return FeedbackEvent(
            kind=kind, recipient=body.get("Recipient"), permanent=permanent,
            occurred_at=_timestamp(body, "ChangedAt"), detail=detail, **common,
        )
    raise FeedbackRejected(
        f"Postmark webhook RecordType {record!r} is not handled: enable only Delivery, Bounce, "
        "SpamComplaint, Open, Click and SubscriptionChange on this webhook URL"
    )
