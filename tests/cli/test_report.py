"""`cairn report`: the funnel with bars and the message table, or the API's JSON."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cairn.settings import get_settings
from cairn.store.db import Store
from cairn.store.schema import DeliveryLink
from starter.cli.main import app
from starter.cli.report import parse_since
from tests.analytics.test_reports import DEFINITION, KEY, T0, add, entry, feedback, send
from tests.engine_support import publish


async def _cli(*args: str) -> Result:
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, ["report", *args])
    finally:
        get_settings.cache_clear()


async def test_report_prints_the_funnel_and_the_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'report.db'}"
    monkeypatch.setenv("CAIRN_DATABASE_URL", url)
    store = await Store.open(url)
    try:
        await publish(store, DEFINITION)
        await add(store, entry(1, "converted", minutes=30), entry(2, "converted", minutes=90),
                  entry(3, "completed", minutes=120), entry(4, None))
        sent = await add(store, *(send(n, "sent", message_id=f"pm-{n}") for n in (1, 2, 3)))
        await add(store, send(4, "skipped:consent"), feedback(1, sent[0], "opened"),
                  feedback(1, sent[0], "clicked"))
    finally:
        await store.close()

    printed = await _cli(KEY)
    assert printed.exit_code == 0, printed.output
    text = printed.output
    assert "entry funnel" in text and "messages" in text
    assert "goal converted" in text and "50.0%" in text
    assert "█" * 15 in text  # converted: 2 of 4 entries, half the bar
    assert "median time to convert 60m" in text
    assert "email_reminder" in text and "cart-reminder" in text
    assert "1 (33%)" in text  # opened and clicked: 1 of 3 sent
    assert "consent 1" in text

    as_json = await _cli(KEY, "--json", "--since", "2026-03-01")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["funnel"]["entries"] == 4
    assert body["since"].startswith("2026-03-01T00:00:00")
    assert body["messages"][0]["clicked"] == 1

    later = await _cli(KEY, "--json", "--since", "2026-03-03")
    assert json.loads(later.output)["funnel"]["entries"] == 0

    unknown = await _cli("nope")
    assert unknown.exit_code == 1
    assert "publish it first" in unknown.output
    bad = await _cli(KEY, "--since", "last tuesday")
    assert bad.exit_code == 2
    assert "--since" in bad.output


def test_since_takes_a_date_a_time_or_a_duration_back() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_since("2026-03-02T09:30:00Z", now) == T0.replace(minute=30)
    with pytest.raises(ValueError, match="duration back from now"):
        parse_since("soon", now)


async def test_report_prints_each_experiment_and_its_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cairn.store.schema import ExperimentDecision
    from tests.analytics.test_experiment_figures import DEFINITION as EXPERIMENTS
    from tests.analytics.test_experiment_figures import clicked
    from tests.analytics.test_experiment_figures import send as variant_send

    url = f"sqlite+aiosqlite:///{tmp_path / 'report.db'}"
    monkeypatch.setenv("CAIRN_DATABASE_URL", url)
    store = await Store.open(url)
    try:
        await publish(store, EXPERIMENTS)
        control = await add(store, *(variant_send(n, "control", "cart-reminder")
                                     for n in range(10)))
        urgent = await add(store, *(variant_send(100 + n, "urgent", "cart-reminder-urgent")
                                    for n in range(10)))
        await add(store, clicked(0, control[0]), *(clicked(100 + n, urgent[n]) for n in range(6)),
                  ExperimentDecision(journey_key=KEY, step="email_reminder", winner="urgent",
                                     reason="urgent beats every other arm", metric="clicks",
                                     figures=[], decided_at=T0 + timedelta(days=1)))
    finally:
        await store.close()

    printed = await _cli(KEY)
    assert printed.exit_code == 0, printed.output
    text = printed.output
    assert "experiment at email_reminder: clicks" in text
    assert "control (control)" in text and "urgent ★ winner" in text
    assert "+500.0%" in text  # 60 % against 10 %
    assert "winner urgent since 2026-03-03 09:00Z" in text
    body = json.loads((await _cli(KEY, "--json")).output)
    [variants] = [e for e in body["experiments"] if e["kind"] == "variants"]
    assert variants["decision"]["winner"] == "urgent"
    assert [a["contacts"] for a in variants["arms"]] == [10, 10]


async def test_report_shows_variants_holds_and_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.analytics.test_experiment_figures import DEFINITION as VARIANTS
    from tests.analytics.test_experiment_figures import clicked
    from tests.analytics.test_experiment_figures import send as variant_send
    from tests.analytics.test_reports import hold

    url = f"sqlite+aiosqlite:///{tmp_path / 'report.db'}"
    monkeypatch.setenv("CAIRN_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "260")
    store = await Store.open(url)
    try:
        await publish(store, VARIANTS)
        sent = await add(store, variant_send(1, "control", "cart-reminder"),
                         variant_send(2, "urgent", "cart-reminder-urgent"))
        await add(store, hold(1, "quiet_hours"),
                  DeliveryLink(delivery_id=sent[1].id, position=0, contact_id="c-2",
                               url="https://shop.example/cart", label="Back to your cart"))
        click = clicked(2, sent[1])
        click.detail = {"source": "tracking", "link_index": 0}
        await add(store, click)
    finally:
        await store.close()
    printed = await _cli(KEY)
    assert printed.exit_code == 0, printed.output
    text = printed.output
    assert "variant" in text and "urgent" in text and "control" in text
    assert "quiet_hours 1" in text  # the held column of the control's row
    assert "Back to your cart" in text and "https://shop.example/cart" in text
