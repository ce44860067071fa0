"""A Postmark `POST /email` stand-in: checks the server token, the JSON body and the recipient the
way Postmark does, and answers with Postmark's `{ErrorCode, Message}` bodies.

Errors: a wrong token answers 401 with ErrorCode 10; a missing or malformed From/To, or no body,
answers 422 with ErrorCode 300; a recipient in `inactive` answers 422 with ErrorCode 406; an
unknown message stream answers 422 with ErrorCode 1235. Scripted plans (`script.fail`,
`script.slow`) apply after the token and JSON checks, like a Postmark outage would.

`GET /messages/outbound` is Postmark's outbound message search: `recipient` and `metadata_<key>`
filters over the accepted messages, newest first, `{TotalCount, Messages}` with `MessageID`,
`ReceivedAt`, `Status` and `Metadata`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standins.server import Script, apply_plan

TOKEN = "postmark-test-server-token"
TRACK_LINKS = {"None", "HtmlAndText", "HtmlOnly", "TextOnly"}

_DEFAULT_FAILURES: dict[int, dict[str, Any]] = {
    429: {"ErrorCode": 429, "Message": "Rate limit exceeded: slow down and retry later."},
    500: {"Message": "Internal server error: the message was not sent."},
    503: {"ErrorCode": 100, "Message": "Postmark is down for maintenance."},
}


def _error(status: int, code: int, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ErrorCode": code, "Message": message}, status_code=status,
                        headers=headers)


def _invalid(body: dict[str, Any]) -> str | None:
    """Postmark's ErrorCode 300 checks, in the order Postmark reports them."""
    sender = body.get("From")
    if not isinstance(sender, str) or not sender.strip():
        return "Invalid 'From' address: none given."
    if "@" not in sender:
        return f"Invalid 'From' address: '{sender}'."
    to = body.get("To")
    if not isinstance(to, str) or not to.strip():
        return "Zero recipients specified"
    if "@" not in to:
        return f"Error parsing 'To': Illegal email address '{to}'. It must contain the '@' sign."
    if not body.get("TextBody") and not body.get("HtmlBody"):
        return "Provide either email TextBody or HtmlBody or both."
    headers = body.get("Headers", [])
    if not isinstance(headers, list) or any(
        not isinstance(h, dict) or set(h) != {"Name", "Value"} for h in headers
    ):
        return "Headers must be a list of {Name, Value} objects."
    metadata = body.get("Metadata", {})
    if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
        return "Metadata must be an object of string values."
    if body.get("TrackLinks", "None") not in TRACK_LINKS:
        return f"Invalid TrackLinks value: {body.get('TrackLinks')!r}."
    return None


def postmark_app(
    script: Script, *, token: str = TOKEN, inactive: Iterable[str] = (),
    streams: Iterable[str] = ("outbound", "broadcast"),
) -> Starlette:
    """The stand-in app; `inactive` are addresses Postmark has suppressed (bounced, complained,
    unsubscribed)."""
    dead = {address.lower() for address in inactive}
    known_streams = set(streams)
    received_at: dict[str, str] = {}  # MessageID -> when the stand-in accepted it

    async def send_email(request: Request) -> JSONResponse:
        raw = await request.body()
        record: dict[str, Any] = {"path": request.url.path, "headers": dict(request.headers),
                                  "body": None}
        script.requests.append(record)
        if request.headers.get("x-postmark-server-token") != token:
            return _error(401, 10, "The Server Token you provided in the X-Postmark-Server-Token "
                                   "request header was invalid. Check it and try again.")
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(422, 409, "Send JSON: set Accept and Content-Type to application/json.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(422, 402, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(422, 403, "The JSON does not describe one email.")
        record["body"] = body

        plan = script.next_plan()
        if plan is not None and plan.status is not None:
            failure = plan.body if plan.body is not None else _DEFAULT_FAILURES.get(
                plan.status, {"ErrorCode": plan.status, "Message": "Scripted failure."})
            headers = {"Retry-After": plan.retry_after} if plan.retry_after else None
            return JSONResponse(failure, status_code=plan.status, headers=headers)
        if plan is not None and plan.delay and not plan.accept:
            await asyncio.sleep(plan.delay)
            return _error(503, 100, "Postmark is down for maintenance.")

        problem = _invalid(body)
        if problem:
            return _error(422, 300, problem)
        stream = body.get("MessageStream", "outbound")
        if stream not in known_streams:
            return _error(422, 1235, f"The message stream '{stream}' does not exist on this "
                                     "server.")
        if body["To"].lower() in dead:
            return _error(422, 406, "You tried to send to recipient(s) marked inactive. "
                                    f"Found inactive addresses: {body['To']}. Inactive "
                                    "recipients hard bounced, complained or were suppressed.")

        message_id = str(uuid.uuid4())
        script.accepted.append({**body, "MessageID": message_id})
        received_at[message_id] = datetime.now(UTC).isoformat()
        await apply_plan(plan)
        return JSONResponse({
            "To": body["To"],
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        })

    async def search_outbound(request: Request) -> JSONResponse:
        if request.headers.get("x-postmark-server-token") != token:
            return _error(401, 10, "The Server Token you provided in the X-Postmark-Server-Token "
                                   "request header was invalid. Check it and try again.")
        query = request.query_params
        try:
            count, offset = int(query["count"]), int(query["offset"])
        except (KeyError, ValueError):
            return _error(422, 1, "count and offset are required integers.")
        wanted = {k[len("metadata_"):]: v for k, v in query.items() if k.startswith("metadata_")}
        recipient = query.get("recipient", "").lower()
        found = [
            m for m in reversed(script.accepted)
            if (not recipient or m["To"].lower() == recipient)
            and all((m.get("Metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        return JSONResponse({"TotalCount": len(found), "Messages": [
            {"MessageID": m["MessageID"], "To": [{"Email": m["To"]}], "Recipients": [m["To"]],
             "ReceivedAt": received_at.get(m["MessageID"]), "Status": "Sent",
             "Subject": m.get("Subject"),
             "MessageStream": m.get("MessageStream", "outbound"),
             "Metadata": m.get("Metadata") or {}}
            for m in found[offset:offset + count]
        ]})

    return Starlette(routes=[Route("/email", send_email, methods=["POST"]),
                             Route("/messages/outbound", search_outbound, methods=["GET"])])
