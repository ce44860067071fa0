"""Actions toward other systems: `notify`, `webhook`, `audience` and `start_journey`.

Each goes through its provider when the workspace configured one (Slack for alerts, signed HTTP
for webhooks, Facebook/Google for audiences); otherwise the `outbox` records it in the deliveries
ledger, rendered exactly as it would go out, with status `recorded`. `start_journey` stores an
entry request for the target journey, which the relay routes. One row per step visit, keyed like
sends: a retried activity answers the recorded row.

Audience rows hold only SHA-256 hashes of the normalised email and phone, the form ad platforms
take, never the identifiers themselves.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import (
    TEMPLATE_ERROR,
    VALIDATION_ERROR,
    contact_snapshot,
    permanent,
    step_log,
)
from cairn.channels.audiences import Platform, normalise_email, normalise_phone, sha256_hex
from cairn.channels.base import Alert, AudienceMember, ProviderError
from cairn.channels.registry import ChannelSet
from cairn.contact import ContactSnapshot
from cairn.contracts import (
    PROVIDER_REJECTED,
    PROVIDER_UNAVAILABLE,
    RECORD_ACTION,
    ActionRequest,
    ActionResult,
)
from cairn.journey import TRIGGER_EVENTS, AudienceSync, Notify, TemplateParts, Webhook
from cairn.store import deliveries as deliveries_repo
from cairn.store import events as events_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery
from cairn.templates import TemplateRenderError, message_scope, render, render_text

OUTBOX = "outbox"
RECORDED = "recorded"
SENDING = "sending"
UNCONFIRMED = "outcome unknown after an interrupted call; not repeated so it cannot happen twice"


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def hashed_identifiers(contact: ContactSnapshot, sync: str) -> dict[str, str | None]:
    """The contact's email and phone, normalised the way the ad platform matches, then hashed:
    the same normalisation the syncers send, so the ledger shows what the platform received."""
    platform: Platform = "facebook" if sync == "facebook" else "google"
    email = normalise_email(contact.email, platform)
    phone = normalise_phone(contact.phone, platform)
    return {
        "email_sha256": sha256_hex(email) if email else None,
        "phone_sha256": sha256_hex(phone) if phone else None,
    }


def notify_channel(to: str, template: TemplateParts) -> str:
    """The template part an alert uses: the one named by `to`'s prefix (`slack:#sales`), else
    the template's first part."""
    prefix = to.split(":", 1)[0] if ":" in to else to
    if prefix in template:
        return prefix
    return next(iter(template))


class LedgerActivities:
    """Notify, webhook, audience and start_journey: through their provider when one is set up
    (Slack, signed HTTP, Facebook/Google), else recorded by the outbox; once per step visit.

    Exactly-once follows the sends' rule: the row is committed as `sending` before the call,
    `sent` after it; a retry finding `sending` calls again only a target that de-duplicates by
    the idempotency key (webhook receivers, audiences), otherwise records the outcome unconfirmed.
    """

    def __init__(self, store: Store, channels: ChannelSet | None = None) -> None:
        self.store = store
        self.channels = channels or ChannelSet(providers={})

    @activity.defn(name=RECORD_ACTION)
    async def record_action(self, request: ActionRequest) -> ActionResult:
        """Render the action, then call its target (or record it) once under the step's key."""
        context = request.context
        bound = step_log(context).bind(action=request.kind)
        target = self._target(request)
        async with self.store.session() as s, s.begin():
            recorded = await deliveries_repo.find_delivery(s, context.idempotency_key)
            if recorded is not None and recorded.status != SENDING:
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
            if recorded is not None:
                row = recorded
                if not getattr(target, "idempotent", False):
                    row.status = "sent"
                    row.reason = UNCONFIRMED
                    bound.warning("action.unconfirmed", delivery_id=row.id)
                    return ActionResult(delivery_id=row.id, status=row.status,
                                        response=row.response)
            else:
                row, new = await deliveries_repo.record_delivery(
                    s,
                    idempotency_key=context.idempotency_key,
                    kind=request.kind,
                    workflow_id=context.workflow_id,
                    journey_key=context.journey_key,
                    step=context.step,
                    contact_id=context.contact_id,
                    provider=getattr(target, "name", OUTBOX),
                    status=RECORDED if target is None else SENDING,
                    created_at=context.now,
                    sent_at=context.now if target is None else None,
                    **details,
                )
                if request.kind == "start_journey" and request.start_journey is not None:
                    await self._request_entry(s, request, row.id)
                if target is None:
                    bound.info("action.recorded" if new else "action.duplicate",
                               delivery_id=row.id, channel=row.channel, template=row.template)
                    return ActionResult(delivery_id=row.id, status=row.status,
                                        response=row.response)
            row_id = row.id
        try:
            response, message_id = await self._call(target, request, contact, scope, details)
        except ProviderError as error:
            # Returns only when the outcome is unknown and the call must not be repeated.
            return await self._failed(row_id, error, getattr(target, "idempotent", False),
                                      context.now)
        async with self.store.session() as s, s.begin():
            done = await s.get(Delivery, row_id)
            assert done is not None
            done.status = "sent"
            done.response = response
            done.provider_message_id = message_id
            done.sent_at = context.now
            bound.info("action.sent", delivery_id=done.id, provider=done.provider)
            return ActionResult(delivery_id=done.id, status=done.status, response=response)

    def _target(self, request: ActionRequest) -> Any:
        """The provider that carries this action, or None when it is only recorded."""
        if request.kind == "notify":
            return self.channels.notifier
        if request.kind == "webhook":
            return self.channels.webhooks
        if request.kind == "audience" and request.audience is not None:
            return self.channels.audiences.get(request.audience.sync)
        return None

    async def _call(
        self, target: Any, request: ActionRequest, contact: ContactSnapshot,
        scope: dict[str, Any], details: dict[str, Any],
    ) -> tuple[Any, str | None]:
        """Make the call; returns what to keep as the response and the provider's id."""
        key = request.context.idempotency_key
        if request.kind == "notify" and request.notify is not None:
            rendered = details["rendered"]
            destination = request.notify.to.split(":", 1)[1] if ":" in request.notify.to \
                else request.notify.to
            text = str(rendered.get("text") or rendered.get("body") or "")
            receipt = await target.notify(Alert(destination=destination, text=text,
                                                title=rendered.get("title"),
                                                idempotency_key=key))
            return {"provider": receipt.provider, **receipt.response}, receipt.provider_message_id
        if request.kind == "webhook" and request.webhook is not None:
            spec = request.webhook
            name = f"webhook at step {request.context.step}"
            headers = {k: render_text(name, f"headers.{k}", v, scope)
                       for k, v in spec.headers.items()}
            reply = await target.call(spec.method, details["rendered"]["url"],
                                      details["rendered"].get("body"), headers, key)
            return (reply.json if reply.json is not None else reply.text), None
        if request.kind == "audience" and request.audience is not None:
            spec_a = request.audience
            member = AudienceMember(
                contact_id=contact.id, email=contact.email, phone=contact.phone,
                first_name=_text(contact.attributes.get("first_name")),
                last_name=_text(contact.attributes.get("last_name")),
                country=_text(contact.attributes.get("country")),
                zip=_text(contact.attributes.get("zip")),
            )
            receipt = await target.sync(spec_a.audience, spec_a.action, [member], key)
            return {"provider": receipt.provider, **receipt.response}, receipt.provider_message_id
        raise permanent(f"{request.kind} has no provider call", VALIDATION_ERROR)

    async def _failed(self, row_id: int, error: ProviderError, idempotent: bool,
                      now: datetime) -> ActionResult:
        """Classify a failed call like a send: unconfirmed (answered), retry, or a refusal."""
        async with self.store.session() as s, s.begin():
            row = await s.get(Delivery, row_id)
            assert row is not None
            if error.outcome_unknown and not idempotent:
                row.status = "sent"
                row.reason = f"{UNCONFIRMED}: {error}"
                row.sent_at = now
                return ActionResult(delivery_id=row.id, status=row.status, response=row.response)
            if error.retryable:
                if not error.outcome_unknown:
                    await s.execute(delete(Delivery).where(Delivery.id == row_id))
            else:
                row.status = "failed"
                row.reason = str(error)
        if error.retryable:
            delay = timedelta(seconds=error.retry_after) if error.retry_after is not None else None
            raise ApplicationError(str(error), type=PROVIDER_UNAVAILABLE, next_retry_delay=delay)
        raise ApplicationError(str(error), type=PROVIDER_REJECTED, non_retryable=True)

    async def _request_entry(self, s: Any, request: ActionRequest, delivery_id: int) -> None:
        """Hand the contact to another journey: a `journey_entry_requested` event for it,
        stored unrouted; the relay routes it like an entry request from the API."""
        assert request.start_journey is not None
        context = request.context
        properties = {"journey": request.start_journey.journey,
                      "from_journey": context.journey_key, "from_step": context.step}
        if request.trigger is not None:
            properties["trigger"] = request.trigger.event
        await events_repo.record_event(
            s, message_id=f"start/{context.idempotency_key}", type="track",
            contact_id=context.contact_id, name=TRIGGER_EVENTS["api"], properties=properties,
            timestamp=context.now, received_at=context.now,
        )

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
