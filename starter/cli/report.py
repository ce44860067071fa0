"""`cairn report JOURNEY`: how a journey performs, printed (or as the API's JSON).

The figures are `cairn.reports.journey_report`'s, the same as `GET /v1/journeys/{key}/report`:
the entry funnel with bars, the steps (reached with bars, waiting, left by each route, exit
goals caught there), then a table of the messages with their rates and the conversions
attributed to them, then each experiment's arms (and its automatic winner, once decided).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from starter.cli.app import app
from starter.cli.common import fail, load_settings, output, with_store

if TYPE_CHECKING:
    from cairn.experiments import ExperimentReport
    from cairn.reports import JourneyReport, MessageFigures, StepFigures, VersionFunnel
    from cairn.store.db import Store

BAR_WIDTH = 30


def parse_since(text: str, now: datetime) -> datetime:
    """`2026-03-01` (midnight UTC), an ISO datetime, or a duration back from now (`7d`, `12h`)."""
    from cairn.durations import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text), time(0))
        except ValueError:
            raise ValueError(f"--since {text!r}: give a date (2026-03-01), a time "
                             "(2026-03-01T09:00:00Z) or a duration back from now (7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def report(
    journey: Annotated[str, typer.Argument(help="the journey key, e.g. cart-abandonment")],
    version: Annotated[int | None, typer.Option(min=1, help="one version (default: all)")]
    = None,
    since: Annotated[str | None, typer.Option(
        help="entries from: a date (2026-03-01), a time, or back from now (7d)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
) -> None:
    """The journey's entry funnel (with bars) and its messages' metrics."""
    from cairn.reports import UnknownJourney, journey_report

    settings = load_settings()
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now) if since else None
    except ValueError as error:
        raise fail(str(error), 2) from None

    async def collect(store: Store) -> JourneyReport:
        return await journey_report(store, journey, version=version, since=start, now=now)

    try:
        found = asyncio.run(with_store(settings, collect))
    except UnknownJourney as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    print_report(found)


def print_report(found: JourneyReport) -> None:
    console = output()
    window = f" since {found.since:%Y-%m-%d %H:%M}Z" if found.since else ""
    which = f"version {found.version}" if found.version is not None else "all versions"
    console.print(f"[bold]{escape(found.journey)}[/bold] {escape(found.name or '')} "
                  f"({which}{window})")
    console.print(_funnel_table(found.funnel))
    console.print(_conversion_line(found.funnel))
    if len(found.versions) > 1:
        by_version = Table(title="per version")
        for column in ("version", "entries", "active", "conversions", "rate"):
            by_version.add_column(column, justify="right")
        for funnel in found.versions:
            by_version.add_row(str(funnel.version), str(funnel.entries), str(funnel.active),
                               str(funnel.conversions), _percent(funnel.conversion_rate))
        console.print(by_version)
    if found.steps:
        console.print(_step_table(found.steps, found.funnel.entries))
    if found.messages:
        console.print(_message_table(found.messages))
        if any(m.links for m in found.messages):
            console.print(_link_table(found.messages))
    else:
        console.print("No messages sent in this window")
    for experiment in found.experiments:
        console.print(_experiment_table(experiment))


def _funnel_table(funnel: VersionFunnel) -> Table:
    table = Table(title="entry funnel")
    table.add_column("", no_wrap=True)
    table.add_column("entries", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    total = funnel.entries
    rows: list[tuple[str, int]] = [("entered", total), ("active", funnel.active),
                                   ("completed", funnel.completed)]
    rows += [(f"goal {goal.goal}", goal.conversions) for goal in funnel.goals]
    rows += [(f"ended {name}", n) for name, n in funnel.ended.items()]
    rows += [("removed", funnel.removed), ("failed", funnel.failed)]
    for label, n in rows:
        share = n / total if total else 0.0
        table.add_row(escape(label), str(n), _percent(share if total else None),
                      "█" * round(share * BAR_WIDTH))
    return table


def _conversion_line(funnel: VersionFunnel) -> str:
    conversion = _percent(funnel.conversion_rate)
    if funnel.conversion_interval is not None:
        low, high = funnel.conversion_interval
        conversion += f" (95% {low:.1%}-{high:.1%})"
    median = funnel.median_seconds_to_convert
    return (f"conversions {funnel.conversions}, rate {conversion}"
            + (f", median time to convert {_duration(median)}" if median else ""))


def _step_table(steps: list[StepFigures], entries: int) -> Table:
    table = Table(title="steps")
    table.add_column("step", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("reached", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("waiting", justify="right")
    table.add_column("left by")
    table.add_column("exit goals")
    top = max([entries, *(step.reached for step in steps)])
    for step in steps:
        share = step.reached / top if top else 0.0
        table.add_row(
            escape(step.step), step.kind or "-", str(step.reached),
            "█" * round(share * BAR_WIDTH), str(step.waiting),
            escape(", ".join(f"{route} {n}" for route, n in step.left.items()) or "-"),
            escape(", ".join(f"{goal} {n}" for goal, n in step.exited.items()) or "-"),
        )
    return table


def _message_table(messages: list[MessageFigures]) -> Table:
    table = Table(title="messages")
    for column in ("step", "template", "variant", "channel"):
        table.add_column(column, no_wrap=True)
    for column in ("sent", "delivered", "opened", "clicked", "bounced", "complained", "unsub",
                   "failed", "unconfirmed", "skipped", "held", "conv.last", "conv.any"):
        table.add_column(column, justify="right")
    for m in messages:
        skipped = ", ".join(f"{reason} {n}" for reason, n in m.skipped.items() if n) or "0"
        held = ", ".join(f"{reason} {n}" for reason, n in m.held.items() if n) or "0"
        table.add_row(
            escape(m.step), escape(m.template or "-"), escape(m.variant or "-"),
            m.channel or "-", str(m.sent),
            _with_rate(m.delivered, m.rates.delivery), _with_rate(m.opened, m.rates.open),
            _with_rate(m.clicked, m.rates.click), _with_rate(m.bounced, m.rates.bounce),
            _with_rate(m.complained, m.rates.complaint),
            _with_rate(m.unsubscribed, m.rates.unsubscribe),
            str(m.failed + m.undelivered), str(m.unconfirmed), skipped, held,
            _with_rate(m.conversions.last_touch, m.conversions.last_touch_rate),
            _with_rate(m.conversions.any_touch, m.conversions.any_touch_rate),
        )
    return table


def _link_table(messages: list[MessageFigures]) -> Table:
    """Per tracked link of each message: its clicks and the contacts who clicked it."""
    table = Table(title="links")
    for column in ("step", "template", "#", "link", "url"):
        table.add_column(column, no_wrap=column != "url")
    for column in ("clicks", "clickers"):
        table.add_column(column, justify="right")
    for m in messages:
        for link in m.links:
            table.add_row(escape(m.step), escape(m.template or "-"), str(link.index),
                          escape(link.label or "-"), escape(link.url), str(link.clicks),
                          _with_rate(link.unique_clickers, link.click_rate))
    return table


def _with_rate(n: int, share: float | None) -> str:
    return f"{n} ({share:.0%})" if share is not None and n else str(n)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.0f}m"
    hours = minutes / 60
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"


def _experiment_table(experiment: ExperimentReport) -> Table:
    """One experiment: per arm the metric's rate with its interval, uplift and significance."""
    share = f"{experiment.confidence:.0%}"
    table = Table(title=f"experiment at {escape(experiment.step)}: {escape(experiment.metric)} "
                        f"within {experiment.within}",
                  caption=escape(experiment.status))
    table.add_column("arm", no_wrap=True)
    for column in ("contacts", "converted", "rate", f"{share} interval", "uplift", "p-value",
                   "P(best)"):
        table.add_column(column, justify="right")
    winner = experiment.decision.winner if experiment.decision else None
    for arm in experiment.arms:
        label = arm.name + (" (control)" if arm.control else "") + (
            " ★ winner" if arm.name == winner else "")
        interval = (f"{arm.interval[0]:.1%}-{arm.interval[1]:.1%}" if arm.interval else "-")
        table.add_row(
            escape(label), str(arm.contacts), str(arm.conversions), _percent(arm.rate),
            interval, f"{arm.uplift:+.1%}" if arm.uplift is not None else "-",
            f"{arm.p_value:.4f}" if arm.p_value is not None else "-",
            f"{arm.probability_to_be_best:.1%}",
        )
    if experiment.decision is not None:
        table.caption = escape(f"winner {experiment.decision.winner} since "
                               f"{experiment.decision.decided_at:%Y-%m-%d %H:%M}Z: "
                               f"{experiment.decision.reason}")
    return table
