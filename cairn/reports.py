"""The journey report: how a journey performs, from what the store already knows.

One service function, `journey_report`, answers `GET /v1/journeys/{key}/report`, `cairn report`
and (later) the console, with one pydantic model:

- **funnel**: the entries of a journey (one version, or all) entered within a window: how many,
  how many are still active, completed, converted by each exit goal (with the conversion rate, its
  Wilson interval and the median time to convert), ended at an `end` step with an outcome,
  removed, failed; the same per version;
- **messages**: per send step, template and channel (and variant, once send steps have variants:
  the key already has the field) what the deliveries ledger and the providers' feedback say:
  sent, delivered, opened, clicked, replied, bounced, complained, unsubscribed, undelivered,
  failed, unconfirmed, still sending, skipped by reason and held by reason (quiet hours, a
  frequency cap: `send_holds`, written when the hold starts), with rates per message sent, and
  per tracked link its clicks and unique clickers;
- **experiments**: per send with variants and per split with an `experiment:` block, the arms'
  figures and the automatic winner (`cairn.experiments`);
- **steps**: per step of the definition, from the step transitions the runs record
  (`cairn.store.transitions`): how many entries reached it, how many wait there now, how many
  left it by each route (the graph's routing keys: `next`, `then`, `else`, `timeout_next`,
  `paths[1]`...), and the exit goals caught there;
- **attribution**: each conversion (an exit goal) counts for the messages the contact got in
  that entry within the journey's `attribution.window` before converting: the last one (last
  touch) and every one (any touch), per message.

Attribution: a provider report names its send (`delivery_feedback.delivery_id`, found by the
provider's message id); an in-app message is its inbox row (read = opened); an unsubscribe that
names no message (the signed link, an SMS STOP) goes to the contact's last message on that
channel sent before it (last touch). Opens, clicks and the rest count messages, not events: a
message opened three times is one opened message.

Where a contact waits: a run writes its step transitions with the next activity it calls (and
when it ends), so the store may not have the step it waits in yet; the last transition written
says where it went (an entry that left a step toward a wait is counted waiting in that wait), and
an open entry with none written yet waits in the first step.

Not here: statistics (`cairn.statistics`), the doors that print or serve the report.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.durations import parse_duration
from cairn.experiments import ExperimentReport, experiment_reports
from cairn.journey import END, Attribution, Journey, SendStep
from cairn.statistics import rate, wilson_interval
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.entries import FAILED, REENTERED
from cairn.store.holds import HOLD_REASONS
from cairn.store.schema import (
    Delivery,
    DeliveryFeedback,
    DeliveryLink,
    Entry,
    Event,
    InboxMessage,
    SendHold,
    StepTransitionRecord,
)

__all__ = [
    "GoalFigures", "JourneyReport", "LinkFigures", "MessageAttribution", "MessageFigures",
    "MessageRates", "StepFigures",
    "UnknownJourney", "VersionFunnel", "converted", "journey_report",
]

COMPLETED = "completed"
REMOVED = "removed"
ENDED_PREFIX = "ended:"
SKIP_REASONS = ("consent", "unreachable", "frequency_cap", "quiet_hours")
"""Every `skipped:<reason>` a send writes to the ledger (`activities.send`)."""
FEEDBACK_COLUMNS = {"delivered": "delivered", "opened": "opened", "clicked": "clicked",
                    "replied": "replied", "bounced": "bounced", "complained": "complained",
                    "unsubscribed": "unsubscribed", "failed": "undelivered"}
"""Provider feedback kinds (`cairn.channels.base.FeedbackEvent`) and the column each counts in;
`resubscribed` is no reaction to a message and is left out."""
INBOX_CHANNELS = ("in_app", "on_site")
LINK_UNSUBSCRIBE_EVENT = "unsubscribed"
"""The event the signed unsubscribe link records (`starter/api/channels.py`)."""


def converted() -> ColumnElement[bool]:
    """An entry left by an exit goal, in SQL: the funnel's conversions (every outcome that is
    not `completed`, `removed`, `failed`, `reentered` or `ended:<outcome>` is a goal's name)."""
    return and_(Entry.ended_at.is_not(None), Entry.outcome.is_not(None),
                Entry.outcome.not_in((COMPLETED, REMOVED, FAILED, REENTERED)),
                Entry.outcome.not_like(f"{ENDED_PREFIX}%"))


class UnknownJourney(LookupError):
    """No version of the journey was ever published and no entry names it."""


class GoalFigures(BaseModel):
    goal: str = Field(description="the exit goal's name, as in the journey's `exit`")
    conversions: int
    rate: float | None = Field(description="conversions / entries")
    median_seconds_to_convert: float | None = Field(
        description="median time from entry to this goal, in seconds")


class VersionFunnel(BaseModel):
    """The entry funnel of a set of entries (one version, or all of them)."""

    version: int | None = Field(description="the journey version; null: every version")
    entries: int
    active: int = Field(description="entries whose run has not finished")
    completed: int = Field(description="reached an `end` step without an outcome")
    conversions: int = Field(description="left by an exit goal (every goal)")
    conversion_rate: float | None
    conversion_interval: tuple[float, float] | None = Field(
        description="95 % Wilson interval of the conversion rate")
    median_seconds_to_convert: float | None
    goals: list[GoalFigures]
    ended: dict[str, int] = Field(
        description="reached an `end` step with an outcome: outcome -> entries "
                    "(`holdout` for a split's holdout)")
    removed: int = Field(description="removed by an operator (`cairn exit`) or an erasure")
    failed: int = Field(description="the run failed, was terminated or timed out (re-entered "
                                    "ones included)")
    reentered: int = Field(description="failed entries an operator re-entered")


class StepFigures(BaseModel):
    """One step of the journey: the entries that reached it, wait there, and left it."""

    step: str
    kind: str | None = Field(default=None, description="the step's kind (null: a step the "
                                                       "definition reported on no longer has)")
    reached: int = Field(description="entries that reached the step (once each, loops or not)")
    waiting: int = Field(description="open entries there now")
    left: dict[str, int] = Field(
        description="route -> entries that left by it: a routing key of the graph (`next`, "
                    "`then`, `else`, `timeout_next`, `missing`, `paths[0]`, `on_failure`), "
                    "`end`, `holdout`, `removed` or `failed`")
    exited: dict[str, int] = Field(description="exit goal -> entries it caught at this step")


class MessageRates(BaseModel):
    """Rates per message sent (null when nothing was sent); `failure` (refused) is per message
    attempted (sent, failed, unconfirmed) and `skip` per message planned (attempted and skipped)."""

    delivery: float | None
    open: float | None
    click: float | None
    click_to_open: float | None
    reply: float | None
    bounce: float | None
    complaint: float | None
    unsubscribe: float | None
    failure: float | None
    skip: float | None


class LinkFigures(BaseModel):
    """One tracked link of a message (`cairn.links`): the clicks its redirect recorded."""

    index: int = Field(description="the link's position in the message (`link_index`)")
    label: str | None = Field(description="the anchor's text or `data-label`")
    url: str = Field(description="where it leads (the first address seen at this position)")
    clicks: int = Field(description="every click, repeated ones included")
    unique_clickers: int = Field(description="contacts who clicked it")
    click_rate: float | None = Field(default=None,
                                     description="unique clickers / messages sent")


class MessageAttribution(BaseModel):
    """The conversions (exit goals) a message counts for, within the journey's attribution
    window: as the entry's last message before converting, and as any of its messages."""

    last_touch: int = 0
    any_touch: int = 0
    last_touch_rate: float | None = Field(default=None, description="last touch / sent")
    any_touch_rate: float | None = Field(default=None, description="any touch / sent")


class MessageFigures(BaseModel):
    """One message of the journey: a send step, its template and channel (and variant)."""

    step: str
    template: str | None
    channel: str | None
    variant: str | None = Field(default=None,
                                description="the send's variant, once send steps have them")
    sent: int
    delivered: int
    opened: int
    clicked: int
    replied: int
    bounced: int
    complained: int
    unsubscribed: int
    undelivered: int = Field(description="accepted, then reported not delivered (a carrier's "
                                         "`failed`/`undelivered`)")
    failed: int = Field(description="refused by the provider, or the template did not render")
    unconfirmed: int = Field(description="the provider call's outcome is unknown")
    sending: int = Field(description="claimed, the provider call not answered yet")
    skipped: dict[str, int] = Field(description="not sent, by reason: consent, unreachable, "
                                                "frequency_cap, quiet_hours")
    held: dict[str, int] = Field(
        default_factory=lambda: dict.fromkeys(HOLD_REASONS, 0),
        description="sends that waited, by reason (quiet_hours, frequency_cap): each counted "
                    "once per reason however often it was held; a held send is also counted "
                    "where it ended (sent, skipped, ...) or nowhere else while it still waits")
    rates: MessageRates
    conversions: MessageAttribution = Field(
        default_factory=MessageAttribution,
        description="conversions attributed to the message (last touch, any touch)")
    links: list[LinkFigures] = Field(
        default_factory=list,
        description="per tracked link, in message order: clicks and unique clickers")


_FUNNEL_EXAMPLE: dict[str, Any] = {
    "version": None, "entries": 10, "active": 0, "completed": 7, "conversions": 3,
    "conversion_rate": 0.3, "conversion_interval": [0.1078, 0.6032],
    "median_seconds_to_convert": 3600.0,
    "goals": [{"goal": "converted", "conversions": 3, "rate": 0.3,
               "median_seconds_to_convert": 3600.0}],
    "ended": {}, "removed": 0, "failed": 0, "reentered": 0,
}
_MESSAGE_EXAMPLE: dict[str, Any] = {
    "step": "email_reminder", "template": "cart-reminder-similar", "channel": "email",
    "variant": None, "sent": 5, "delivered": 2, "opened": 2, "clicked": 1, "replied": 0,
    "bounced": 1, "complained": 0, "unsubscribed": 0, "undelivered": 0, "failed": 0,
    "unconfirmed": 0, "sending": 0,
    "skipped": {"consent": 1, "unreachable": 0, "frequency_cap": 0, "quiet_hours": 0},
    "held": {"quiet_hours": 2, "frequency_cap": 0},
    "rates": {"delivery": 0.4, "open": 0.4, "click": 0.2, "click_to_open": 0.5, "reply": 0.0,
              "bounce": 0.2, "complaint": 0.0, "unsubscribe": 0.0, "failure": 0.0,
              "skip": 0.1667},
}


_STEP_EXAMPLE: dict[str, Any] = {
    "step": "still_in_cart", "kind": "if", "reached": 7, "waiting": 0,
    "left": {"then": 6, "else": 1}, "exited": {},
}
_MESSAGE_EXAMPLE["links"] = [{"index": 0, "label": "Back to your cart",
                               "url": "https://shop.example/cart", "clicks": 2,
                               "unique_clickers": 1, "click_rate": 0.2}]
_MESSAGE_EXAMPLE["conversions"] = {"last_touch": 1, "any_touch": 1, "last_touch_rate": 0.2,
                                   "any_touch_rate": 0.2}


class JourneyReport(BaseModel):
    """How a journey performs: the entry funnel and the messages (docs/analytics.md)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "journey": "cart-abandonment", "name": "Reduce cart abandonment", "version": None,
        "since": None, "until": None, "generated_at": "2026-03-03T09:00:00Z",
        "funnel": _FUNNEL_EXAMPLE, "versions": [{**_FUNNEL_EXAMPLE, "version": 1}],
        "steps": [_STEP_EXAMPLE], "messages": [_MESSAGE_EXAMPLE], "experiments": [],
        "notes": [],
    }]})

    journey: str
    name: str | None
    version: int | None = Field(description="the version reported on; null: every version")
    since: datetime | None = Field(description="entries (and sends) from this time on")
    until: datetime | None = Field(description="entries (and sends) before this time")
    generated_at: datetime
    funnel: VersionFunnel
    versions: list[VersionFunnel] = Field(description="the funnel per version, oldest first")
    steps: list[StepFigures] = Field(
        default_factory=list,
        description="per step, in the definition's order: reached, waiting, left by route, "
                    "exit goals caught there")
    messages: list[MessageFigures]
    experiments: list[ExperimentReport] = Field(
        default_factory=list,
        description="per experiment (a send's variants, a split with `experiment:`) and arm: "
                    "contacts, the metric's rate with its interval, uplift against control, "
                    "significance, and the automatic winner once decided")
    notes: list[str] = Field(default_factory=list)


async def journey_report(
    store: Store, key: str, *, version: int | None = None, since: datetime | None = None,
    until: datetime | None = None, now: datetime | None = None,
) -> JourneyReport:
    """The report of journey `key`: entries entered in [since, until) and the sends of those
    entries' runs made in that window. Raises `UnknownJourney`."""
    async with store.session() as s:
        definition = await journeys_repo.get_version(s, key, version)
        entries = await _entry_rows(s, key, version, since, until)
        if definition is None and not entries:
            known = f" version {version}" if version is not None else ""
            raise UnknownJourney(f"no journey {key!r}{known}: publish it first "
                                 "(`cairn publish`), or check the key with `cairn journeys`")
        journey = journeys_repo.journey_of(definition) if definition else None
        goals = _goal_names(journey) if journey else []
        messages = await _messages(s, key, version, since, until)
        tests = (await experiment_reports(s, journey, version=version, since=since, until=until)
                 if journey else [])
        steps = await _steps(s, key, version, since, until, journey)
        window = parse_duration((journey.attribution if journey else Attribution()).window)
        await _attribute(s, key, version, since, until, window, messages)
    if journey is not None:
        _name_variants(journey, messages)
    by_version: dict[int, list[tuple[str | None, datetime, datetime | None]]] = defaultdict(list)
    for row in entries:
        by_version[row[0]].append(row[1:])
    versions = [_funnel(v, rows, goals) for v, rows in sorted(by_version.items())]
    notes: list[str] = []
    return JourneyReport(
        journey=key, name=definition.name if definition else None, version=version,
        since=since, until=until, generated_at=now or datetime.now(UTC),
        funnel=_funnel(version, [r[1:] for r in entries], goals), versions=versions,
        steps=steps, messages=messages, experiments=tests, notes=notes,
    )


def _name_variants(journey: Journey, messages: list[MessageFigures]) -> None:
    """A send with variants: each message row names the variant its template belongs to."""
    for message in messages:
        step = journey.steps.get(message.step)
        if isinstance(step, SendStep) and step.send.variants:
            message.variant = next((v.arm for v in step.send.variants
                                    if v.template == message.template), None)


def _goal_names(journey: Journey) -> list[str]:
    return list(dict.fromkeys(goal.goal for goal in journey.exit))


def _window(query: Select[Any], column: Any, since: datetime | None,
            until: datetime | None) -> Select[Any]:
    if since is not None:
        query = query.where(column >= since)
    if until is not None:
        query = query.where(column < until)
    return query


async def _entry_rows(
    s: AsyncSession, key: str, version: int | None, since: datetime | None,
    until: datetime | None,
) -> list[tuple[int, str | None, datetime, datetime | None]]:
    query = select(Entry.version, Entry.outcome, Entry.entered_at, Entry.ended_at).where(
        Entry.journey_key == key)
    if version is not None:
        query = query.where(Entry.version == version)
    query = _window(query, Entry.entered_at, since, until).order_by(Entry.id)
    return [(v, o, a, b) for v, o, a, b in (await s.execute(query)).all()]


def _funnel(version: int | None, rows: list[tuple[str | None, datetime, datetime | None]],
            goals: list[str]) -> VersionFunnel:
    entries = len(rows)
    active = completed = removed = failed = reentered = 0
    ended: dict[str, int] = {}
    to_goal: dict[str, list[float]] = {goal: [] for goal in goals}
    for outcome, entered_at, ended_at in rows:
        if ended_at is None or outcome is None:
            active += 1
        elif outcome == COMPLETED:
            completed += 1
        elif outcome == REMOVED:
            removed += 1
        elif outcome in (FAILED, REENTERED):
            failed += 1
            reentered += outcome == REENTERED
        elif outcome.startswith(ENDED_PREFIX):
            name = outcome[len(ENDED_PREFIX):]
            ended[name] = ended.get(name, 0) + 1
        else:
            # Any other outcome is an exit goal's name (a goal the current definition may no
            # longer have: it still counts for the entries that reached it).
            to_goal.setdefault(outcome, []).append((ended_at - entered_at).total_seconds())
    every = [seconds for durations in to_goal.values() for seconds in durations]
    conversions = len(every)
    interval = wilson_interval(conversions, entries)
    return VersionFunnel(
        version=version, entries=entries, active=active, completed=completed,
        conversions=conversions, conversion_rate=rate(conversions, entries),
        conversion_interval=(interval.low, interval.high) if interval else None,
        median_seconds_to_convert=median(every) if every else None,
        goals=[GoalFigures(goal=goal, conversions=len(durations),
                           rate=rate(len(durations), entries),
                           median_seconds_to_convert=median(durations) if durations else None)
               for goal, durations in to_goal.items()],
        ended=dict(sorted(ended.items())), removed=removed, failed=failed, reentered=reentered,
    )


MessageKey = tuple[str, str | None, str | None]


def _sends(key: str, version: int | None, since: datetime | None,
           until: datetime | None) -> Any:
    """The journey's send rows in the window (of the runs of one version's entries, if given)."""
    return _rows_of_runs(and_(Delivery.kind == "send", Delivery.journey_key == key),
                         Delivery.workflow_id, Delivery.created_at, key, version, since, until)


def _rows_of_runs(clause: Any, workflow_id: Any, moment: Any, key: str, version: int | None,
                  since: datetime | None, until: datetime | None) -> Any:
    """`clause` narrowed to the runs of one version's entries (if given) and to `moment` in
    the window."""
    if version is not None:
        runs = select(Entry.workflow_id).where(Entry.journey_key == key, Entry.version == version)
        clause = and_(clause, workflow_id.in_(runs))
    if since is not None:
        clause = and_(clause, moment >= since)
    if until is not None:
        clause = and_(clause, moment < until)
    return clause


async def _messages(
    s: AsyncSession, key: str, version: int | None, since: datetime | None,
    until: datetime | None,
) -> list[MessageFigures]:
    sends = _sends(key, version, since, until)
    counts: dict[MessageKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ledger = (select(Delivery.step, Delivery.template, Delivery.channel, Delivery.status,
                     func.count()).where(sends)
              .group_by(Delivery.step, Delivery.template, Delivery.channel, Delivery.status))
    for step, template, channel, status, n in (await s.execute(ledger)).all():
        counts[(step or "", template, channel)][status] += n
    feedback = (select(Delivery.step, Delivery.template, Delivery.channel, DeliveryFeedback.kind,
                       func.count(func.distinct(DeliveryFeedback.delivery_id)))
                .join(Delivery, Delivery.id == DeliveryFeedback.delivery_id).where(sends)
                .group_by(Delivery.step, Delivery.template, Delivery.channel,
                          DeliveryFeedback.kind))
    for step, template, channel, kind, n in (await s.execute(feedback)).all():
        column = FEEDBACK_COLUMNS.get(kind)
        if column is not None:
            counts[(step or "", template, channel)][column] += n
    inbox = (select(Delivery.step, Delivery.template, Delivery.channel,
                    func.count(InboxMessage.read_at))
             .join(InboxMessage, InboxMessage.delivery_key == Delivery.idempotency_key)
             .where(sends).group_by(Delivery.step, Delivery.template, Delivery.channel))
    for step, template, channel, n in (await s.execute(inbox)).all():
        counts[(step or "", template, channel)]["opened"] += n
    for message, n in (await _unattributed_unsubscribes(s, sends)).items():
        counts[message]["unsubscribed"] += n
    held = select(SendHold.step, SendHold.template, SendHold.channel, SendHold.reason,
                  func.count(func.distinct(SendHold.idempotency_key))).where(
        _holds(key, version, since, until)).group_by(
        SendHold.step, SendHold.template, SendHold.channel, SendHold.reason)
    for step, template, channel, reason, n in (await s.execute(held)).all():
        counts[(step or "", template, channel)][f"held:{reason}"] += n
    links = await _links(s, sends)
    figures = [_message_figures(message, tally) for message, tally in sorted(
        counts.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2] or ""))]
    for m in figures:
        m.links = links.get((m.step, m.template, m.channel), [])
        for link in m.links:
            link.click_rate = rate(min(link.unique_clickers, m.sent), m.sent)
    return figures


async def _links(s: AsyncSession, sends: Any) -> dict[MessageKey, list[LinkFigures]]:
    """Per message, its tracked links (by position) with the clicks their redirects recorded
    (`clicked` feedback from `cairn.links.record_click`, which names the link's position)."""
    found: dict[MessageKey, dict[int, LinkFigures]] = defaultdict(dict)
    stored = (select(Delivery.step, Delivery.template, Delivery.channel, DeliveryLink.position,
                     DeliveryLink.label, func.min(DeliveryLink.url))
              .join(Delivery, Delivery.id == DeliveryLink.delivery_id).where(sends)
              .group_by(Delivery.step, Delivery.template, Delivery.channel,
                        DeliveryLink.position, DeliveryLink.label)
              .order_by(DeliveryLink.position))
    for step, template, channel, position, label, url in (await s.execute(stored)).all():
        message = (step or "", template, channel)
        if position not in found[message]:  # a position's first label names it
            found[message][position] = LinkFigures(index=position, label=label, url=url,
                                                   clicks=0, unique_clickers=0)
    clicks = (select(Delivery.step, Delivery.template, Delivery.channel,
                     DeliveryFeedback.contact_id, DeliveryFeedback.detail)
              .join(Delivery, Delivery.id == DeliveryFeedback.delivery_id)
              .where(sends, DeliveryFeedback.kind == "clicked"))
    clickers: dict[tuple[MessageKey, int], set[str]] = defaultdict(set)
    for step, template, channel, contact_id, detail in (await s.execute(clicks)).all():
        index = (detail or {}).get("link_index")
        message = (step or "", template, channel)
        if not isinstance(index, int) or index not in found[message]:
            continue  # a provider's click report names no tracked link
        found[message][index].clicks += 1
        clickers[(message, index)].add(contact_id or "")
    for (message, index), who in clickers.items():
        found[message][index].unique_clickers = len(who)
    return {message: [by_index[i] for i in sorted(by_index)]
            for message, by_index in found.items() if by_index}


def _holds(key: str, version: int | None, since: datetime | None,
           until: datetime | None) -> Any:
    """The journey's send holds that started in the window (of one version's runs, if given)."""
    return _rows_of_runs(SendHold.journey_key == key, SendHold.workflow_id, SendHold.held_at,
                         key, version, since, until)


async def _unattributed_unsubscribes(s: AsyncSession, sends: Any) -> dict[MessageKey, int]:
    """Unsubscribes that name no message (the signed link's event, an SMS STOP): each goes to
    the contact's last message sent on that channel before it, if that one is in `sends`."""
    contacts = select(Delivery.contact_id).where(sends, Delivery.status == "sent")
    found: list[tuple[str, str | None, datetime]] = []
    link = select(Event.contact_id, Event.properties, Event.timestamp).where(
        Event.name == LINK_UNSUBSCRIBE_EVENT, Event.contact_id.in_(contacts))
    for contact_id, properties, at in (await s.execute(link)).all():
        found.append((contact_id, (properties or {}).get("channel"), at))
    reports = select(DeliveryFeedback.contact_id, DeliveryFeedback.channel,
                     DeliveryFeedback.occurred_at).where(
        DeliveryFeedback.kind == "unsubscribed", DeliveryFeedback.delivery_id.is_(None),
        DeliveryFeedback.contact_id.in_(contacts))
    found += [(c, ch, at) for c, ch, at in (await s.execute(reports)).all() if c is not None]
    tally: dict[MessageKey, int] = defaultdict(int)
    for contact_id, channel, at in found:
        if not channel:
            continue
        last = (select(Delivery.id, Delivery.step, Delivery.template, Delivery.channel)
                .where(Delivery.kind == "send", Delivery.status == "sent",
                       Delivery.contact_id == contact_id, Delivery.channel == channel,
                       Delivery.sent_at <= at)
                .order_by(Delivery.sent_at.desc(), Delivery.id.desc()).limit(1))
        row = (await s.execute(last)).first()
        if row is None:
            continue
        in_report = await s.scalar(select(func.count()).where(sends, Delivery.id == row[0]))
        if in_report:
            tally[(row[1] or "", row[2], row[3])] += 1
    return tally


def _message_figures(message: MessageKey, tally: dict[str, int]) -> MessageFigures:
    step, template, channel = message
    sent = tally.get("sent", 0)
    delivered = tally.get("delivered", 0)
    if channel in INBOX_CHANNELS:
        delivered = max(delivered, sent)  # placed in the inbox is delivered
    skipped = {reason: tally.get(f"skipped:{reason}", 0) for reason in SKIP_REASONS}
    for status, n in tally.items():  # a reason written by a newer version still shows
        if status.startswith("skipped:") and status[8:] not in skipped:
            skipped[status[8:]] = n
    held = {reason: tally.get(f"held:{reason}", 0) for reason in HOLD_REASONS}
    for status, n in tally.items():
        if status.startswith("held:") and status[5:] not in held:
            held[status[5:]] = n
    failed, unconfirmed = tally.get("failed", 0), tally.get("unconfirmed", 0)
    attempted = sent + failed + unconfirmed
    opened, clicked = tally.get("opened", 0), tally.get("clicked", 0)

    def per_sent(n: int) -> float | None:
        return rate(min(n, sent), sent)

    return MessageFigures(
        step=step, template=template, channel=channel, sent=sent, delivered=delivered,
        opened=opened, clicked=clicked, replied=tally.get("replied", 0),
        bounced=tally.get("bounced", 0), complained=tally.get("complained", 0),
        unsubscribed=tally.get("unsubscribed", 0), undelivered=tally.get("undelivered", 0),
        failed=failed, unconfirmed=unconfirmed, sending=tally.get("sending", 0),
        skipped=skipped, held=held,
        rates=MessageRates(
            delivery=per_sent(delivered), open=per_sent(opened), click=per_sent(clicked),
            click_to_open=rate(min(clicked, opened), opened), reply=per_sent(tally.get(
                "replied", 0)),
            bounce=per_sent(tally.get("bounced", 0)),
            complaint=per_sent(tally.get("complained", 0)),
            unsubscribe=per_sent(tally.get("unsubscribed", 0)),
            failure=rate(failed, attempted),
            skip=rate(sum(skipped.values()), attempted + sum(skipped.values())),
        ),
    )


# --------------------------------------------------------------------------- steps

EXIT_PREFIX = "exit:"
"""`left_by` of an exit goal caught at a step (`workflows.run.EXIT_PREFIX`)."""
ENDING_ROUTES = ("end", "holdout", "failed")


def _in_window(query: Select[Any], key: str, version: int | None, since: datetime | None,
               until: datetime | None) -> Select[Any]:
    query = query.where(StepTransitionRecord.journey_key == key)
    if version is not None:
        query = query.where(StepTransitionRecord.version == version)
    return _window(query, StepTransitionRecord.entered_at, since, until)


async def _steps(
    s: AsyncSession, key: str, version: int | None, since: datetime | None,
    until: datetime | None, journey: Journey | None,
) -> list[StepFigures]:
    t = StepTransitionRecord
    reached: dict[str, int] = defaultdict(int)
    waiting: dict[str, int] = defaultdict(int)
    left: dict[str, dict[str, int]] = defaultdict(dict)
    exited: dict[str, dict[str, int]] = defaultdict(dict)
    visits = _in_window(select(t.step, func.count(func.distinct(t.entry_id))), key, version,
                        since, until).group_by(t.step)
    for step, n in (await s.execute(visits)).all():
        reached[step] += n
    routes = _in_window(select(t.step, t.left_by, func.count(func.distinct(t.entry_id))), key,
                        version, since, until).where(t.left_by.is_not(None)) \
        .group_by(t.step, t.left_by)
    for step, left_by, n in (await s.execute(routes)).all():
        if left_by.startswith(EXIT_PREFIX) and left_by != f"{EXIT_PREFIX}{REMOVED}":
            exited[step][left_by[len(EXIT_PREFIX):]] = n
        else:
            left[step][left_by.removeprefix(EXIT_PREFIX)] = n
    # Where open entries are: the last visit each entry's run wrote says it.
    open_runs = select(Entry.workflow_id).where(Entry.journey_key == key, Entry.ended_at.is_(None))
    if version is not None:
        open_runs = open_runs.where(Entry.version == version)
    open_runs = _window(open_runs, Entry.entered_at, since, until)
    open_ids = set((await s.scalars(open_runs)).all())
    last_seq = _in_window(select(t.entry_id, func.max(t.seq).label("seq")), key, version,
                          since, until).where(t.workflow_id.in_(open_runs)) \
        .group_by(t.entry_id).subquery()
    last = select(t.workflow_id, t.step, t.left_by, t.next_step).join(
        last_seq, and_(t.entry_id == last_seq.c.entry_id, t.seq == last_seq.c.seq))
    placed: set[str] = set()
    for workflow_id, step, left_by, next_step in (await s.execute(last)).all():
        if left_by is None:
            where = step
        elif next_step and next_step != END and not left_by.startswith(EXIT_PREFIX) \
                and left_by not in ENDING_ROUTES:
            where = next_step  # on its way: the step it waits in has written nothing yet
            reached[where] += 1
        else:
            continue  # an earlier entry of the same workflow id, finished
        if workflow_id in placed:
            continue
        placed.add(workflow_id)
        waiting[where] += 1
    if journey is not None:
        fresh = len(open_ids - placed)  # open entries whose runs wrote nothing yet
        reached[journey.first_step] += fresh
        waiting[journey.first_step] += fresh
    names = list(journey.steps) if journey else []
    names += sorted(set(reached) - set(names))
    kinds = {name: step.kind for name, step in journey.steps.items()} if journey else {}
    return [StepFigures(step=name, kind=kinds.get(name), reached=reached.get(name, 0),
                        waiting=waiting.get(name, 0), left=dict(sorted(left[name].items())),
                        exited=dict(sorted(exited[name].items())))
            for name in names]


# --------------------------------------------------------------------------- attribution

ATTRIBUTION_SLACK_SECONDS = 60
"""A send may carry the journey's time, which stands on the trigger's moment for a minute after
it (`workflows.run.ANCHOR_SLACK`): a little before the entry was recorded."""


async def _attribute(
    s: AsyncSession, key: str, version: int | None, since: datetime | None,
    until: datetime | None, window: Any, messages: list[MessageFigures],
) -> None:
    """Count each conversion of the report's entries for the messages of its entry sent within
    `window` before it: the last one (last touch) and each one (any touch)."""
    converted_entries = select(Entry.workflow_id, Entry.entered_at, Entry.ended_at).where(
        Entry.journey_key == key, converted())
    if version is not None:
        converted_entries = converted_entries.where(Entry.version == version)
    converted_entries = _window(converted_entries, Entry.entered_at, since, until)
    conversions = (await s.execute(converted_entries)).all()
    if not conversions:
        return
    sends = select(Delivery.id, Delivery.workflow_id, Delivery.step, Delivery.template,
                   Delivery.channel, Delivery.sent_at).where(
        Delivery.kind == "send", Delivery.status == "sent", Delivery.journey_key == key,
        Delivery.sent_at.is_not(None),
        Delivery.workflow_id.in_(select(converted_entries.subquery().c.workflow_id)))
    by_run: dict[str, list[tuple[datetime, int, MessageKey]]] = defaultdict(list)
    for row_id, workflow_id, step, template, channel, sent_at in (await s.execute(sends)).all():
        by_run[workflow_id].append((sent_at, row_id, (step or "", template, channel)))
    last_touch: dict[MessageKey, int] = defaultdict(int)
    any_touch: dict[MessageKey, int] = defaultdict(int)
    slack = timedelta(seconds=ATTRIBUTION_SLACK_SECONDS)
    for workflow_id, entered_at, converted_at in conversions:
        touches = sorted(t for t in by_run.get(workflow_id, [])
                         if entered_at - slack <= t[0] <= converted_at
                         and converted_at - t[0] <= window)
        if not touches:
            continue
        last_touch[touches[-1][2]] += 1
        for message in {t[2] for t in touches}:
            any_touch[message] += 1
    for figures in messages:
        message = (figures.step, figures.template, figures.channel)
        last, every = last_touch.get(message, 0), any_touch.get(message, 0)
        figures.conversions = MessageAttribution(
            last_touch=last, any_touch=every,
            last_touch_rate=rate(min(last, figures.sent), figures.sent),
            any_touch_rate=rate(min(every, figures.sent), figures.sent))
