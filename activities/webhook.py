"""`webhook` steps: an HTTP call to another system, its answer kept for the journey (`save_as`)
(in its ledger row; the run holds a reference, `cairn.contracts.saved_response`).

URL, body and header values are Liquid with the contact, the trigger and the journey's context in
scope. The call goes through the workspace's signed webhook caller when webhooks are enabled,
else the outbox records it. The ledger keeps the header names only: their values often hold
credentials.
"""

from __future__ import annotations

from typing import Any

from cairn.channels.registry import ChannelSet
from cairn.channels.webhook import WebhookCaller
from cairn.contact import ContactSnapshot
from cairn.contracts import ActionRequest
from cairn.journey import Webhook
from cairn.templates import render_text


def _name(request: ActionRequest) -> str:
    return f"webhook at step {request.context.step}"


def caller(channels: ChannelSet, spec: Webhook) -> WebhookCaller | None:
    return channels.webhooks


def columns(
    request: ActionRequest, spec: Webhook, contact: ContactSnapshot, scope: dict[str, Any],
) -> dict[str, Any]:
    """The request as it goes out, without its header values."""
    name = _name(request)
    rendered: dict[str, Any] = {
        "method": spec.method,
        "url": render_text(name, "url", spec.url, scope),
    }
    if spec.body is not None:
        rendered["body"] = render_text(name, "body", spec.body, scope)
    if spec.headers:
        rendered["headers"] = sorted(spec.headers)
    return {"channel": None, "rendered": rendered}


async def call(
    target: WebhookCaller, request: ActionRequest, spec: Webhook, contact: ContactSnapshot,
    scope: dict[str, Any], columns: dict[str, Any],
) -> tuple[Any, str | None]:
    """The receiver's answer: its JSON when it sent JSON, else its text."""
    name = _name(request)
    headers = {k: render_text(name, f"headers.{k}", v, scope) for k, v in spec.headers.items()}
    rendered = columns["rendered"]
    reply = await target.call(spec.method, rendered["url"], rendered.get("body"), headers,
                              request.context.idempotency_key)
    return (reply.json if reply.json is not None else reply.text), None
