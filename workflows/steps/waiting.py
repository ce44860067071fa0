"""Waiting steps: a duration, a date, a time window, or an event with a timeout.

Every wait is a durable timer or condition that an exit goal interrupts at once; deadlines are
absolute and kept in state, so continue-as-new never restarts a wait.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from cairn.conditions import evaluate_event_filter, read_path
    from cairn.contact import ContactSnapshot
    from cairn.contracts import LOAD_CONTACT, LoadContactRequest
    from cairn.durations import format_duration, parse_duration, parse_time_of_day
    from cairn.journey import WaitForEventStep, WaitForWindowStep, WaitStep, WaitUntilStep
    from cairn.journey_run import EventMessage
    from cairn.local_time import at_local, next_window_start, zone

from workflows.run import JourneyRun, Next, Waited

CAUGHT_KEY = "events"
"""Where a caught event is kept in the journey context, by name: templates read it as
`journey.events.<name>`, `if` conditions as `{property: ..., event: <name>}`."""


def _label(step: WaitStep | WaitUntilStep | WaitForWindowStep | WaitForEventStep, text: str) -> str:
    return step.summary or text


async def wait(step: WaitStep, run: JourneyRun) -> Next:
    """Sleep a duration."""
    deadline = run.state.deadline or run.now() + parse_duration(step.wait)
    run.note(f"sleep {step.wait}")
    waited = await run.wait(deadline, _label(step, f"wait {step.wait} before {step.next}"))
    return run.after_wait(waited, step.next)


async def _load_contact(run: JourneyRun, why: str) -> ContactSnapshot:
    snapshot: ContactSnapshot = await run.act(
        LOAD_CONTACT, LoadContactRequest(contact_id=run.input.contact_id), ContactSnapshot,
        f"read contact for {why}",
    )
    return snapshot


def _date_of(value: object) -> date | datetime | None:
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


async def wait_until(step: WaitUntilStep, run: JourneyRun) -> Next:
    """Wait until a moment: absolute, or a date attribute shifted by an offset at a local time."""
    spec = step.wait_until
    deadline = run.state.deadline
    if deadline is None:
        if spec.at is not None:
            deadline = spec.at
        else:
            assert spec.attribute is not None
            contact = await _load_contact(run, step.summary or run.step)
            tz = zone(contact.timezone, run.journey.settings.timezone)
            raw = read_path(contact.attributes, spec.attribute)
            anchor = _date_of(raw)
            if anchor is None:
                run.note(f"attribute {spec.attribute} missing or not a date ({raw!r})")
                return Next.to(step.missing or step.next)
            offset = parse_duration(spec.offset)
            if spec.time is not None:
                day = anchor if not isinstance(anchor, datetime) else anchor.astimezone(tz).date()
                local_day = (datetime.combine(day, datetime.min.time()) + offset).date()
                deadline = at_local(local_day, parse_time_of_day(spec.time), tz)
            elif isinstance(anchor, datetime):
                moment = anchor if anchor.tzinfo else anchor.replace(tzinfo=tz)
                deadline = moment + offset
            else:
                deadline = at_local(anchor, datetime.min.time(), tz) + offset
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
        contact = await _load_contact(run, step.summary or run.step)
        deadline = next_window_start(
            run.now(), contact.timezone, window.days, parse_time_of_day(window.from_),
            parse_time_of_day(window.to), run.journey.settings.timezone,
        )
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
        if spec.where is not None and not evaluate_event_filter(
            spec.where, message.as_scope(), message.timestamp
        ).result:
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
        return Next.to(step.then)
    if waited is Waited.ELAPSED:
        run.note(f"no {spec.event} within {spec.timeout}: timeout")
        return Next.to(step.timeout_next)
    return run.after_wait(waited, step.then)


__all__ = ["CAUGHT_KEY", "timedelta", "wait", "wait_for_event", "wait_for_window", "wait_until"]
