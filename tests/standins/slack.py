"""Slack incoming webhooks: `POST /services/T…/B…/<secret>` answered in plain text like Slack.

`hooks` maps a webhook path to its channel; `archived` lists channels that were archived since.
Unknown paths answer 404 `no_service`, archived channels 410 `channel_is_archived`, bodies that
are not JSON 400 `invalid_payload`, messages without text or blocks 400 `no_text`, and blocks
past Block Kit's limits 400 `invalid_blocks`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.standins.server import Script, apply_plan


def _blocks_problem(blocks: Any) -> str | None:
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return "header text must be plain_text of 1-150 characters"
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                return "section needs text or fields"
            if text is not None and not 0 < len(text.get("text", "")) <= 3000:
                return "section text must be 1-3000 characters"
            if fields is not None and (
                len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields)
            ):
                return "at most 10 fields of at most 2000 characters"
        else:
            return f"unsupported block type {kind!r}"
    return None


def slack_app(
    script: Script, hooks: dict[str, str], archived: frozenset[str] = frozenset(),
) -> Starlette:
    async def post(request: Request) -> PlainTextResponse:
        path = request.url.path
        raw = await request.body()
        script.requests.append({"path": path, "headers": dict(request.headers),
                                "body": raw.decode(errors="replace")})
        plan = script.next_plan()
        if plan is not None and plan.status is not None:
            headers = {"Retry-After": plan.retry_after} if plan.retry_after else None
            return PlainTextResponse(str(plan.body or "rollup_error"), plan.status,
                                     headers=headers)
        if plan is not None and not plan.accept:
            await apply_plan(plan)  # slow before anything happened
        channel = hooks.get(path)
        if channel is None:
            return PlainTextResponse("no_service", 404)
        if channel in archived:
            return PlainTextResponse("channel_is_archived", 410)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return PlainTextResponse("invalid_payload", 400)
        try:
            message = json.loads(raw)
        except ValueError:
            return PlainTextResponse("invalid_payload", 400)
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return PlainTextResponse("no_text", 400)
        if "blocks" in message and _blocks_problem(message["blocks"]) is not None:
            return PlainTextResponse("invalid_blocks", 400)
        script.accepted.append({"channel": channel, "path": path, "message": message})
        if plan is not None and plan.accept:
            await apply_plan(plan)  # accepted, then answers late: the exactly-once case
        return PlainTextResponse("ok", 200)

    return Starlette(routes=[Route("/services/{team}/{bot}/{secret}", post, methods=["POST"])])
