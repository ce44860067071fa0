"""Waiting steps: a duration, a date, a time window, or an event with a timeout.

Every wait is a durable timer or condition that an exit goal interrupts at once; deadlines are
absolute and kept in state, so continue-as-new never restarts a wait.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cairn.contact import ContactSnapshot
    from cairn.contracts import (
        LOAD_CONTACT,
        PLAN_WAIT,
        LoadContactRequest,
        WaitPlan,
        WaitPlanRequest,
    )
    from cairn.durations import format_duration, parse_duration
    from cairn.journey import WaitForEventStep, WaitForWindowStep, WaitStep, WaitUntilStep
    from cairn.journey_run import CAUGHT_EVENTS, EventMessage, wait_key
    from cairn.wait_times import attribute_deadline, window_deadline

from workflows.run import JourneyRun, Next, Waited

PLAN_WAIT_PATCH = "plan-wait-in-activity"
"""Runs before it read the whole contact (`load_contact`) to compute these deadlines."""

CAUGHT_KEY = CAUGHT_EVENTS


def _label(step: WaitStep | WaitUntilStep | WaitForWindowStep | WaitForEventStep, text: str) -> str:
    return step.summary or text


async def wait(step: WaitStep, run: JourneyRun) -> Next:
    """Sleep a duration."""
    deadline = run.state.deadline or run.now() + parse_duration(step.wait)
    run.note(f"sleep {step.wait}")
    waited = await run.wait(deadline, _label(step, f"wait {step.wait} before {step.next}"))
    return run.after_wait(waited, step.next)


async def _load_contact(run: JourneyRun, why: str) -> ContactSnapshot:
    """The whole contact, read by the runs started before `plan_wait` (their histories replay
    this call); newer runs never hold the contact's values."""
    snapshot: ContactSnapshot = await run.act(
        LOAD_CONTACT, LoadContactRequest(contact_id=run.input.contact_id), ContactSnapshot,
        f"read contact for {why}",
    )
    return snapshot


async def _plan(run: JourneyRun, request: WaitPlanRequest, why: str) -> datetime | None:
    plan: WaitPlan = await run.act(PLAN_WAIT, request, WaitPlan, f"plan wait {why}")
    return plan.deadline


async def wait_until(step: WaitUntilStep, run: JourneyRun) -> Next:
    """Wait until a moment: absolute, or a date attribute shifted by an offset at a local time."""
    spec = step.wait_until
    deadline = run.state.deadline
    if deadline is None:
        if spec.at is not None:
            deadline = spec.at
        else:
            assert spec.attribute is not None
            why = step.summary or run.step
            default_tz = run.journey.settings.timezone
            if workflow.patched(PLAN_WAIT_PATCH):
                deadline = await _plan(run, WaitPlanRequest(
                    context=run.context(), wait_until=spec, default_timezone=default_tz), why)
            else:
                contact = await _load_contact(run, why)
                deadline = attribute_deadline(spec, contact.attributes, contact.timezone,
                                              default_tz)
            if deadline is None:
                run.note(f"attribute {spec.attribute} missing or not a date")
                return Next.to(step.missing or step.next,
                               via="missing" if step.missing else "next")
    if deadline <= run.now() and run.state.deadline is None:
        run.note(f"{deadline.isoformat()} already passed")
        return Next.to(step.next)
    run.note(f"until {deadline.isoformat()}")
    waited = await run.wait(deadline, _label(step, f"wait until {deadline:%Y-%m-%d %H:%M}Z"))
    return run.after_wait(waited, step.next)


async def wait_for_window(step: WaitForWindowStep, run: JourneyRun) -> Next:
    """Wait for the next allowed days and hours in the contact's time zone."""
    window = step.wait_for_window
    deadline = run.state.deadline
    if deadline is None:
        why = step.summary or run.step
        default_tz = run.journey.settings.timezone
        if workflow.patched(PLAN_WAIT_PATCH):
            deadline = await _plan(run, WaitPlanRequest(
                context=run.context(), window=window, default_timezone=default_tz), why)
            assert deadline is not None
        else:
            contact = await _load_contact(run, why)
            deadline = window_deadline(window, run.now(), contact.timezone, default_tz)
        if deadline <= run.now():
            run.note(f"inside window {window.from_}-{window.to} {','.join(window.days)}")
            return Next.to(step.next)
    run.note(f"window opens {deadline.isoformat()}")
    waited = await run.wait(
        deadline, _label(step, f"wait for window {window.from_}-{window.to} local time")
    )
    return run.after_wait(waited, step.next)


def _matching(step: WaitForEventStep, run: JourneyRun) -> EventMessage | None:
    spec = step.wait_for_event
    since = 0 if spec.since == "entry" else run.state.step_started_seq
    trigger_id = run.state.trigger.message_id if run.state.trigger else None
    for message in run.heard_since(since):
        if message.event != spec.event or message.message_id == trigger_id:
            continue
        if spec.where is not None and not message.meets(
            wait_key(run.journey.version, run.step), spec.where
        ):
            continue
        return message
    return None


async def wait_for_event(step: WaitForEventStep, run: JourneyRun) -> Next:
    """Wait for a matching event after the step began (or since entry), or time out."""
    spec = step.wait_for_event
    deadline = run.state.deadline or run.now() + parse_duration(spec.timeout)
    run.note(f"waiting for {spec.event} until {deadline.isoformat()}")
    waited = await run.wait(
        deadline,
        _label(step, f"wait up to {format_duration(parse_duration(spec.timeout))} "
                     f"for {spec.event}"),
        until=lambda: _matching(step, run) is not None,
    )
    if waited is Waited.SATISFIED:
        message = _matching(step, run)
        assert message is not None
        run.state.context.setdefault(CAUGHT_KEY, {})[spec.event] = message.as_scope()
        run.note(f"got {spec.event} at {message.timestamp.isoformat()}")
        return Next.to(step.then, via="then")
    if waited is Waited.ELAPSED:
        run.note(f"no {spec.event} within {spec.timeout}: timeout")
        return Next.to(step.timeout_next, via="timeout_next")
    return run.after_wait(waited, step.then)


__all__ = ["CAUGHT_KEY", "timedelta", "wait", "wait_for_event", "wait_for_window", "wait_until"]
