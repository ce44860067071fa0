"""Swept triggers in a simulation: the events the live sweeps would emit for `date_attribute` and
`schedule` journeys, at the moments they would emit them (docs/simulation.md, "Date and schedule
triggers").

Live, these journeys start from events the sweeps store on Temporal Schedules
(`activities.sweeps`); a simulation has no schedules, so `SweptTrigger` says when a sweep run
would emit for the scenario's contact and what it would emit, with the sweeps' own functions
(`cairn.date_triggers`, `cairn.schedule_times`). It does not store or route the events: the engine
does, through the same `Ingest` as live traffic.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from cairn.date_triggers import date_trigger_event, due_date, schedule_trigger_event
from cairn.journey import Journey
from cairn.schedule_times import cron_occurrences
from cairn.simulation.errors import SimulationError
from cairn.simulation.report import utc_text
from cairn.simulation.scenario import Scenario
from cairn.store import contacts
from cairn.store import segments as segments_repo
from cairn.store.db import Store
from cairn.sweeps import SWEEP_EVERY

MAX_SCHEDULE_OCCURRENCES = 5000
"""Schedule occurrences one simulation injects at most: each moves the clock (a cron firing every
minute for 30 days would take minutes of real time); a longer span asks for a nearer `until`."""


class SweptTrigger:
    """The trigger events the live sweeps would emit for the scenario's contact, in time order.

    Live, `date_attribute` and `schedule` triggers start from events the sweeps store
    (`activities.sweeps`); a simulation produces the same events at the same moments:

    - `date_attribute`: the date sweep runs hourly on a Temporal interval schedule (`SWEEP_EVERY`
      from the epoch: on the hour, UTC). Every run of the scenario's span is judged with the
      sweep's own `due_date` on the contact as stored (identify calls included), and the first run
      that finds a date due emits it, once per date. A date the run just before `now` already
      found due was emitted before the scenario began and is not emitted again.
    - `schedule`: every occurrence of the cron in its time zone (`cairn.schedule_times`, as
      Temporal computes them) in `[now, until]` emits for the contact when it is an open member
      of the trigger's segment at that moment (every contact when there is none).

    A scenario that plays the trigger's event itself (by hand, as before) gets none of these:
    entering twice would test nothing real.
    """

    def __init__(self, journey: Journey, scenario: Scenario) -> None:
        self.journey = journey
        self.contact_id = scenario.contact.id
        self.start, self.stop = scenario.now.astimezone(UTC), scenario.stop_at
        self.name = journey.trigger.event_name
        self.date = journey.trigger.date_attribute
        self.schedule = journey.trigger.schedule
        self.by_hand = any(event.label == self.name for event in scenario.events)
        self.active = (self.date is not None or self.schedule is not None) and not self.by_hand
        self.emitted: list[datetime] = []
        # date_attribute: the last sweep run judged, and the dates emitted.
        self.swept = _sweep_run_before(self.start)
        self.dates: set[date] = set()
        self.value: Any = (scenario.contact.attributes.get(self.date.attribute)
                           if self.date is not None else None)
        if self.active and self.date is not None:
            before = due_date(self.date, scenario.contact.attributes, scenario.contact.timezone,
                              journey.settings.timezone, self.swept)
            if before is not None:
                self.dates.add(before)
        # schedule: the occurrences, and how many found the contact outside the segment.
        self.occurrences: list[datetime] = []
        self.next_occurrence = 0
        self.outside = 0
        if self.active and self.schedule is not None:
            self.occurrences = cron_occurrences(self.schedule.cron, self.schedule.timezone,
                                                self.start, self.stop)
            if len(self.occurrences) > MAX_SCHEDULE_OCCURRENCES:
                raise SimulationError(
                    f"trigger.schedule.cron '{self.schedule.cron}' fires "
                    f"{len(self.occurrences)} times between now and until; a simulation plays at "
                    f"most {MAX_SCHEDULE_OCCURRENCES}: move `until` nearer"
                )

    def describe(self) -> str | None:
        if self.by_hand and (self.date is not None or self.schedule is not None):
            return f"{self.name} played by the scenario"
        if not self.active:
            return None
        if self.schedule is not None:
            return f"{len(self.occurrences)} occurrence(s) of '{self.schedule.cron}'"
        return "hourly date sweep"

    async def next_moment(self, store: Store, limit: datetime, *,
                          inclusive: bool) -> datetime | None:
        """The next moment before `limit` (or at it) when a sweep may emit the trigger event.

        Date sweep runs judged here without an emission are final: the contact as stored now
        stays so until `limit`, the next scenario event.
        """
        if not self.active:
            return None
        if self.schedule is not None:
            if self.next_occurrence >= len(self.occurrences):
                return None
            at = self.occurrences[self.next_occurrence]
            return at if at < limit or (inclusive and at == limit) else None
        attributes, timezone = await self._contact(store)
        run = self.swept + SWEEP_EVERY
        while run < limit or (inclusive and run == limit):
            if self._due(attributes, timezone, run) is not None:
                return run
            self.swept = run
            run += SWEEP_EVERY
        return None

    async def fire(self, store: Store, at: datetime) -> tuple[str, dict[str, Any]] | None:
        """With the clock at `at`: the message id and properties the sweep emits, if any."""
        if self.schedule is not None:
            self.next_occurrence += 1
            segment = self.schedule.segment
            if segment is not None:
                async with store.session() as session:
                    member = segment in await segments_repo.active_segments(session,
                                                                            self.contact_id)
                if not member:
                    self.outside += 1
                    return None
            self.emitted.append(at)
            return schedule_trigger_event(self.journey.key, at, self.contact_id)
        assert self.date is not None  # next_moment returns None for any other trigger
        attributes, timezone = await self._contact(store)  # the journey may have changed it
        self.swept = at
        due = self._due(attributes, timezone, at)
        if due is None:
            return None
        self.dates.add(due)
        self.emitted.append(at)
        return date_trigger_event(self.journey.key, self.date, self.contact_id, due)

    def silence(self) -> str | None:
        """Why the sweeps emitted nothing for the contact (None when they did, or do not apply)."""
        if not self.active or self.emitted:
            return None
        span = f"between {utc_text(self.start)} and {utc_text(self.stop)}"
        if self.schedule is not None:
            where = f"trigger.schedule '{self.schedule.cron}' ({self.schedule.timezone})"
            if not self.occurrences:
                return f"{where} has no occurrence {span}"
            return (f"{where} fired {len(self.occurrences)} time(s) {span}, and the contact was "
                    f"in segment {self.schedule.segment} at none of them")
        assert self.date is not None
        return (f"the date sweep found trigger.date_attribute {self.date.attribute} due on no day "
                f"{span} (the contact's {self.date.attribute}: {self.value!r})")

    def _due(self, attributes: dict[str, Any], timezone: str | None, run: datetime) -> date | None:
        """The date a sweep run at `run` emits, unless an earlier run emitted it."""
        assert self.date is not None
        due = due_date(self.date, attributes, timezone, self.journey.settings.timezone, run)
        return due if due is not None and due not in self.dates else None

    async def _contact(self, store: Store) -> tuple[dict[str, Any], str | None]:
        """The attributes and time zone the sweep would read now."""
        async with store.session() as session:
            row = await contacts.get_contact(session, self.contact_id)
        attributes = dict(row.attributes or {}) if row is not None else {}
        if self.date is not None:
            self.value = attributes.get(self.date.attribute)
        return attributes, row.timezone if row is not None else None


def _sweep_run_before(moment: datetime) -> datetime:
    """The last run of the hourly date sweep strictly before `moment` (runs: epoch + n hours)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    run = epoch + (moment - epoch) // SWEEP_EVERY * SWEEP_EVERY
    return run - SWEEP_EVERY if run == moment else run
