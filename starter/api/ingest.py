"""Segment-format ingest: `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`,
`/v1/batch` and `/v1/import` (Segment's other name for batch); `/v1/alias` is with the contacts.

Each call is validated against `cairn.events.calls`, stored by `cairn.events.ingest` and answered
(202 for a single call, 200 for a batch) only once it is committed; routing into Temporal runs
after the answer (a background task), so a Temporal outage delays journeys but never loses an
accepted event (it stays unrouted in the store and the relay routes it).

Bodies are read as the official libraries send them (`SegmentRoute`): gzip- or deflate-encoded,
under any content type, within Segment's limits (`CAIRN_MAX_CALL_BYTES`, `CAIRN_MAX_BATCH_BYTES`).
A batch is taken item by item: the valid calls are stored, each refused one is named in the answer
with its index and reason and kept in the rejected-calls store (`GET /v1/rejected`), because the
libraries treat any 2xx as delivered and would never send it again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cairn.events.calls import (
    BATCH_ITEM,
    BATCH_ITEMS,
    BatchBody,
    GroupCall,
    IdentifyCall,
    PageCall,
    ScreenCall,
    SegmentCallType,
    TrackCall,
)
from cairn.events.ingest import Ingest, IngestResult
from cairn.settings import Settings
from cairn.store.rejected import Refusal
from starter.api.auth import requirement_of, requires
from starter.api.errors import ValidationProblem, readable_errors

BATCH_PATHS = ("/v1/batch", "/v1/import")


class Accepted(BaseModel):
    """The call is stored; `duplicate` says its messageId had been seen (stored once, not again)."""

    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={"examples": [{"messageId": "msg-0001", "duplicate": False}]},
    )

    message_id: str = Field(alias="messageId")
    duplicate: bool

    @classmethod
    def of(cls, result: IngestResult) -> Accepted:
        return cls(message_id=result.message_id, duplicate=result.duplicate)


class Refused(BaseModel):
    """A batch item that was not stored: its index in the batch and why (kept in `/v1/rejected`)."""

    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={"examples": [{
            "index": 1, "messageId": "msg-0002", "rejected": True,
            "errors": ["body.batch[1].event: Field required"]}]},
    )

    index: int
    message_id: str | None = Field(alias="messageId")
    rejected: Literal[True] = True
    errors: list[str]


_BATCH_ANSWER = [
    {"messageId": "msg-0001", "duplicate": False},
    {"index": 1, "messageId": "msg-0002", "rejected": True,
     "errors": ["body.batch[1].event: Field required"]},
    {"messageId": "msg-0003", "duplicate": True},
]


class BodyRefused(Exception):
    """A body refused whole before it is parsed: too large, badly encoded, not UTF-8."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BodyProblem(BaseModel):
    """A refusal that names its reason in `detail`."""

    detail: str


_BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": BodyProblem, "description": "the body is not valid gzip/deflate, or not UTF-8"},
    413: {"model": BodyProblem, "description": "the body (decompressed) is over the size limit; "
                                           "`detail` names the limit"},
    415: {"model": BodyProblem, "description": "a Content-Encoding other than gzip, deflate or "
                                           "identity"},
    422: {"model": ValidationProblem,
          "description": "malformed call, or a body that is not JSON; `errors` names each field"},
}

class SegmentRoute(APIRoute):
    """A route whose JSON body is read the way Segment's and RudderStack's libraries send it.

    The body is streamed and inflated (gzip or deflate) up to the limit, never past it, so a
    small compressed bomb costs at most the limit in memory; it must be UTF-8; it is read as
    JSON whatever its content type (libraries send `text/plain` or none). The endpoint then
    sees a plain JSON request.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        batch = self.path in BATCH_PATHS
        requirement = requirement_of(self)

        async def read_then_handle(request: Request) -> Response:
            if requirement is not None:
                # The key first: a caller without one never gets a body inflated or parsed.
                await requirement.authenticate(request)
            settings: Settings = request.app.state.settings
            limit = settings.max_batch_bytes if batch else settings.max_call_bytes
            setting = "CAIRN_MAX_BATCH_BYTES" if batch else "CAIRN_MAX_CALL_BYTES"
            advice = "send fewer calls per request" if batch else "send less in one call"
            try:
                body = await read_body(request, limit, f"{setting}; {advice}")
            except BodyRefused as refused:
                return JSONResponse(status_code=refused.status, content={"detail": refused.detail})
            return await handle(_as_json_request(request, body))

        return read_then_handle


async def read_body(request: Request, limit: int, setting: str) -> bytes:
    """The request's body, inflated, at most `limit` bytes, checked to be UTF-8; `setting` names
    the limit's setting (and what to do) in the refusal."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    inflate = _Inflater(encoding)
    too_large = BodyRefused(413, (
        f"the body is over {limit} bytes{' once decompressed' if inflate.active else ''}; "
        f"the limit is {limit} bytes ({setting})"))
    declared = request.headers.get("content-length", "")
    if not inflate.active and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:  # compressed past the limit: decompressed can only be larger
            raise too_large
        body += inflate.feed(chunk, limit + 1 - len(body))
        if len(body) > limit:
            raise too_large
    inflate.finish()
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyRefused(400, f"the body is not UTF-8 (byte {error.start} is "
                               f"{body[error.start]:#04x}); send JSON encoded as UTF-8") from None
    return bytes(body)


class _Inflater:
    """Streaming gzip/deflate with a bound on each step's output."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.active = encoding in ("gzip", "x-gzip", "deflate")
        if not self.active and encoding not in ("identity", ""):
            raise BodyRefused(415, f"Content-Encoding {encoding!r} is not supported; send the "
                                   "body as is, gzip or deflate")
        # gzip: a gzip header; deflate: a zlib header (RFC 9110), or raw deflate as some send.
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else 32 + zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(wbits) if self.active else None
        self._fed = False

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Inflate `chunk`, giving at most `room` bytes (the caller refuses the body once full)."""
        if self._zlib is None:
            return chunk
        first, self._fed = not self._fed, True
        try:
            return self._zlib.decompress(chunk, room)
        except zlib.error as error:
            if not (first and self.encoding == "deflate"):
                raise BodyRefused(400, f"the body is not valid {self.encoding} ({error}); send "
                                       "it compressed whole, or uncompressed") from None
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, without a header
        return self.feed(chunk, room)

    def finish(self) -> None:
        if self._zlib is not None and self._fed and not self._zlib.eof:
            raise BodyRefused(400, f"the {self.encoding} body ends early (truncated); send "
                                   "it whole")


def _as_json_request(request: Request, body: bytes) -> Request:
    """The same request with its (inflated) body as plain JSON: FastAPI then parses it."""
    headers = [(name, value) for name, value in request.scope["headers"]
               if name not in (b"content-type", b"content-encoding", b"content-length")]
    headers += [(b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
    plain = Request({**request.scope, "headers": headers}, request.receive)
    plain._body = body  # starlette reads a request's body once and keeps it here
    return plain


def ingest_router(ingest: Ingest) -> APIRouter:
    """The Segment calls, stored through `ingest` and routed after the answer."""
    router = APIRouter(tags=["ingest"], route_class=SegmentRoute,
                       dependencies=[requires("write")])

    @router.post("/v1/track", status_code=202, response_model=Accepted,
                 summary="Record an event (Segment track)", responses=_BODY_RESPONSES)
    async def track(call: TrackCall, background: BackgroundTasks) -> Accepted:
        """Store the event once per messageId, create the contact if new, then route it."""
        return _accepted(background, ingest, await ingest.track(call, route=False))

    @router.post("/v1/identify", status_code=202, response_model=Accepted,
                 summary="Update a contact's traits (Segment identify)",
                 responses=_BODY_RESPONSES)
    async def identify(call: IdentifyCall, background: BackgroundTasks) -> Accepted:
        """Merge traits into the contact: email, phone, timezone, consent, push tokens, others."""
        return _accepted(background, ingest, await ingest.identify(call, route=False))

    @router.post("/v1/page", status_code=202, response_model=Accepted,
                 summary="Record a page view (Segment page)", responses=_BODY_RESPONSES)
    async def page(call: PageCall, background: BackgroundTasks) -> Accepted:
        """Store the view as a `page_viewed` event (URL-visit segments read it), then route it."""
        return _accepted(background, ingest, await ingest.page(call, route=False))

    @router.post("/v1/screen", status_code=202, response_model=Accepted,
                 summary="Record a mobile app screen view (Segment screen)",
                 responses=_BODY_RESPONSES)
    async def screen(call: ScreenCall, background: BackgroundTasks) -> Accepted:
        """Store the view as a `screen_viewed` event (the screen's `name` in its properties),
        then route it."""
        return _accepted(background, ingest, await ingest.screen(call, route=False))

    @router.post("/v1/group", status_code=202, response_model=Accepted,
                 summary="Record the contact's group (Segment group)", responses=_BODY_RESPONSES)
    async def group(call: GroupCall, background: BackgroundTasks) -> Accepted:
        """Set the contact's `group` attribute to `{id: groupId, ...traits}` (conditions read
        `attribute: group.plan`), store a `group` event, then route it."""
        return _accepted(background, ingest, await ingest.group(call, route=False))

    for path, name in (("/v1/batch", "batch"), ("/v1/import", "import")):
        router.add_api_route(
            # 200, not 202: RudderStack's libraries count only a 200 as delivered (Segment's
            # take any 2xx) and retry anything else, sending the whole batch again.
            path, _batch_endpoint(ingest, path), methods=["POST"], status_code=200,
            response_model=list[Accepted | Refused], name=name,
            summary=("Record several calls at once (Segment batch)" if name == "batch" else
                     "Record several calls at once (Segment import: the same as batch)"),
            responses={**_BODY_RESPONSES, 200: {
                "description": "the valid items are stored; one answer per item, in order",
                "content": {"application/json": {"example": _BATCH_ANSWER}}}})
    return router


def _batch_endpoint(
    ingest: Ingest, path: str
) -> Callable[..., Coroutine[Any, Any, list[Accepted | Refused]]]:
    async def batch(
        body: BatchBody, request: Request, background: BackgroundTasks
    ) -> list[Accepted | Refused]:
        """Each item (track, identify, page, screen, group, alias) is checked on its own; the
        valid ones are stored in one transaction, in order, each as its own endpoint stores it.
        The answer has one entry per item, in order: `{messageId, duplicate}` when stored,
        `{index, messageId, rejected: true, errors}` when refused (kept in `/v1/rejected`)."""
        settings: Settings = request.app.state.settings
        # No item of a body within the per-call limit can be over it: measuring each item
        # (encoding it again) is only needed for larger bodies.
        limit = (settings.max_call_bytes
                 if len(await request.body()) > settings.max_call_bytes else None)
        calls: list[SegmentCallType] = []
        refused: list[Refusal] = []
        answers: list[Refused | int] = []  # an int: the position of the item's stored call
        if limit is None:
            try:  # the usual batch, every item valid: checked in one go
                calls = BATCH_ITEMS.validate_python(body.batch)
            except ValidationError:
                calls = []  # item by item, to say which are refused and why
            else:
                answers = list(range(len(calls)))
        for index, item in enumerate(body.batch if not answers else ()):
            errors = _item_errors(index, item, limit)
            if isinstance(errors, list):
                message_id = item.get("messageId")
                message_id = message_id if isinstance(message_id, str) else None
                refused.append(Refusal(index=index, reason="; ".join(errors), call=item,
                                       message_id=message_id))
                answers.append(Refused(index=index, message_id=message_id, errors=errors))
            else:
                answers.append(len(calls))
                calls.append(errors)
        results = await ingest.batch(calls, route=False, refused=refused, endpoint=path)
        _route_later(background, ingest, results)
        # Answered as built, without validating the answer again (`response_model` documents it).
        return JSONResponse([  # type: ignore[return-value]
            {"messageId": results[answer].message_id, "duplicate": results[answer].duplicate}
            if isinstance(answer, int) else answer.model_dump(by_alias=True)
            for answer in answers], background=background)

    return batch


def _item_errors(
    index: int, item: dict[str, Any], limit: int | None
) -> SegmentCallType | list[str]:
    """The item as a call, or why it is refused (each reason naming `body.batch[index]`);
    `limit` is the per-call size limit, None when the item cannot be over it."""
    size = 0 if limit is None else len(json.dumps(item, ensure_ascii=False, separators=(",", ":"))
                                       .encode("utf-8", "surrogatepass"))
    if limit is not None and size > limit:
        return [f"body.batch[{index}]: the call is {size} bytes; the limit per call is {limit} "
                "bytes (CAIRN_MAX_CALL_BYTES)"]
    try:
        call: SegmentCallType = BATCH_ITEM.validate_python(item)
    except ValidationError as error:
        return readable_errors([{**e, "loc": ("body", "batch", index, *e["loc"])}
                                for e in error.errors()])
    return call


def _accepted(background: BackgroundTasks, ingest: Ingest, result: IngestResult) -> Accepted:
    _route_later(background, ingest, [result])
    return Accepted.of(result)


def _route_later(background: BackgroundTasks, ingest: Ingest, results: list[IngestResult]) -> None:
    """Route new events after the answer; duplicates were routed when first accepted."""
    fresh = [event_id for result in results if not result.duplicate
             for event_id in (result.event_id, *result.derived)]
    if fresh:
        background.add_task(ingest.route_soon, fresh)
