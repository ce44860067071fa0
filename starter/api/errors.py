"""How the API says "your input is wrong": a 422 whose `errors` name each field in words.

The answer may echo what was sent; `printable` makes sure it can always be written as JSON.

`body.batch[1].event: Field required`, beside FastAPI's structured `detail`, so a developer can act
on the message without reading pydantic's error format.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from cairn.log import get_logger
from cairn.metrics import count_rejected

log = get_logger(__name__)

_CALL_TAGS = ("track", "identify", "page", "screen", "group", "alias")
"""The discriminator tags of batch items, left out of field paths."""


class ValidationProblem(BaseModel):
    """The body of a 422: readable `errors` plus FastAPI's structured `detail`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "errors": ["body.event: Field required"],
                    "detail": [{"type": "missing", "loc": ["body", "event"],
                                "msg": "Field required", "input": {"userId": "c-1"}}],
                }
            ]
        }
    )

    errors: list[str]
    detail: list[dict[str, Any]]


def fields_of(messages: list[str]) -> list[str]:
    """The fields refusal messages name (`body.traits.timezone`), without what follows: the
    message may quote the value sent, which is personal data and stays out of the log."""
    return [message.partition(":")[0] for message in messages]


def readable_errors(errors: list[Any]) -> list[str]:
    """`body.batch[1].event: Field required` for each pydantic error.

    The discriminator tag pydantic puts after a batch index (`batch.1.track.event`) is left out:
    the index already says which item is wrong.
    """
    lines = []
    for error in errors:
        parts: list[str] = []
        previous: Any = None
        for part in error.get("loc", ()):
            if isinstance(part, int):
                parts[-1:] = [f"{parts[-1]}[{part}]" if parts else f"[{part}]"]
            elif isinstance(previous, int) and part in _CALL_TAGS:
                pass
            else:
                parts.append(str(part))
            previous = part
        where = ".".join(parts) or "body"
        lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return lines


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{**error, "input": shallow(error["input"])} if "input" in error else error
              for error in exc.errors()]
    readable = printable(readable_errors(errors))
    log.info("api.rejected", path=request.url.path, fields=fields_of(readable))
    count_rejected(request.url.path)
    return JSONResponse(
        status_code=422,
        content={"errors": readable, "detail": printable(jsonable_encoder(errors, custom_encoder={
            bytes: lambda raw: raw.decode("utf-8", "backslashreplace")}))},
    )


def shallow(value: Any, depth: int = 4) -> Any:
    """`value` cut below `depth` levels: an error echoes the input, not a deeply nested bomb."""
    if isinstance(value, dict):
        return {k: shallow(v, depth - 1) for k, v in value.items()} if depth > 0 else "{...}"
    if isinstance(value, list | tuple):
        return [shallow(v, depth - 1) for v in value] if depth > 0 else "[...]"
    return value


def printable(value: Any) -> Any:
    """`value` with every text encodable as UTF-8: an answer echoing what the caller sent (a
    lone surrogate, bytes that are not UTF-8) must not fail to render itself."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    return value


_UNPARSED_BODY = "There was an error parsing the body"
"""FastAPI's 400 for a JSON body it could not decode (not UTF-8, UTF-16 halves...)."""


async def http_refusal(request: Request, exc: Exception) -> Response:
    """FastAPI's own refusals, except its 400 for an undecodable JSON body: that is the caller's
    malformed input like any other, so a 422 naming the body (every route documents 422)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSED_BODY:
        return refusal(request, "body: not readable as JSON (not UTF-8, or nested too deeply); "
                                "send UTF-8 encoded JSON", kind="json_invalid", loc=["body"])
    return await http_exception_handler(request, exc)


async def number_too_large(request: Request, exc: Exception) -> JSONResponse:
    """An id or number past what the store's integers hold: SQLite raises OverflowError, and
    PostgreSQL's driver a DataError caused by one (ids are 32-bit there)."""
    if not isinstance(exc, OverflowError) and not _caused_by_overflow(exc):
        raise exc
    return refusal(request, "a number in the path, query or body is too large for the store's "
                            "integers (ids are at most 2147483647)", kind="too_large", loc=[])


def _caused_by_overflow(error: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OverflowError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


async def trait_refused(request: Request, exc: Exception) -> JSONResponse:
    """A trait the store cannot keep (unknown time zone, over-long phone): the caller's error."""
    return refusal(request, f"body.traits.{exc}", kind="trait", loc=["body", "traits"])


async def nested_too_deeply(request: Request, exc: Exception) -> JSONResponse:
    """A body whose nesting ran Python out of stack while it was validated or stored."""
    return refusal(request, "body: nested too deeply to be stored; flatten it", kind="too_deep",
                   loc=["body"])


def refusal(request: Request, message: str, *, kind: str, loc: list[str | int]) -> JSONResponse:
    """A 422 with one error, shaped as every other 422: readable `errors`, structured `detail`."""
    message = printable(message)
    log.info("api.rejected", path=request.url.path, fields=fields_of([message]))
    count_rejected(request.url.path)
    return JSONResponse(status_code=422, content={
        "errors": [message], "detail": [{"type": kind, "loc": loc, "msg": message}]})
