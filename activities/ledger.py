"""Actions toward other systems: `notify`, `webhook`, `audience` and `start_journey`.

Until their real providers arrive (Slack, HTTP with HMAC, Facebook/Google audiences, the router)
each action is recorded in the deliveries ledger by the `outbox` provider, rendered exactly as it
would go out, with status `recorded`. One row per step visit, keyed like sends: a retried activity
answers the recorded row.

Audience rows hold only SHA-256 hashes of the normalised email and phone, the form ad platforms
take, never the identifiers themselves.
"""

from __future__ import annotations

import hashlib
from typing import Any

from temporalio import activity

from activities.context import (
    TEMPLATE_ERROR,
    VALIDATION_ERROR,
    contact_snapshot,
    permanent,
    step_log,
)
from cairn.actions import RECORD_ACTION, ActionRequest, ActionResult
from cairn.contact import ContactSnapshot
from cairn.journey import AudienceSync, Notify, TemplateParts, Webhook
from cairn.reachability import normalised_phone, valid_email
from cairn.store import deliveries as deliveries_repo
from cairn.store.db import Store
from cairn.templates import TemplateRenderError, message_scope, render, render_text

OUTBOX = "outbox"
RECORDED = "recorded"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hashed_identifiers(contact: ContactSnapshot, sync: str) -> dict[str, str | None]:
    """The contact's email and phone, normalised the way the ad platform matches, then hashed.

    Email: trimmed, lower case. Phone: E.164; Facebook wants the digits without `+`, Google
    the `+` form.
    """
    email = contact.email.strip().lower() if contact.email else None
    phone = normalised_phone(contact.phone)
    if phone is not None and sync == "facebook":
        phone = phone.lstrip("+")
    return {
        "email_sha256": sha256(email) if email and valid_email(email) else None,
        "phone_sha256": sha256(phone) if phone else None,
    }


def notify_channel(to: str, template: TemplateParts) -> str:
    """The template part an alert uses: the one named by `to`'s prefix (`slack:#sales`), else
    the template's first part."""
    prefix = to.split(":", 1)[0] if ":" in to else to
    if prefix in template:
        return prefix
    return next(iter(template))


class LedgerActivities:
    """Records notify, webhook, audience and start_journey actions through the outbox."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name=RECORD_ACTION)
    async def record_action(self, request: ActionRequest) -> ActionResult:
        """Render the action as it would go out and record it once under the step's key."""
        context = request.context
        bound = step_log(context).bind(action=request.kind)
        async with self.store.session() as s, s.begin():
            recorded = await deliveries_repo.find_delivery(s, context.idempotency_key)
            if recorded is not None:
                bound.info("action.duplicate", delivery_id=recorded.id)
                return ActionResult(delivery_id=recorded.id, status=recorded.status,
                                    response=recorded.response)
            contact = await contact_snapshot(s, context.contact_id)
            scope = message_scope(
                contact.as_scope(),
                request.trigger.as_scope() if request.trigger else None,
                request.journey_context,
            )
            details = self._details(request, contact, scope)
            row, new = await deliveries_repo.record_delivery(
                s,
                idempotency_key=context.idempotency_key,
                kind=request.kind,
                workflow_id=context.workflow_id,
                journey_key=context.journey_key,
                step=context.step,
                contact_id=context.contact_id,
                provider=OUTBOX,
                status=RECORDED,
                created_at=context.now,
                sent_at=context.now,
                **details,
            )
        bound.info("action.recorded" if new else "action.duplicate", delivery_id=row.id,
                   channel=row.channel, template=row.template)
        return ActionResult(delivery_id=row.id, status=row.status, response=row.response)

    def _details(self, request: ActionRequest, contact: ContactSnapshot,
                 scope: dict[str, Any]) -> dict[str, Any]:
        """The ledger columns particular to each kind of action."""
        try:
            if request.kind == "notify" and request.notify is not None:
                return self._notify(request.notify, request.template or {}, scope)
            if request.kind == "webhook" and request.webhook is not None:
                return self._webhook(request.webhook, request.context.step, scope)
            if request.kind == "audience" and request.audience is not None:
                return self._audience(request.audience, contact)
            if request.kind == "start_journey" and request.start_journey is not None:
                target = request.start_journey.journey
                return {"channel": None, "rendered": {"journey": target},
                        "reason": f"hand-off to journey {target}"}
        except TemplateRenderError as error:
            raise permanent(str(error), TEMPLATE_ERROR) from error
        raise permanent(
            f"record_action of kind {request.kind!r} needs its `{request.kind}` body in the "
            "request",
            VALIDATION_ERROR,
        )

    @staticmethod
    def _notify(spec: Notify, template: TemplateParts, scope: dict[str, Any]) -> dict[str, Any]:
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

    @staticmethod
    def _webhook(spec: Webhook, step: str, scope: dict[str, Any]) -> dict[str, Any]:
        name = f"webhook at step {step}"
        rendered: dict[str, Any] = {
            "method": spec.method,
            "url": render_text(name, "url", spec.url, scope),
        }
        if spec.body is not None:
            rendered["body"] = render_text(name, "body", spec.body, scope)
        if spec.headers:
            # Header values often hold credentials: the ledger keeps their names only.
            rendered["headers"] = sorted(spec.headers)
        return {"channel": None, "rendered": rendered}

    @staticmethod
    def _audience(spec: AudienceSync, contact: ContactSnapshot) -> dict[str, Any]:
        identifiers = hashed_identifiers(contact, spec.sync)
        rendered = {"sync": spec.sync, "audience": spec.audience, "action": spec.action,
                    **identifiers}
        reason = None if any(identifiers.values()) else "no email or phone to match on"
        return {"channel": spec.sync, "rendered": rendered, "reason": reason}
