"""Python client for Cairn's ingest API: `track`, `identify` and `batch`, sync and async.

Every call gets its `messageId` here, before the first attempt, so a retry after a timeout or a
dropped connection is recognised by the API as the same call and stored once. Calls are validated
locally with the same models the API uses, so a typo fails in the caller's code, not in a log.

    with CairnClient("http://127.0.0.1:8000", key=WRITE_KEY) as cairn:
        cairn.identify("c-1", {"email": "ana@example.com", "timezone": "Europe/Bucharest"})
        cairn.track("c-1", "cart_item_added", {"value": 25})

The key (`cairn keys create NAME --scope write`) is sent as `Authorization: Bearer KEY`; without
`key=`, the client takes `CAIRN_KEY` from the environment.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from cairn.events.calls import BatchCall, IdentifyCall, SegmentCallType, TrackCall

RETRY_STATUSES = (502, 503, 504)


class CairnError(RuntimeError):
    """A call was not accepted by Cairn."""


class CairnRejected(CairnError):
    """Cairn (or local validation) refused a malformed call; `errors` names each field."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("Cairn rejected the call: " + "; ".join(errors))


class CairnRefused(CairnError):
    """The API refused the key: none, unknown or revoked (401), or its scope is too small (403)."""


class CairnUnavailable(CairnError):
    """Cairn could not be reached or failed; the call may be retried (same messageId)."""


@dataclass(frozen=True)
class Ack:
    """Cairn's answer for one call: stored (`duplicate`: it had stored this messageId before), or,
    for an item of a batch, `rejected` with the `errors` naming each bad field (the other items of
    the batch are stored; the refused one is kept in `GET /v1/rejected`)."""

    message_id: str
    duplicate: bool
    rejected: bool = False
    errors: tuple[str, ...] = ()


def track_call(
    user_id: str | None,
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    anonymous_id: str | None = None,
    timestamp: datetime | None = None,
    message_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> TrackCall:
    """A validated `track` call with its messageId (generated when not given)."""
    fields: dict[str, Any] = {
        "userId": user_id, "anonymousId": anonymous_id, "event": event,
        "properties": dict(properties or {}), "timestamp": timestamp, "context": context,
    }
    if message_id is not None:
        fields["messageId"] = message_id
    return _validated(TrackCall, fields)


def identify_call(
    user_id: str | None,
    traits: Mapping[str, Any] | None = None,
    *,
    anonymous_id: str | None = None,
    timestamp: datetime | None = None,
    message_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> IdentifyCall:
    """A validated `identify` call with its messageId (generated when not given)."""
    fields: dict[str, Any] = {
        "userId": user_id, "anonymousId": anonymous_id, "traits": dict(traits or {}),
        "timestamp": timestamp, "context": context,
    }
    if message_id is not None:
        fields["messageId"] = message_id
    return _validated(IdentifyCall, fields)


def _validated(model: type[SegmentCallType], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        raise CairnRejected([
            f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}"
            for e in error.errors()
        ]) from error


def _body(call: SegmentCallType) -> dict[str, Any]:
    body: dict[str, Any] = call.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def _batch_body(calls: Sequence[SegmentCallType]) -> dict[str, Any]:
    if not calls:
        raise CairnRejected(["batch: give at least one call"])
    BatchCall.model_validate({"batch": [_body(call) for call in calls]})
    return {"batch": [_body(call) for call in calls]}


def _answer(response: httpx.Response) -> Any:
    if response.status_code == 422:
        payload = response.json()
        raise CairnRejected(list(payload.get("errors") or [str(payload.get("detail"))]))
    if response.status_code in (401, 403):
        raise CairnRefused(f"Cairn refused the key ({response.status_code}): "
                           f"{response.text[:300]}; pass key= or set CAIRN_KEY")
    if response.status_code >= 400:
        raise CairnUnavailable(
            f"Cairn answered {response.status_code} to {response.request.method} "
            f"{response.request.url.path}: {response.text[:300]}"
        )
    return response.json()


def _key_headers(key: str | None) -> dict[str, str]:
    key = key or os.environ.get("CAIRN_KEY")
    return {"authorization": f"Bearer {key}"} if key else {}


def _ack(payload: Mapping[str, Any]) -> Ack:
    return Ack(message_id=str(payload.get("messageId", "")),
               duplicate=bool(payload.get("duplicate", False)),
               rejected=bool(payload.get("rejected", False)),
               errors=tuple(str(error) for error in payload.get("errors", ())))


def _retryable(response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUSES


class CairnClient:
    """Blocking client (scripts, Django, Flask). Reuses one connection pool; close it when done.

    `retries` extra attempts are made on connection errors and 502/503/504, with a short backoff;
    they are safe because the messageId is fixed before the first attempt.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        key: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers=_key_headers(key))

    def track(self, user_id: str | None, event: str, properties: Mapping[str, Any] | None = None,
              **options: Any) -> Ack:
        """Record an event; options: anonymous_id, timestamp, message_id, context."""
        return _ack(self._post("/v1/track", _body(track_call(user_id, event, properties,
                                                               **options))))

    def identify(self, user_id: str | None, traits: Mapping[str, Any] | None = None,
                 **options: Any) -> Ack:
        """Merge traits into the contact; options: anonymous_id, timestamp, message_id, context."""
        return _ack(self._post("/v1/identify", _body(identify_call(user_id, traits, **options))))

    def batch(self, calls: Sequence[SegmentCallType]) -> list[Ack]:
        """Send calls made with `track_call` / `identify_call` in one request."""
        return [_ack(item) for item in self._post("/v1/batch", _batch_body(calls))]

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError as error:
                if last:
                    raise CairnUnavailable(_unreachable(self._http.base_url, error)) from error
            else:
                if not _retryable(response) or last:
                    return _answer(response)
            time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CairnClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class AsyncCairnClient:
    """Asyncio client (FastAPI, aiohttp services); same calls as `CairnClient`, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        key: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers=_key_headers(key))

    async def track(self, user_id: str | None, event: str,
                    properties: Mapping[str, Any] | None = None, **options: Any) -> Ack:
        """Record an event; options: anonymous_id, timestamp, message_id, context."""
        body = _body(track_call(user_id, event, properties, **options))
        return _ack(await self._post("/v1/track", body))

    async def identify(self, user_id: str | None, traits: Mapping[str, Any] | None = None,
                       **options: Any) -> Ack:
        """Merge traits into the contact; options: anonymous_id, timestamp, message_id, context."""
        return _ack(await self._post("/v1/identify",
                                     _body(identify_call(user_id, traits, **options))))

    async def batch(self, calls: Sequence[SegmentCallType]) -> list[Ack]:
        """Send calls made with `track_call` / `identify_call` in one request."""
        return [_ack(item) for item in await self._post("/v1/batch", _batch_body(calls))]

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._http.post(path, json=body)
            except httpx.TransportError as error:
                if last:
                    raise CairnUnavailable(_unreachable(self._http.base_url, error)) from error
            else:
                if not _retryable(response) or last:
                    return _answer(response)
            await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCairnClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()


def _backoff(attempt: int) -> float:
    return min(0.2 * 2**attempt, 2.0)


def _unreachable(base_url: httpx.URL, error: Exception) -> str:
    return (f"cannot reach Cairn at {base_url} ({type(error).__name__}: {error}); is `cairn dev` "
            "or `cairn api` running there?")
