"""Action steps: each calls one activity that records its effect under an idempotency key.

A `send` asks first whether and where it may go now: a message held by quiet hours waits here, on
a durable timer that an exit goal interrupts, never in a sleeping activity.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from cairn.arms import goal_events, variant_for
    from cairn.contracts import (
        CHANGE_SCORE,
        CREATE_TASK,
        DELIVER_MESSAGE,
        PREPARE_SEND,
        PROVIDER_REJECTED,
        RECORD_ACTION,
        UPDATE_PROFILE,
        ActionRequest,
        ActionResult,
        ProfileUpdateRequest,
        ScoreRequest,
        ScoreResult,
        SendOutcome,
        SendPlan,
        SendRequest,
        TaskRequest,
        TaskResult,
    )
    from cairn.journey import (
        END,
        AudienceStep,
        NotifyStep,
        ScoreStep,
        Send,
        SendStep,
        StartJourneyStep,
        TaskStep,
        UpdateStep,
        WebhookStep,
    )
    from cairn.update_values import has_templates

from workflows.run import JourneyRun, Next, Waited

MAX_HOLDS = 10
"""Quiet-hour holds in a row before a send gives up (a contact's settings may keep changing)."""


SEND_FALLBACK_PATCH = "send-fallback-on-provider-rejection"


async def send(step: SendStep, run: JourneyRun) -> Next:
    """Deliver a message on the first reachable channel, respecting consent, quiet hours and
    frequency caps; when a provider refuses it for good, try the next channel of `channels:`."""
    spec = step.send
    request = SendRequest(
        context=run.context(),
        send=spec,
        template=run.journey.templates.get(spec.template, {}),
        trigger=run.state.trigger,
        journey_context=run.state.context,
        quiet_hours=run.journey.settings.quiet_hours,
        default_timezone=run.journey.settings.timezone,
        when_held=spec.when_held or run.journey.settings.when_held or "wait",
        track_links=run.journey.settings.track_links,
        track_opens=run.journey.settings.track_opens,
    )
    if spec.variants:
        request = _with_variant(request, step, run)
    label = step.summary or f"{run.step}: {request.template_name} via {'/'.join(spec.candidates())}"
    if run.lean:
        return await _send_planned_in_delivery(step, run, request, label)
    refused: list[str] = []  # holds and refusals on this visit, all said in the path
    while True:
        plan = await _plan(request, run, label, step.next, refused)
        if isinstance(plan, Next):
            return plan
        if plan.status != "ready":
            run.note(f"{plan.status}: {plan.reason}")
            return Next.to(step.next)
        try:
            outcome: SendOutcome = await run.act(
                DELIVER_MESSAGE,
                request.model_copy(update={"channel": plan.channel}),
                SendOutcome,
                f"send {label}",
                delivery=True,
            )
        except ActivityError as error:
            cause = error.cause or error
            refused.append(f"failed on {plan.channel}: {cause}")
            run.note("; ".join(refused))
            rejected = (isinstance(cause, ApplicationError) and cause.type == PROVIDER_REJECTED)
            remaining = [c for c in request.candidates() if c != plan.channel]
            if rejected and remaining and workflow.patched(SEND_FALLBACK_PATCH):
                request = request.model_copy(update={
                    "exclude": [*request.exclude, plan.channel or ""],
                    "attempt": request.attempt + 1,
                    "context": run.context(),
                })
                continue
            return _failure(spec, step.next)
        run.note("; ".join([*refused, _sent_note(outcome, outcome.channel or plan.channel)]))
        if outcome.status == "failed" and spec.on_failure:
            return Next.to(spec.on_failure, via="on_failure")
        return Next.to(step.next)


async def _send_planned_in_delivery(
    step: SendStep, run: JourneyRun, request: SendRequest, label: str,
) -> Next:
    """The send of a lean run: one `deliver_message` plans and sends (no channel in the request).

    It answers `deferred:*` with `hold_until` when quiet hours or a cap hold the message (the run
    waits on a durable timer, then asks again), `skipped:*` when no channel may be used, or the
    delivery's outcome; a provider's refusal for good names the refused channel in its details,
    and the next candidate is tried under its own ledger key.
    """
    spec = step.send
    trail: list[str] = []  # holds and refusals on this visit, all said in the path
    holds = 0
    if run.entry_by_send and step.next == END and not spec.on_failure:
        # The run ends `completed` after this send: a send settled `sent` closes the entry
        # with its ledger row (any other outcome leaves it to `finish_entry`).
        request.closes_entry = True
    while True:
        try:
            outcome: SendOutcome = await run.act(
                DELIVER_MESSAGE, request, SendOutcome, f"send {label}", delivery=True)
        except ActivityError as error:
            cause = error.cause or error
            channel = _refused_channel(cause)
            trail.append(f"failed on {channel or 'its channel'}: {cause}")
            run.note("; ".join(trail))
            rejected = isinstance(cause, ApplicationError) and cause.type == PROVIDER_REJECTED
            remaining = [c for c in request.candidates() if c != channel]
            if rejected and channel and remaining:
                request = request.model_copy(update={
                    "exclude": [*request.exclude, channel],
                    "attempt": request.attempt + 1,
                    "context": run.context(),
                })
                holds = 0
                continue
            return _failure(spec, step.next)
        if outcome.status.startswith("deferred:") and outcome.hold_until is not None:
            trail.append(f"{outcome.status} until {outcome.hold_until.isoformat()}")
            run.note("; ".join(trail))
            reason = "quiet hours" if outcome.status == "deferred:quiet_hours" else "frequency cap"
            waited = await run.wait(outcome.hold_until, f"{reason}: hold {label}")
            if waited is not Waited.ELAPSED:
                return run.after_wait(waited, step.next)
            holds += 1
            if holds >= MAX_HOLDS:
                run.note("failed: still held after repeated holds")
                return _failure(spec, step.next)
            request.context = run.context()
            continue
        if outcome.status.startswith("skipped:"):
            run.note(f"{outcome.status}: {outcome.reason}")
            return Next.to(step.next)
        run.note("; ".join([*trail, _sent_note(outcome, outcome.channel)]))
        run.entry_closed = outcome.entry_closed
        if outcome.status == "failed" and spec.on_failure:
            return Next.to(spec.on_failure, via="on_failure")
        return Next.to(step.next)


def _with_variant(request: SendRequest, step: SendStep, run: JourneyRun) -> SendRequest:
    """The send of the contact's variant (by bucket); an automatic experiment also carries every
    variant's parts, so the delivery can send a decided winner instead."""
    spec = step.send
    chosen = variant_for(spec, run.journey.key, run.step, run.input.contact_id)
    update: dict[str, Any] = {
        "variant": chosen.arm, "template": run.journey.templates.get(chosen.template, {})}
    if spec.experiment is not None and spec.experiment.automatic:
        update["variant_templates"] = {
            v.arm: run.journey.templates.get(v.template, {}) for v in spec.variants or []}
        update["goal_events"] = list(goal_events(run.journey, spec.experiment))
    return request.model_copy(update=update)


def _sent_note(outcome: SendOutcome, channel: str | None) -> str:
    variant = f" (variant {outcome.variant})" if outcome.variant else ""
    return f"{outcome.status} on {channel}{variant}"


def _failure(spec: Send, then: str) -> Next:
    """Where a send that failed goes: its `on_failure` step, else on as usual."""
    if spec.on_failure:
        return Next.to(spec.on_failure, via="on_failure")
    return Next.to(then)


def _refused_channel(cause: BaseException) -> str | None:
    """The channel a planning delivery names in a refusal's details."""
    if isinstance(cause, ApplicationError) and cause.details:
        channel = cause.details[0]
        return channel if isinstance(channel, str) else None
    return None


async def _plan(
    request: SendRequest, run: JourneyRun, label: str, then: str, trail: list[str],
) -> SendPlan | Next:
    """Ask where the send may go, waiting out holds (quiet hours, caps) on durable timers.

    Returns the plan, or where the journey goes instead: an exit goal during a hold, or the
    failure branch (else `then`) after too many holds in a row. Updates the request's journey
    time after each hold.
    """
    spec = request.send
    for _ in range(MAX_HOLDS):
        plan: SendPlan = await run.act(PREPARE_SEND, request, SendPlan, f"check {label}")
        if not plan.status.startswith("deferred:") or plan.hold_until is None:
            return plan
        trail.append(f"{plan.status} until {plan.hold_until.isoformat()}")
        run.note("; ".join(trail))
        reason = "quiet hours" if plan.status == "deferred:quiet_hours" else "frequency cap"
        waited = await run.wait(plan.hold_until, f"{reason}: hold {label}")
        if waited is not Waited.ELAPSED:
            return run.after_wait(waited, then)
        request.context = run.context()
    run.note("failed: still held after repeated holds")
    return _failure(spec, then)


async def score(step: ScoreStep, run: JourneyRun) -> Next:
    change = step.score
    result: ScoreResult = await run.act(
        CHANGE_SCORE, ScoreRequest(context=run.context(), change=change), ScoreResult,
        step.summary or f"score {change.dimension} {change.add:+d}",
    )
    run.note(f"{result.dimension} {change.add:+d} = {result.total}")
    return Next.to(step.next)


async def update(step: UpdateStep, run: JourneyRun) -> Next:
    spec = step.update
    request = ProfileUpdateRequest(context=run.context(), update=spec)
    if has_templates(spec.set):  # Liquid values see the trigger and the journey's context
        request.trigger, request.journey_context = run.state.trigger, run.state.context
    await run.act(
        UPDATE_PROFILE, request, None, step.summary or f"update profile at {run.step}",
    )
    changes = [f"set {k}" for k in spec.set] + [f"unset {k}" for k in spec.unset]
    changes += [f"tag +{t}" for t in spec.add_tags] + [f"tag -{t}" for t in spec.remove_tags]
    run.note(", ".join(changes))
    return Next.to(step.next)


async def task(step: TaskStep, run: JourneyRun) -> Next:
    spec = step.task
    result: TaskResult = await run.act(
        CREATE_TASK,
        TaskRequest(context=run.context(), task=spec, trigger=run.state.trigger),
        TaskResult,
        step.summary or f"task for {spec.queue}",
    )
    run.note(f"task #{result.task_id} in {spec.queue}")
    return Next.to(step.next)


async def _record(run: JourneyRun, request: ActionRequest, summary: str) -> ActionResult:
    """Run the action; a provider's refusal or exhausted retries are noted in the path and the
    journey goes on (an alert that could not be posted must not stop a customer's journey)."""
    try:
        result: ActionResult = await run.act(RECORD_ACTION, request, ActionResult, summary)
    except ActivityError as error:
        run.note(f"{request.kind} failed: {error.cause or error}")
        return ActionResult(delivery_id=0, status="failed", response=None)
    return result


async def webhook(step: WebhookStep, run: JourneyRun) -> Next:
    spec = step.webhook
    result = await _record(
        run,
        ActionRequest(
            context=run.context(), kind="webhook", webhook=spec, trigger=run.state.trigger,
            journey_context=run.state.context,
        ),
        step.summary or f"webhook {spec.method} {spec.url}",
    )
    if spec.save_as:
        run.state.context[spec.save_as] = result.response
    run.note(f"webhook {spec.method} {spec.url}: {result.status}")
    return Next.to(step.next)


async def notify(step: NotifyStep, run: JourneyRun) -> Next:
    spec = step.notify
    result = await _record(
        run,
        ActionRequest(
            context=run.context(), kind="notify", notify=spec,
            template=run.journey.templates.get(spec.template, {}), trigger=run.state.trigger,
            journey_context=run.state.context,
        ),
        step.summary or f"alert {spec.to}",
    )
    run.note(f"alert to {spec.to}: {result.status}")
    return Next.to(step.next)


async def audience(step: AudienceStep, run: JourneyRun) -> Next:
    spec = step.audience
    result = await _record(
        run,
        ActionRequest(context=run.context(), kind="audience", audience=spec),
        step.summary or (f"{spec.action} {'to' if spec.action == 'add' else 'from'} "
                         f"{spec.sync} audience {spec.audience}"),
    )
    run.note(f"{spec.action} {spec.sync}:{spec.audience}: {result.status}")
    return Next.to(step.next)


async def start_journey(step: StartJourneyStep, run: JourneyRun) -> Next:
    spec = step.start_journey
    result = await _record(
        run,
        ActionRequest(
            context=run.context(), kind="start_journey", start_journey=spec,
            trigger=run.state.trigger,
        ),
        step.summary or f"hand off to {spec.journey}",
    )
    run.note(f"hand-off to {spec.journey}: {result.status}")
    return Next.to(step.next)
