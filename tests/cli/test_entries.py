"""`cairn entries`: the sweep closes a terminated run's entry, the list shows it with its reason,
and `--reenter` starts the journey again; on the real Temporal test server and a SQLite file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from cairn.events.calls import TrackCall
from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.settings import get_settings
from cairn.store.db import Store
from starter.cli.main import app
from tests.engine_support import entries_of, publish, unique


async def _cli(*args: str) -> Result:
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, ["entries", *args])
    finally:
        get_settings.cache_clear()


async def test_sweep_lists_and_reenters_a_terminated_run(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    store = await Store.open(url)
    monkeypatch.setenv("CAIRN_DATABASE_URL", url)
    monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS",
                       temporal_env.client.service_client.config.target_host)
    queue = get_settings().journey_task_queue
    key = unique("cli-fragile")
    try:
        await publish(store, {"key": key, "name": "Fragile", "trigger": {"event": "go"},
                              "entry": {"reentry": "never"},
                              "steps": {"pause": {"wait": "1d", "next": "end"}}})
        ingest = Ingest(store, Router(temporal_env.client, store, task_queue=queue))
        tracked = await ingest.track(TrackCall(
            user_id="cli-1", event="go", message_id=unique("go"),
            timestamp=datetime.now(UTC) - timedelta(minutes=1)), route=True)
        [started] = tracked.routes
        assert started.action == "started" and started.workflow_id
        await temporal_env.client.get_workflow_handle(started.workflow_id).terminate(
            reason="stuck")

        swept = await _cli("--sweep")
        assert swept.exit_code == 0, swept.output
        assert "closed 1 entry" in swept.output
        [failed] = await entries_of(store, key)
        assert failed.outcome == "failed"
        assert str(failed.id) in swept.output and "run terminated" in swept.output

        again = await _cli("--reenter", str(failed.id))
        assert again.exit_code == 0, again.output
        assert f"entry #{failed.id}: started" in again.output
        assert [e.outcome for e in await entries_of(store, key)] == ["failed:reentered", None]

        refused = await _cli("--reenter", str(failed.id))
        assert refused.exit_code == 1 and "only failed entries" in refused.output
        listed = await _cli()  # the re-entered one is no longer waiting for an operator
        assert listed.exit_code == 0 and "No failed entries" in listed.output
    finally:
        for row in await entries_of(store, key):
            if row.ended_at is None:
                await temporal_env.client.get_workflow_handle(row.workflow_id).terminate()
        await store.close()
