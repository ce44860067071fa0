"""`cairn graph KEY --funnel`: the journey report's step figures on the Mermaid graph."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cairn.settings import get_settings
from cairn.store.db import Store
from starter.cli.main import app
from tests.analytics.test_reports import KEY, STEPPED, add, entry, visit
from tests.engine_support import publish


async def _cli(*args: str) -> Result:
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, ["graph", *args])
    finally:
        get_settings.cache_clear()


async def test_graph_funnel_writes_reached_waiting_and_routes_on_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'graph.db'}"
    monkeypatch.setenv("CAIRN_DATABASE_URL", url)
    journey = tmp_path / "journeys" / f"{KEY}.yaml"
    journey.parent.mkdir()
    (journey.parent / "templates").mkdir()
    (journey.parent / "templates" / "cart-reminder.yaml").write_text(
        "email: {subject: Your cart, body: Still there}\n")
    journey.write_text(
        f"key: {KEY}\nname: Reduce cart abandonment\ntrigger: {{event: cart_item_added}}\n"
        "exit: [{event: checkout_completed, goal: converted}]\n"
        "steps:\n"
        "  wait_1h: {wait: 1h, next: email_reminder}\n"
        "  email_reminder: {send: {channel: email, template: cart-reminder}, next: wait_1d}\n"
        "  wait_1d: {wait: 1d, next: end}\n")
    store = await Store.open(url)
    try:
        await publish(store, STEPPED)
        await add(
            store, entry(1, None), entry(2, "converted", minutes=30),
            entry(3, "completed", minutes=2000),
            visit(2, 1, "wait_1h", "exit:converted", "end"),
            visit(3, 1, "wait_1h", "next", "email_reminder"),
            visit(3, 2, "email_reminder", "next", "wait_1d"),
            visit(3, 3, "wait_1d", "next", "end"),
        )
    finally:
        await store.close()

    drawn = await _cli(str(journey), "--funnel")
    assert drawn.exit_code == 0, drawn.output
    lines = drawn.output.splitlines()
    node = next(line for line in lines if line.strip().startswith("s_wait_1h("))
    assert "reached 3, waiting 1<br/>exit converted: 1" in node
    assert "  s_wait_1h -->|1| s_email_reminder" in lines
    assert "  s_wait_1d -->|1| finish" in lines
    assert any("s_email_reminder[" in line and "reached 1, waiting 0" in line for line in lines)
    print(drawn.output)

    other = await _cli(str(journey), "--funnel", "--version", "2")
    assert other.exit_code == 1 and "version 2" in other.output
    bad = await _cli(str(journey), "--funnel", "--since", "someday")
    assert bad.exit_code == 2
