"""The one interface every provider implements, and how a failure is classified.

A provider gets a fully rendered `OutgoingMessage` and either returns a `Receipt` or raises
`ProviderError`. The error says three things the delivery activity needs to stay exactly-once:

- `retryable`: whether trying again later may succeed (5xx, 429, a refused connection) or never
  will (a 4xx naming a bad request, an unknown recipient);
- `outcome_unknown`: whether the provider may have accepted the message anyway (the request went
  out and no answer came back: a read timeout, a connection dropped after the body was sent).
  The activity then never sends again unless the provider de-duplicates by idempotency key;
- `invalid_recipient`: the address or token itself is dead (hard bounce, FCM `UNREGISTERED`,
  a web push 404/410): the contact is suppressed or the token dropped, so reachability knows.

`retry_after` carries a provider's Retry-After so Temporal's next attempt waits that long.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message for one recipient on one channel.

    `to` is what the channel delivers to: an email address, an E.164 number, a push token, a web
    push endpoint, or the contact id for in-app/on-site. `parts` are the template's rendered parts
    for the channel (`subject`, `body`, `html`, `title`, `url`, ...). `idempotency_key` is stable
    across every retry of this send; providers whose API de-duplicates by key send it.
    `headers` are extra protocol headers (email: List-Unsubscribe). `metadata` (journey, step,
    contact, delivery id) goes wherever the provider echoes it back in delivery webhooks.
    `extra` carries channel specifics, such as a web push subscription's `keys`.
    """

    channel: str
    to: str
    parts: dict[str, str]
    category: str
    idempotency_key: str
    contact_id: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """What the provider answered: its name, its id for the message, and the answer to keep."""

    provider: str
    provider_message_id: str | None = None
    response: dict[str, Any] = field(default_factory=dict)
    accepted_at: datetime | None = None
    """When the provider says it accepted the message (a lookup); else the ledger's wall clock."""


class ProviderError(Exception):
    """A provider call that did not succeed, classified for retries and exactly-once."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        invalid_recipient: bool = False,
        code: str | None = None,
    ) -> None:
        self.provider = provider
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.invalid_recipient = invalid_recipient
        self.code = code
        super().__init__(f"{provider}: {message}")


class HttpClientHolder:
    """The httpx client an HTTP provider talks through: its own, closed by `aclose`, or one the
    caller shares (a registry, a test), which `aclose` leaves open for its owner."""

    _client: httpx.AsyncClient
    _owns_client: bool

    def _hold_client(self, client: httpx.AsyncClient | None, **options: Any) -> None:
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(**options)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


@runtime_checkable
class Provider(Protocol):
    """Sends messages on one or more channels.

    `idempotent` is True only when the provider itself drops a second request carrying the same
    idempotency key; only then may an attempt whose outcome is unknown be sent again.
    """

    name: str
    channels: tuple[str, ...]
    idempotent: bool

    async def send(self, message: OutgoingMessage) -> Receipt: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SendLookup(Protocol):
    """A provider whose API can tell whether it accepted a message whose answer never came back
    (Postmark's outbound message search by metadata, Twilio's message list). `find_sent` answers
    the receipt of the accepted message, None when the provider has no such message, and raises
    `ProviderError` when it cannot tell now."""

    async def find_sent(self, message: OutgoingMessage) -> Receipt | None: ...


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_from_response(
    provider: str, response: httpx.Response, detail: str | None = None,
    *, invalid_recipient: bool = False, code: str | None = None,
) -> ProviderError:
    """The usual HTTP classification: 429 and 5xx retry (honouring Retry-After), 408 retries,
    other 4xx are permanent. Providers refine `invalid_recipient`/`code` from their error bodies.
    """
    status = response.status_code
    text = detail or response.text[:300]
    retryable = status == 429 or status == 408 or status >= 500
    return ProviderError(
        provider, f"HTTP {status}: {text}", retryable=retryable, status=status,
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        invalid_recipient=invalid_recipient, code=code,
    )


def error_from_transport(provider: str, error: httpx.TransportError) -> ProviderError:
    """Network failures: nothing was sent when the connection never opened (retry freely);
    once the request may have gone out, the outcome is unknown (retry only if idempotent)."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProviderError(provider, f"connection failed: {error!r}", retryable=True)
    return ProviderError(
        provider, f"no answer: {error!r}", retryable=True, outcome_unknown=True,
    )


@dataclass(frozen=True)
class Alert:
    """An internal alert (`notify` step): text for people, sent to a destination such as a
    Slack channel's incoming webhook."""

    destination: str
    text: str
    idempotency_key: str
    title: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Notifier(Protocol):
    name: str

    async def notify(self, alert: Alert) -> Receipt: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class AudienceMember:
    """Identifiers of one contact for an ad audience.

    A syncer gets them as the contact has them; `cairn.channels.audiences.normalise` gives the
    same member with each identifier normalised for one platform, which the syncer then hashes.
    """

    contact_id: str
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    country: str | None = None
    zip: str | None = None

    @property
    def has_full_address(self) -> bool:
        """Google matches an address only with all four parts."""
        return bool(self.first_name and self.last_name and self.country and self.zip)


@runtime_checkable
class AudienceSyncer(Protocol):
    """Adds or removes members of a custom audience (Facebook, Google Customer Match)."""

    name: str

    async def sync(
        self, audience: str, action: str, members: list[AudienceMember], idempotency_key: str,
    ) -> Receipt: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class OutgoingTask:
    """A task for a person (sales call, collections call) mirrored into a CRM."""

    title: str
    idempotency_key: str
    contact_id: str
    note: str | None = None
    contact_email: str | None = None
    due_at: datetime | None = None
    queue: str | None = None


@runtime_checkable
class TaskSink(Protocol):
    name: str

    async def create_task(self, task: OutgoingTask) -> Receipt: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class FeedbackEvent:
    """What a provider reported about a message after sending it (a delivery webhook, a status
    callback, an inbound reply), in Cairn's words.

    `kind` is one of delivered, bounced, complained, opened, clicked, failed, unsubscribed,
    replied. `permanent` marks a hard bounce or an undeliverable number (the address is
    suppressed). `metadata` is what Cairn attached at send time and the provider echoed back
    (delivery id, contact id), when the provider echoes it. `detail` keeps what a journey may
    branch on: the clicked URL, the bounce type, the text of a reply.
    """

    provider: str
    kind: str
    channel: str
    provider_message_id: str | None = None
    recipient: str | None = None
    occurred_at: datetime | None = None
    permanent: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


class FeedbackRejected(Exception):
    """A provider callback that failed its signature or authentication check, or is malformed."""
