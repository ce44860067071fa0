"""SMS and WhatsApp through Twilio's Messages API, plus its status callbacks and inbound replies.

Sending is one form-encoded POST per message. Twilio does not de-duplicate by any key we could
send, so the provider is not idempotent: an attempt whose answer never came back is never sent
again (the delivery activity decides that from `outcome_unknown`).

Twilio reports back by form POSTs signed with `X-Twilio-Signature`: status callbacks
(delivered, undelivered, read) go to the `StatusCallback` URL sent with each message, and replies
go to the number's or Messaging Service's incoming-message webhook. The parsers here turn both
into `FeedbackEvent`s; the HTTP endpoints that receive them live with the API, not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import (
    FeedbackEvent,
    FeedbackRejected,
    HttpClientHolder,
    OutgoingMessage,
    ProviderError,
    Receipt,
    error_from_response,
    error_from_transport,
)
from cairn.log import get_logger

log = get_logger(__name__)

PROVIDER = "twilio"
WHATSAPP_PREFIX = "whatsapp:"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# Twilio also sends from alphanumeric sender IDs: 1-11 letters, digits and spaces, one a letter.
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")

# Send-time error codes that say the number itself cannot be messaged: the contact is suppressed.
# 21211 invalid To, 21614 not a mobile number, 21635 landline, 21610 the recipient replied STOP.
INVALID_RECIPIENT_CODES = frozenset({"21211", "21614", "21635", "21610"})
UNSUBSCRIBED_CODE = "21610"

# Which setting to fix when Twilio rejects the request for a configuration reason.
_CONFIG_HINTS: dict[str, str] = {
    "20003": "Twilio rejected the credentials: check CAIRN_TWILIO_ACCOUNT_SID and "
             "CAIRN_TWILIO_AUTH_TOKEN (the Auth Token of that account, or a rotated one)",
    "20404": "Twilio does not know this account or resource: check CAIRN_TWILIO_ACCOUNT_SID",
    "21606": "the sender is not a Twilio number able to send SMS on this account: "
             "check CAIRN_TWILIO_FROM_NUMBER",
    "21212": "the sender is not a valid phone number or sender ID: check CAIRN_TWILIO_FROM_NUMBER",
    "63007": "Twilio has no WhatsApp sender for this From address: check "
             "CAIRN_TWILIO_WHATSAPP_FROM (and, on the sandbox, that it is activated)",
}

# Delivery-failure codes in a status callback that mean the number is dead for this channel.
# 30005: unknown or inactive number; 30006: landline or unreachable carrier (Twilio's advice is
# not to retry that destination); 21610/21211/21614/21635 can surface here when a Messaging
# Service queued the message first; 63003: the WhatsApp address is inactive or invalid.
# 30003 (handset unreachable) is deliberately absent: Twilio describes it as usually temporary
# (phone off, no signal), so one failure must not suppress the contact.
PERMANENT_FAILURE_CODES = frozenset(
    {"30005", "30006", "21610", "21211", "21614", "21635", "63003"}
)

# Twilio's default English opt-out and opt-in keywords; the whole trimmed body must match.
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

# Callback statuses worth reporting; the rest (queued, accepted, scheduled, sending, sent,
# canceled, ...) are steps on the way and carry no news for a journey.
_STATUS_KINDS = {"delivered": "delivered", "undelivered": "failed", "failed": "failed",
                 "read": "opened"}


class TwilioSettings(BaseSettings):
    """Twilio account and senders, from `CAIRN_TWILIO_*` environment variables.

    SMS goes out through `messaging_service_sid` when set (Twilio then picks the sender and
    applies the service's opt-out handling), otherwise from `from_number`. WhatsApp goes out
    from `whatsapp_from`, or through the Messaging Service when that has a WhatsApp sender.
    `status_callback_url` is Cairn's public URL for Twilio's delivery status callbacks.
    """

    model_config = SettingsConfigDict(env_prefix="CAIRN_TWILIO_", extra="ignore")

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    status_callback_url: str | None = None
    base_url: str = "https://api.twilio.com"
    timeout: float = 10.0

    @field_validator("from_number")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.strip()
        if not (_E164.match(value) or _ALPHANUMERIC_SENDER.match(value)):
            raise ValueError(
                f"CAIRN_TWILIO_FROM_NUMBER={value!r} is neither an E.164 number such as "
                "+14155550123 nor an alphanumeric sender ID (1-11 letters and digits)"
            )
        return value

    @field_validator("whatsapp_from")
    @classmethod
    def _whatsapp_sender(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        number = strip_whatsapp(value.strip())
        if not _E164.match(number):
            raise ValueError(
                f"CAIRN_TWILIO_WHATSAPP_FROM={value!r} is not a WhatsApp sender: use "
                "whatsapp:+14155238886 (or the E.164 number alone)"
            )
        return WHATSAPP_PREFIX + number

    @field_validator("messaging_service_sid", "status_callback_url")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None


def strip_whatsapp(address: str) -> str:
    """The bare number of a Twilio address (`whatsapp:+1555...` becomes `+1555...`)."""
    if address[: len(WHATSAPP_PREFIX)].lower() == WHATSAPP_PREFIX:
        return address[len(WHATSAPP_PREFIX):]
    return address


def _is_whatsapp(*addresses: str | None) -> bool:
    return any(a is not None and a.lower().startswith(WHATSAPP_PREFIX) for a in addresses)


class TwilioProvider(HttpClientHolder):
    """Sends SMS and WhatsApp messages with Twilio's Messages resource."""

    name = PROVIDER
    channels: tuple[str, ...] = ("sms", "whatsapp")
    idempotent = False

    def __init__(self, settings: TwilioSettings, client: httpx.AsyncClient | None = None) -> None:
        if not settings.account_sid or not settings.auth_token.get_secret_value():
            raise ValueError(
                "Twilio needs CAIRN_TWILIO_ACCOUNT_SID and CAIRN_TWILIO_AUTH_TOKEN "
                "(Twilio Console > Account > API keys & tokens)"
            )
        self._settings = settings
        self._timeout = httpx.Timeout(settings.timeout)
        self._hold_client(client, timeout=self._timeout)
        self._url = (
            f"{settings.base_url.rstrip('/')}/2010-04-01/Accounts/"
            f"{settings.account_sid}/Messages.json"
        )

    async def send(self, message: OutgoingMessage) -> Receipt:
        form = self._form(message)
        try:
            response = await self._client.post(
                self._url,
                data=form,
                auth=(self._settings.account_sid, self._settings.auth_token.get_secret_value()),
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TransportError as error:
            failure = error_from_transport(PROVIDER, error)
            log.warning("twilio_send_no_answer", channel=message.channel,
                        outcome_unknown=failure.outcome_unknown, error=repr(error))
            raise failure from error
        if response.is_success:
            return self._receipt(message, response)
        failure = _classify(response)
        log.warning("twilio_send_failed", channel=message.channel, status=response.status_code,
                    code=failure.code, retryable=failure.retryable,
                    invalid_recipient=failure.invalid_recipient)
        raise failure

    async def find_sent(self, message: OutgoingMessage) -> Receipt | None:
        """Whether Twilio accepted this message (an attempt whose answer was lost): the Messages
        list for its recipient (and sender), newest first, matched by body and created no
        earlier than `LOOKUP_SLACK` before the send was planned.

        Through a Messaging Service the list cannot be filtered by sender (Twilio picks the
        number from the service's pool, after answering), and the service may have rewritten
        the body's punctuation and spacing (Smart Encoding): bodies are compared on their
        letters and digits (`_comparable_body`), and a message another service sent is not
        taken."""
        form = self._form(message)
        params = {"To": form["To"], "PageSize": "50"}
        if "From" in form:
            params["From"] = form["From"]
        try:
            response = await self._client.get(
                self._url, params=params,
                auth=(self._settings.account_sid, self._settings.auth_token.get_secret_value()),
                headers={"Accept": "application/json"}, timeout=self._timeout,
            )
        except httpx.TransportError as error:
            raise ProviderError(PROVIDER, f"message list: no answer: {error!r}",
                                retryable=True) from error
        if not response.is_success:
            raise _classify(response)
        try:
            listed = response.json().get("messages") or []
        except (ValueError, AttributeError):
            listed = []
        planned = message.extra.get("now")
        service = form.get("MessagingServiceSid")
        wanted = _comparable_body(form.get("Body", ""))
        for found in listed:
            if not isinstance(found, dict) \
                    or _comparable_body(found.get("body") or "") != wanted:
                continue
            if service is not None and found.get("messaging_service_sid") not in (None, service):
                continue  # the same text to the same number through another service
            created = _twilio_time(found.get("date_created"))
            if isinstance(planned, datetime) and created is not None \
                    and created < planned - LOOKUP_SLACK:
                continue  # the same text sent on an earlier day
            log.info("twilio_found_sent", channel=message.channel, sid=found.get("sid"))
            kept = {key: found[key] for key in _KEPT_FIELDS if key in found}
            return Receipt(PROVIDER, found.get("sid"), kept, accepted_at=created)
        return None

    def _form(self, message: OutgoingMessage) -> dict[str, str]:
        """The Messages resource parameters; a message no sender or body could carry fails here
        rather than as a Twilio 400, with the setting or template part to fix."""
        if message.channel not in self.channels:
            raise ProviderError(PROVIDER, f"Twilio does not send on channel {message.channel!r}",
                                retryable=False)
        settings = self._settings
        body = message.parts.get("body", "")
        media_url = message.parts.get("media_url", "")
        if not body.strip() and not media_url.strip():
            raise ProviderError(
                PROVIDER, f"the {message.channel} template rendered neither a body nor a "
                "media_url: give the template a body part", retryable=False,
            )
        form: dict[str, str] = {}
        if message.channel == "whatsapp":
            form["To"] = WHATSAPP_PREFIX + strip_whatsapp(message.to.strip())
            if settings.whatsapp_from:
                form["From"] = settings.whatsapp_from
            elif settings.messaging_service_sid:
                form["MessagingServiceSid"] = settings.messaging_service_sid
            else:
                raise ProviderError(
                    PROVIDER, "no WhatsApp sender configured: set CAIRN_TWILIO_WHATSAPP_FROM "
                    "(e.g. whatsapp:+14155238886) or CAIRN_TWILIO_MESSAGING_SERVICE_SID",
                    retryable=False,
                )
        else:
            form["To"] = message.to.strip()
            if settings.messaging_service_sid:
                form["MessagingServiceSid"] = settings.messaging_service_sid
            elif settings.from_number:
                form["From"] = settings.from_number
            else:
                raise ProviderError(
                    PROVIDER, "no SMS sender configured: set CAIRN_TWILIO_FROM_NUMBER or "
                    "CAIRN_TWILIO_MESSAGING_SERVICE_SID", retryable=False,
                )
        if body.strip():
            form["Body"] = body
        if media_url.strip():
            form["MediaUrl"] = media_url.strip()
        if settings.status_callback_url:
            form["StatusCallback"] = settings.status_callback_url
        return form

    def _receipt(self, message: OutgoingMessage, response: httpx.Response) -> Receipt:
        """Twilio took the message; an unreadable answer must not turn into a retry (that would
        send twice), so it still yields a receipt, without an id."""
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("sid"), str):
            log.warning("twilio_answer_without_sid", channel=message.channel,
                        status=response.status_code)
            return Receipt(PROVIDER, None, {"status_code": response.status_code})
        kept = {key: answer[key] for key in _KEPT_FIELDS if key in answer}
        log.info("twilio_sent", channel=message.channel, sid=answer["sid"],
                 status=answer.get("status"))
        return Receipt(PROVIDER, answer["sid"], kept)


def _comparable_body(body: str) -> str:
    """A body as a lookup compares it: its letters (with their accents) and digits, nothing
    else. Twilio's Smart Encoding (a Messaging Service setting) replaces typographic quotes,
    dashes, ellipses, bullets, math signs and unusual spaces with GSM-7 look-alikes before
    sending, and the Messages list shows the rewritten body; letters and digits it leaves
    alone."""
    return "".join(c for c in body if unicodedata.category(c)[0] in "LNM")


LOOKUP_SLACK = timedelta(minutes=10)
"""How long before a send was planned a listed message may have been created and still be it."""


def _twilio_time(value: object) -> datetime | None:
    """Twilio's RFC 2822 times (`Thu, 05 Dec 2026 01:00:00 +0000`); None when absent or bad."""
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


# What a receipt keeps of Twilio's answer: enough to trace the message, not its body.
_KEPT_FIELDS = ("sid", "status", "to", "from", "messaging_service_sid", "num_segments",
                "num_media", "date_created", "error_code", "error_message", "uri")


def _classify(response: httpx.Response) -> ProviderError:
    """Twilio's error body is {code, message, more_info, status}; the code decides whether the
    recipient is dead (suppress, keeping the code so 21610 reads as unsubscribed) or a setting
    is wrong (say which one)."""
    code: str | None = None
    text: str | None = None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        if answer.get("code") is not None:
            code = str(answer["code"])
        if isinstance(answer.get("message"), str):
            text = answer["message"]
    detail = f"{text} (Twilio error {code})" if code and text else text
    if response.status_code == 401 or code == "20003":
        return ProviderError(
            PROVIDER, f"HTTP {response.status_code}: {_CONFIG_HINTS['20003']}",
            retryable=False, status=response.status_code, code=code or "20003",
        )
    if code in _CONFIG_HINTS and response.status_code < 500:
        detail = f"{detail}: {_CONFIG_HINTS[code]}"
    if code == UNSUBSCRIBED_CODE:
        detail = f"{detail}: the recipient replied STOP and is unsubscribed from this sender"
    return error_from_response(
        PROVIDER, response, detail,
        invalid_recipient=code in INVALID_RECIPIENT_CODES and response.status_code < 500,
        code=code,
    )


# --------------------------------------------------------------------------- callbacks

# Callback parameters as a web framework hands them over: a plain dict, or a form multi-dict
# such as Starlette's `FormData` (whose values are typed `str | UploadFile`).
Form = Mapping[str, Any]


def compute_twilio_signature(url: str, params: Form, auth_token: str) -> str:
    """Twilio's X-Twilio-Signature for a form POST: base64 HMAC-SHA1, keyed by the Auth Token,
    of the full URL followed by every POST parameter, sorted by name, as name then value."""
    payload = url + "".join(name + value for name, value in _sorted_pairs(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def validate_twilio_signature(
    url: str, params: Form, signature: str, auth_token: str,
) -> bool:
    """Whether a callback really comes from Twilio.

    `url` must be the URL exactly as Twilio called it (scheme, host, path, query). Behind a
    proxy the port may or may not be part of what Twilio signed, so, like Twilio's own
    validators, the URL is also tried with the default port added and removed.
    """
    if not signature or not auth_token:
        return False
    given = signature.strip().encode()
    return any(
        hmac.compare_digest(compute_twilio_signature(candidate, params, auth_token).encode(),
                            given)
        for candidate in _url_variants(url)
    )


def _sorted_pairs(params: Form) -> list[tuple[str, str]]:
    """All (name, value) pairs sorted by name; a repeated name (a multi-dict such as Starlette's
    FormData) contributes every value, in sorted order, as Twilio's validators do."""
    multi = getattr(params, "multi_items", None)
    pairs: Iterable[tuple[Any, Any]] = multi() if callable(multi) else params.items()
    return sorted((str(name), str(value)) for name, value in pairs)


def _field(params: Form, name: str) -> str:
    """A form field as text; absent (or, impossibly for Twilio, a file) reads as empty."""
    value = params.get(name)
    return value if isinstance(value, str) else ""


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    variants = [url]
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    try:
        port = parts.port
    except ValueError:
        return variants
    if port is not None:
        variants.append(urlunsplit(parts._replace(netloc=prefix + host)))
    elif default is not None and host:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return variants


def _channel(params: Form) -> str:
    if _is_whatsapp(_field(params, "From"), _field(params, "To")) or (
        _field(params, "ChannelPrefix").lower() == "whatsapp"
    ):
        return "whatsapp"
    return "sms"


def parse_status_callback(params: Form) -> FeedbackEvent | None:
    """A delivery status callback in Cairn's words, or None for a status that is no news
    (queued, accepted, sending, sent, ...).

    `failed` and `undelivered` are permanent only for error codes naming a dead number
    (`PERMANENT_FAILURE_CODES`); the error code stays in `detail` either way.
    """
    sid = _field(params, "MessageSid") or _field(params, "SmsSid")
    status = (_field(params, "MessageStatus") or _field(params, "SmsStatus")).strip().lower()
    if not sid or not status:
        raise FeedbackRejected("Twilio status callback without MessageSid or MessageStatus")
    kind = _STATUS_KINDS.get(status)
    if kind is None:
        return None
    error_code = _field(params, "ErrorCode").strip() or None
    detail: dict[str, Any] = {"status": status}
    if error_code:
        detail["error_code"] = error_code
    if error_message := _field(params, "ErrorMessage"):
        detail["error_message"] = error_message
    permanent = kind == "failed" and error_code in PERMANENT_FAILURE_CODES
    if permanent and error_code == UNSUBSCRIBED_CODE:
        detail["reason"] = "unsubscribed"
    to = _field(params, "To")
    return FeedbackEvent(
        provider=PROVIDER,
        kind=kind,
        channel=_channel(params),
        provider_message_id=sid,
        recipient=strip_whatsapp(to) if to else None,
        permanent=permanent,
        detail=detail,
    )


def keyword_of(body: str) -> str | None:
    """'stop', 'start' or 'help' when the whole trimmed body is one of Twilio's keywords."""
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "stop"
    if word in OPT_IN_KEYWORDS:
        return "start"
    if word in HELP_KEYWORDS:
        return "help"
    return None


def parse_inbound_message(params: Form) -> FeedbackEvent:
    """A reply to one of our numbers: `unsubscribed` for an opt-out keyword, otherwise `replied`
    with the text (and `keyword` "start" or "help" for those keywords).

    With Advanced Opt-Out on a Messaging Service, Twilio names the matched keyword class in
    `OptOutType` (custom keywords included), which then wins over the default list.
    `provider_message_id` is the message the contact replied to when WhatsApp says so
    (`OriginalRepliedMessageSid`); the reply's own sid is in `detail`.
    """
    sender = _field(params, "From")
    if not sender:
        raise FeedbackRejected("Twilio inbound message without From")
    body = _field(params, "Body")
    opt_out_type = _field(params, "OptOutType").strip().lower()
    keyword = opt_out_type if opt_out_type in {"stop", "start", "help"} else keyword_of(body)
    detail: dict[str, Any] = {"body": body}
    to = _field(params, "To")
    if to:
        detail["to"] = strip_whatsapp(to)
    if sid := _field(params, "MessageSid") or _field(params, "SmsSid"):
        detail["message_sid"] = sid
    if keyword:
        detail["keyword"] = keyword
    media = [url for i in range(_num_media(params))
             if (url := _field(params, f"MediaUrl{i}"))]
    if media:
        detail["media_urls"] = media
    return FeedbackEvent(
        provider=PROVIDER,
        kind="unsubscribed" if keyword == "stop" else "replied",
        channel=_channel(params),
        provider_message_id=_field(params, "OriginalRepliedMessageSid") or None,
        recipient=strip_whatsapp(sender),
        detail=detail,
    )


def _num_media(params: Form) -> int:
    try:
        return max(0, min(int(_field(params, "NumMedia") or "0"), 10))
    except ValueError:
        return 0
