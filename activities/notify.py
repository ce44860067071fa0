"""`notify` steps: an alert for people (a sales channel, a collections team), not for the contact.

It goes through the workspace's notifier (Slack) when one is set up, else the outbox records it.
The alert's template has a part per kind of destination (`slack: {text: ...}`): `to: slack:#sales`
renders the `slack` part, a `to` without a known prefix the template's first part.
"""

from __future__ import annotations

from typing import Any

from activities.context import TEMPLATE_ERROR, permanent
from cairn.channels.base import Alert, Notifier
from cairn.channels.registry import ChannelSet
from cairn.contact import ContactSnapshot
from cairn.contracts import ActionRequest
from cairn.journey import Notify, TemplateParts
from cairn.templates import render


def notify_channel(to: str, template: TemplateParts) -> str:
    """The template part an alert uses: the one named by `to`'s prefix (`slack:#sales`), else
    the template's first part."""
    prefix = to.split(":", 1)[0] if ":" in to else to
    if prefix in template:
        return prefix
    return next(iter(template))


def notifier(channels: ChannelSet, spec: Notify) -> Notifier | None:
    return channels.notifier


def columns(
    request: ActionRequest, spec: Notify, contact: ContactSnapshot, scope: dict[str, Any],
) -> dict[str, Any]:
    """The alert as it goes out: its destination and the rendered part."""
    template = request.template or {}
    if not template:
        raise permanent(
            f"notify to {spec.to}: template '{spec.template}' has no parts; add one "
            f"(e.g. slack: {{text: ...}}) in templates/{spec.template}.yaml",
            TEMPLATE_ERROR,
        )
    channel = notify_channel(spec.to, template)
    parts = render(spec.template, template, channel, scope)
    return {"channel": channel[:32], "template": spec.template,
            "rendered": {"to": spec.to, **parts}}


async def call(
    target: Notifier, request: ActionRequest, spec: Notify, contact: ContactSnapshot,
    scope: dict[str, Any], columns: dict[str, Any],
) -> tuple[Any, str | None]:
    rendered = columns["rendered"]
    destination = spec.to.split(":", 1)[1] if ":" in spec.to else spec.to
    text = str(rendered.get("text") or rendered.get("body") or "")
    receipt = await target.notify(Alert(destination=destination, text=text,
                                        title=rendered.get("title"),
                                        idempotency_key=request.context.idempotency_key))
    return {"provider": receipt.provider, **receipt.response}, receipt.provider_message_id
