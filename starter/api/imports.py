"""`POST /v1/imports`: upload a CSV of contacts, optionally starting a journey for each good row.

The body is the CSV itself (`Content-Type: text/csv`) or a `multipart/form-data` upload whose
file part holds it (a browser form, `curl -F file=@contacts.csv`). The answer is the import's
summary: rows applied, rows an earlier import of the same file already applied, and every bad
row with its line and reason. Good rows are stored before the answer; the journey entries they
request are routed right after it (as for `/v1/track`), so a Temporal outage delays entries but
loses none.

Multipart bodies are parsed with the standard library's MIME parser, so the API needs no extra
dependency for uploads. The work itself is `cairn.events.imports`.
"""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request

from cairn.events.imports import (
    ImportFileError,
    ImportJourneyError,
    ImportSummary,
    import_csv,
    route_import,
)
from cairn.events.ingest import Ingest
from cairn.log import get_logger
from cairn.sweeps import SweepConfig
from starter.api.auth import requires

log = get_logger(__name__)

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
"""Largest CSV accepted in one request (about half a million contacts); split larger files."""

_CSV_EXAMPLE = "userId,email,plan,timezone\nc-1,ana@example.com,trial,Europe/Bucharest\n"


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The uploaded file of a multipart body: the part named `file`, else the first file part."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise ImportFileError("the multipart body could not be read; send the CSV as the "
                              "`file` field, or as the body with Content-Type: text/csv")
    parts = [p for p in message.iter_parts() if isinstance(p, EmailMessage)]
    named = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
    files = named or [p for p in parts if p.get_filename() is not None]
    if not files:
        raise ImportFileError("the upload has no file; send the CSV in a form field named `file`")
    payload = files[0].get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


async def _csv_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "text/csv")
    body = await request.body()
    if len(body) > MAX_UPLOAD_BYTES:
        raise HTTPException(status_code=413, detail=(
            f"the file has {len(body)} bytes; at most {MAX_UPLOAD_BYTES} are accepted in one "
            "request: split it"))
    if content_type.lower().startswith("multipart/"):
        return _multipart_file(content_type, body)
    return body


def imports_router(ingest: Ingest, entries: SweepConfig | None = None) -> APIRouter:
    """The import endpoint over one `Ingest` (which decides whether entries are routed);
    `entries` hands a journey's entries to the workers (`cairn.events.imports.route_import`)."""
    router = APIRouter(tags=["imports"])

    @router.post(
        "/v1/imports", dependencies=[requires("admin")],
        response_model=ImportSummary, status_code=200,
        summary="Import contacts from CSV; optionally start a journey for each good row",
        openapi_extra={"requestBody": {"content": {
            "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
            "multipart/form-data": {"schema": {
                "type": "object", "properties": {"file": {"type": "string",
                                                          "format": "binary"}}},
                "example": {"file": "contacts.csv"}},
        }, "required": True}},
        responses={
            404: {"description": "the journey is not published"},
            413: {"description": "the file is too large for one request"},
            422: {"description": "the file cannot be read, or the journey does not start "
                                 "from imports"},
        },
    )
    async def import_contacts(
        request: Request,
        background: BackgroundTasks,
        journey: str | None = Query(
            None, description="key of a journey with `trigger: {imported: true}` to start "
                              "for each good row", examples=["welcome-imported"]),
    ) -> ImportSummary:
        """Header row first: `userId` (or `user_id`, or `email`) identifies the contact, the
        other columns are traits. Bad rows are listed with their line and left out; the others
        are applied. Importing the same file again changes nothing."""
        try:
            content = await _csv_body(request)
            summary, results = await import_csv(ingest, content, journey=journey, route=False)
        except ImportJourneyError as error:
            raise HTTPException(status_code=404 if error.unknown else 422,
                                detail=str(error)) from error
        except ImportFileError as error:
            raise HTTPException(status_code=422, detail=f"body: {error}") from error
        if any(not r.duplicate for r in results):
            background.add_task(route_import, ingest, results, import_id=summary.import_id,
                                journey=journey, entries=entries)
        return summary

    return router
