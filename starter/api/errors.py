"""How the API says "your input is wrong": a 422 whose `errors` name each field in words.

`body.batch[1].event: Field required`, beside FastAPI's structured `detail`, so a developer can act
on the message without reading pydantic's error format.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from cairn.log import get_logger

log = get_logger(__name__)

_CALL_TAGS = ("track", "identify", "page")
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
    errors = list(exc.errors())
    log.info("api.rejected", path=request.url.path, errors=readable_errors(errors))
    return JSONResponse(
        status_code=422,
        content={"errors": readable_errors(errors), "detail": jsonable_encoder(errors)},
    )


async def trait_refused(request: Request, exc: Exception) -> JSONResponse:
    """A trait the store cannot keep (unknown time zone, over-long phone): the caller's error."""
    message = f"body.traits.{exc}"
    log.info("api.rejected", path=request.url.path, errors=[message])
    return JSONResponse(status_code=422, content={"errors": [message], "detail": [message]})
