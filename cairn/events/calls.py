"""The Segment spec calls Cairn accepts: `track`, `identify` and `batch`, as pydantic models.

Any Segment or RudderStack source can point at Cairn, so these models accept what those sources send
(extra fields such as `context`, `integrations`, `sentAt`, `channel` are allowed and ignored) while
rejecting what Cairn cannot store: a call without `userId` or `anonymousId`, a `track` without an
event name, properties or traits that are not objects, a timestamp that is not ISO-8601.

This module only describes and validates calls; storing and routing them is `cairn.events.ingest`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)


def new_message_id() -> str:
    """A message id for calls that came without one (Segment libraries always send one)."""
    return str(uuid.uuid4())


class SegmentCall(BaseModel):
    """Fields every call shares: who (`userId` or `anonymousId`), when, and its message id.

    `timestamp` is when the event happened on the source; without one the call happened now. A
    timestamp without a UTC offset is read as UTC, and every timestamp is kept as aware UTC.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    user_id: str | None = Field(default=None, alias="userId", max_length=255)
    anonymous_id: str | None = Field(default=None, alias="anonymousId", max_length=255)
    timestamp: datetime | None = Field(
        default=None, description="ISO-8601; when the event happened (default: when received)"
    )
    message_id: str = Field(
        default_factory=new_message_id, alias="messageId", min_length=1, max_length=255,
        description="de-duplication key: a repeated messageId is acknowledged, not stored twice",
    )
    context: dict[str, Any] | None = Field(default=None, description="accepted and ignored")

    @field_validator("user_id", "anonymous_id", mode="after")
    @classmethod
    def _blank_is_missing(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @field_validator("timestamp", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _someone(self) -> SegmentCall:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("give userId or anonymousId (the contact the call is about)")
        return self

    @property
    def contact_id(self) -> str:
        """The contact a call is about: `userId`, else `anonymousId` (an unidentified visitor)."""
        contact = self.user_id or self.anonymous_id
        assert contact is not None  # guaranteed by _someone
        return contact


class TrackCall(SegmentCall):
    """`track`: the contact did something (`event`), with `properties`."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "userId": "c-1",
                    "event": "cart_item_added",
                    "properties": {"value": 25, "sku": "mug-01"},
                    "timestamp": "2026-03-02T09:00:00Z",
                    "messageId": "msg-0001",
                }
            ]
        },
    )

    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=255, description="the event name")
    properties: dict[str, Any] = Field(default_factory=dict)


class IdentifyCall(SegmentCall):
    """`identify`: who the contact is (`traits` merged into the profile)."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "userId": "c-1",
                    "traits": {
                        "email": "ana@example.com",
                        "timezone": "Europe/Bucharest",
                        "first_name": "Ana",
                        "consent": {"marketing": True},
                    },
                    "messageId": "msg-0002",
                }
            ]
        },
    )

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class PageCall(SegmentCall):
    """`page`: the contact viewed a web page (stored as a `page_viewed` event).

    The URL comes from `properties.url`, else from `context.page.url` (where Segment's browser
    library also puts it); URL-visit segments compare it.
    """

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "userId": "c-1",
                    "name": "Pricing",
                    "properties": {"url": "https://shop.example/pricing", "title": "Pricing"},
                    "messageId": "msg-0003",
                }
            ]
        },
    )

    type: Literal["page"] = "page"
    name: str | None = Field(default=None, max_length=255, description="the page's name")
    properties: dict[str, Any] = Field(default_factory=dict)

    def page_properties(self) -> dict[str, Any]:
        """The stored event's properties: the call's, with `url` and `name` filled in if known."""
        found = dict(self.properties)
        page = (self.context or {}).get("page")
        if "url" not in found and isinstance(page, dict) and isinstance(page.get("url"), str):
            found["url"] = page["url"]
        if self.name is not None and "name" not in found:
            found["name"] = self.name
        return found


def _call_type(data: Any) -> str | None:
    if isinstance(data, dict):
        kind = data.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(data, "type", None)


BatchItem = Annotated[
    Annotated[TrackCall, Tag("track")]
    | Annotated[IdentifyCall, Tag("identify")]
    | Annotated[PageCall, Tag("page")],
    Discriminator(
        _call_type,
        custom_error_type="call_type",
        custom_error_message="each batch item needs `type`: track, identify or page",
    ),
]
"""One call of a batch, told apart by its `type`, each the body its own endpoint takes."""


class BatchCall(BaseModel):
    """`batch` (Segment): several calls at once, stored together in order.

    Sources such as analytics.js batch page views with their tracks, so `page` items are taken
    beside `track` and `identify` and stored as `/v1/page` stores them (a `page_viewed` event).
    `context` applies to all and is ignored.
    """

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "batch": [
                        {"type": "identify", "userId": "c-1",
                         "traits": {"email": "ana@example.com"}},
                        {"type": "page", "userId": "c-1", "name": "Pricing",
                         "properties": {"url": "https://shop.example/pricing"}},
                        {"type": "track", "userId": "c-1", "event": "cart_item_added",
                         "properties": {"value": 25}},
                    ]
                }
            ]
        },
    )

    batch: list[BatchItem] = Field(min_length=1, max_length=1000)
    context: dict[str, Any] | None = None


SegmentCallType = TrackCall | IdentifyCall | PageCall
"""A single call, as stored by `cairn.events.ingest`."""
