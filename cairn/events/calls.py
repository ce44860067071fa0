"""The Segment spec calls Cairn accepts, as pydantic models: `track`, `identify`, `page`, `screen`,
`group`, `alias`, and `batch` holding any of them.

Any Segment or RudderStack source can point at Cairn, so these models accept what those sources send
(extra fields such as `context`, `integrations`, `sentAt`, `channel` are allowed and ignored) while
rejecting what Cairn cannot store: a call without `userId` or `anonymousId`, a `track` without an
event name, properties or traits that are not objects, a timestamp that is not ISO-8601. They
also refuse, naming the field, values that would be accepted now and fail later, when the event is
stored, evaluated by a condition or carried to Temporal: NaN and Infinity, integers beyond 64
bits, strings with lone surrogates (not encodable as UTF-8), timestamps outside the years Cairn
computes with.

This module only describes and validates calls; storing and routing them is `cairn.events.ingest`.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cairn.store.schema import Contact
from cairn.traits import (
    ContactTraitError,
    merge_consent,
    merge_subscriptions,
    text_trait,
    timezone_trait,
    token_list,
)


def new_message_id() -> str:
    """A message id for calls that came without one (Segment libraries always send one)."""
    return str(uuid.uuid4())


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""Event timestamps must fall in [EARLIEST, LATEST): far enough from year 1 and year 9999 that
shifting them by a time zone, a wait or a segment window never overflows `datetime`, and after the
epoch so every database and Temporal's timestamps hold them."""

LARGEST_INTEGER = 2**63 - 1
"""The largest integer a value may hold: PostgreSQL's bigint, SQLite's INTEGER, and what a
condition can compare without losing digits on the way through JSON."""

STORED_FIELDS = ("userId", "anonymousId", "messageId", "previousId", "groupId", "event", "name",
                 "properties", "traits")
"""The fields of a call Cairn keeps; `context`, `integrations` and other extras are not stored,
so they are not checked for storable values."""


MAX_DEPTH = 32
"""How deeply objects and lists may nest in a stored value: far beyond what events need, far
below where Python's JSON and validation code run out of stack."""


def unstorable(value: Any, where: str, depth: int = 0) -> str | None:
    """Why `value` (found at `where`) cannot be stored, evaluated and routed, or None if it can."""
    if depth > MAX_DEPTH:
        return f"{where}: nested more than {MAX_DEPTH} levels deep; flatten it"
    if isinstance(value, str):
        return _unencodable(value, where) or _edge_date(value, where)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -LARGEST_INTEGER - 1 <= value <= LARGEST_INTEGER:
            return None
        return f"{where}: integer {value} is beyond 64 bits; send it as a string"
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{where}: {value} is not a number Cairn can store or compare; send null instead"
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key!r}]"
            problem = (_unencodable(key, f"{where} key") if isinstance(key, str) else None) \
                or unstorable(item, path, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = unstorable(item, f"{where}[{index}]", depth + 1)
            if problem is not None:
                return problem
    return None


def check_profile_traits(traits: dict[str, Any]) -> None:
    """Raise `ContactTraitError` for a trait the contact's profile columns cannot keep."""
    timezone_trait(traits.get("timezone"))
    for name in ("email", "phone"):
        text_trait(name, traits.get(name), Contact.__table__.c[name].type.length)
    if traits.get("push_tokens") is not None:
        token_list(traits["push_tokens"])
    if traits.get("web_push") is not None:
        merge_subscriptions([], traits["web_push"])
    if traits.get("consent") is not None:
        merge_consent({}, traits["consent"])


_DATE_MARGIN = timedelta(days=2)
_FIRST_DAY = datetime.min.replace(tzinfo=UTC)
_LAST_DAY = datetime.max.replace(tzinfo=UTC)


def _edge_date(text: str, where: str) -> str | None:
    """A date-time text within two days of year 1 or year 9999: shifting it to UTC, by a time
    zone or by a wait overflows Python's datetime (segments and conditions compare such texts as
    dates), so it is refused like an unrepresentable timestamp."""
    if not (10 <= len(text) <= 40 and text[:4].isdigit() and text[4:5] == "-"):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    try:
        utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        inside = _FIRST_DAY + _DATE_MARGIN <= utc <= _LAST_DAY - _DATE_MARGIN
    except OverflowError:
        inside = False
    if not inside:
        return (f"{where}: {text!r} is a date at the edge of what can be computed with (year 1 "
                "or 9999); send a real date, or null")
    return None


def _unencodable(text: str, where: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (f"{where}: character {error.start} is a lone surrogate "
                f"({text[error.start]!a}), which no database can store as UTF-8")
    return None


class SegmentCall(BaseModel):
    """Fields every call shares: who (`userId` or `anonymousId`), when, and its message id.

    `timestamp` is when the event happened on the source; without one the call happened now. A
    timestamp without a UTC offset is read as UTC, and every timestamp is kept as aware UTC.
    """

    # Subclasses add only their examples: pydantic merges a subclass's config into this one.
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

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in STORED_FIELDS:
                if name in data:
                    problem = unstorable(data[name], name)
                    if problem is not None:
                        raise PydanticCustomError("unstorable", "{problem}", {"problem": problem})
        return data

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
        try:
            moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            moment = EARLIEST - (LATEST - EARLIEST)  # out of range either way
        if not EARLIEST <= moment < LATEST:
            raise PydanticCustomError(
                "timestamp_range",
                "{value} is outside the years Cairn computes with: give a time from "
                "{earliest} to before {latest}",
                {"value": value.isoformat(), "earliest": EARLIEST.date().isoformat(),
                 "latest": LATEST.date().isoformat()},
            )
        return moment

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
    traits: dict[str, Any] = Field(
        default_factory=dict,
        description="merged into the profile; when absent, `context.traits` is read instead "
                    "(where RudderStack's libraries send them)")

    @model_validator(mode="before")
    @classmethod
    def _traits_in_context(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("traits"):
            context = data.get("context")
            if isinstance(context, dict) and isinstance(context.get("traits"), dict):
                problem = unstorable(context["traits"], "context.traits")
                if problem is not None:
                    raise PydanticCustomError("unstorable", "{problem}", {"problem": problem})
                return {**data, "traits": context["traits"]}
        return data

    @field_validator("traits", mode="after")
    @classmethod
    def _profile_traits(cls, traits: dict[str, Any]) -> dict[str, Any]:
        # The profile columns parse their traits when stored; parsed here too, so a bad one is
        # this call's 422 (or this batch item's refusal), never the failure of a whole batch.
        try:
            check_profile_traits(traits)
        except ContactTraitError as error:
            raise PydanticCustomError("trait", "{problem}", {"problem": str(error)}) from None
        return traits


class PageCall(SegmentCall):
    """`page`: the contact viewed a web page (stored as a `page_viewed` event).

    The URL comes from `properties.url`, else from `context.page.url` (where Segment's browser
    library also puts it); URL-visit segments compare it.
    """

    model_config = ConfigDict(
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


class ScreenCall(PageCall):
    """`screen`: the contact viewed a screen of a mobile app (stored as a `screen_viewed` event).

    The same shape as `page`; the screen's `name` is kept in the event's properties.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "userId": "c-1",
                    "name": "Checkout",
                    "properties": {"step": 2},
                    "messageId": "msg-0004",
                }
            ]
        },
    )

    type: Literal["screen"] = "screen"  # type: ignore[assignment]
    name: str | None = Field(default=None, max_length=255, description="the screen's name")


class GroupCall(SegmentCall):
    """`group`: the contact belongs to a group (an account, a company, a team), with its traits.

    The contact's `group` attribute becomes `{"id": groupId, ...traits}`, so conditions and
    segments read it as `attribute: group.id` or `attribute: group.plan`. A later `group` call
    for the same group merges its traits; one for another group replaces them.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "userId": "c-1",
                    "groupId": "acme",
                    "traits": {"name": "Acme Inc.", "plan": "enterprise", "employees": 120},
                    "messageId": "msg-0005",
                }
            ]
        },
    )

    type: Literal["group"] = "group"
    group_id: str = Field(alias="groupId", min_length=1, max_length=255,
                          description="the group's id (an account or company)")
    traits: dict[str, Any] = Field(default_factory=dict, description="the group's traits")

    @field_validator("group_id", mode="before")
    @classmethod
    def _numeric_id(cls, value: Any) -> Any:
        # Segment's libraries pass a numeric account id through as a JSON number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class AliasCall(SegmentCall):
    """`alias`: `previousId` (an anonymous id) is the same person as `userId`.

    Does what `POST /v1/alias` does: the visitor's events, scores and traits move to the user.
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{
            "previousId": "anon-7f3a", "userId": "c-1", "messageId": "msg-0006"}]},
    )

    type: Literal["alias"] = "alias"
    previous_id: str = Field(alias="previousId", min_length=1, max_length=255,
                             description="the id the contact had before (an anonymous id)")
    user_id: str = Field(alias="userId", min_length=1, max_length=255)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _two_ids(self) -> AliasCall:
        if self.previous_id == self.user_id:
            raise ValueError(f"previousId and userId are both {self.user_id!r}: an alias links "
                             "two different ids")
        return self


CALL_TYPES: dict[str, type[SegmentCall]] = {
    "track": TrackCall, "identify": IdentifyCall, "page": PageCall, "screen": ScreenCall,
    "group": GroupCall, "alias": AliasCall,
}
"""Every call type of the Segment spec, by the `type` a batch item gives."""


def _call_type(data: Any) -> str | None:
    if isinstance(data, dict):
        kind = data.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(data, "type", None)


BatchItem = Annotated[
    Annotated[TrackCall, Tag("track")]
    | Annotated[IdentifyCall, Tag("identify")]
    | Annotated[PageCall, Tag("page")]
    | Annotated[ScreenCall, Tag("screen")]
    | Annotated[GroupCall, Tag("group")]
    | Annotated[AliasCall, Tag("alias")],
    Discriminator(
        _call_type,
        custom_error_type="call_type",
        custom_error_message=(
            "each batch item needs `type`: track, identify, page, screen, group or alias"),
    ),
]
"""One call of a batch, told apart by its `type`, each the body its own endpoint takes."""

BATCH_ITEM: TypeAdapter[Any] = TypeAdapter(BatchItem)
"""Validates one batch item on its own, so one bad item does not refuse its neighbours."""

BATCH_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[BatchItem])
"""Validates a whole batch's items at once (when all are valid, the usual case)."""


class BatchCall(BaseModel):
    """`batch` (Segment): several calls at once, stored together in order.

    For Python callers (imports, simulations), whose calls are already validated; the HTTP door
    reads `BatchBody` and validates each item on its own.
    """

    model_config = ConfigDict(extra="allow")

    batch: list[BatchItem] = Field(min_length=1, max_length=1000)
    context: dict[str, Any] | None = None


class BatchBody(BaseModel):
    """The body of `/v1/batch` and `/v1/import` as sources send it: items checked one by one.

    Each item is one call with its `type` (track, identify, page, screen, group, alias), the body
    its own endpoint takes. Valid items are stored even when others are not; the answer says, per
    item, which were refused and why. `context` applies to all and is ignored.
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
                        {"type": "group", "userId": "c-1", "groupId": "acme",
                         "traits": {"plan": "enterprise"}},
                    ]
                }
            ]
        },
    )

    batch: list[dict[str, Any]] = Field(
        min_length=1, max_length=1000,
        description="the calls, each an object with its `type`; checked one by one")
    context: dict[str, Any] | None = None


SegmentCallType = TrackCall | IdentifyCall | PageCall | ScreenCall | GroupCall | AliasCall
"""A single call, as stored by `cairn.events.ingest`."""
