"""A customer's webhook receiver done right: it verifies Cairn's signature and de-duplicates.

Any method on any path. A request without a valid `X-Cairn-Signature` answers 401; one without
an `Idempotency-Key` answers 400. The first request with a key is recorded in
`script.accepted` and its reply remembered; a repeat of the key answers that same reply and is
not recorded again (even while the first is still answering, as after a client timeout).

A few paths answer differently, for the caller's reply handling:
`/text` answers `text/plain`, `/empty` answers 204, `/large` answers 1.5 MB, `/moved` answers
302 to `/elsewhere`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.channels.webhook import verify_signature
from tests.standins.server import Script, apply_plan

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    media_type: str

    def response(self) -> Response:
        return Response(self.body, self.status, media_type=self.media_type)


def _reply_for(path: str, number: int) -> Reply:
    if path == "/text":
        return Reply(200, b"thanks", "text/plain")
    if path == "/empty":
        return Reply(204, b"", "text/plain")
    if path == "/large":
        return Reply(200, b"x" * (1536 * 1024), "text/plain")
    body = json.dumps({"received": True, "id": f"evt_{number:04d}"}).encode()
    return Reply(200, body, "application/json")


def hooks_app(script: Script, secret: str, tolerance_s: float = 300.0) -> Starlette:
    replies: dict[str, Reply] = {}

    async def receive(request: Request) -> Response:
        raw = await request.body()
        headers = dict(request.headers)
        script.requests.append({"method": request.method, "path": request.url.path,
                                "headers": headers, "body": raw})
        if request.url.path == "/moved":
            return Response(status_code=302, headers={"Location": "/elsewhere"})
        if not verify_signature(secret, headers.get("x-cairn-timestamp"), raw,
                                headers.get("x-cairn-signature"), tolerance_s):
            return JSONResponse({"error": "invalid signature"}, 401)
        key = headers.get("idempotency-key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key header is required"}, 400)
        if key in replies:
            return replies[key].response()
        plan = script.next_plan()
        if plan is not None and plan.status is not None:
            extra = {"Retry-After": plan.retry_after} if plan.retry_after else None
            return JSONResponse(plan.body or {"error": "unavailable"}, plan.status,
                                headers=extra)
        if plan is not None and not plan.accept:
            await apply_plan(plan)
        body: Any = raw.decode(errors="replace")
        if headers.get("content-type", "").startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse({"error": "body is not JSON"}, 400)
        reply = _reply_for(request.url.path, len(script.accepted) + 1)
        replies[key] = reply
        script.accepted.append({"method": request.method, "path": request.url.path,
                                "key": key, "body": body, "headers": headers})
        if plan is not None and plan.accept:
            await apply_plan(plan)
        return reply.response()

    return Starlette(routes=[Route("/{path:path}", receive, methods=METHODS)])
