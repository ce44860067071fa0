"""`cairn runs` and `cairn journeys` on the real dev server: lists and counts from visibility with
paging, a run's detail from its `state` query only when one run or one contact is asked for.

The time-skipping test server has no visibility queries, so these run on `temporal server
start-dev` (one per module).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from cairn import run_views, search_attributes
from cairn.events.router import Router
from cairn.journey_run import EventMessage, workflow_id
from cairn.settings import get_settings
from cairn.store.db import Store
from starter.cli.main import app as cli_app
from tests.engine_support import T0, engine, publish, unique

WAIT_A_DAY = {"pause": {"wait": "1d", "next": "end"}}


@pytest_asyncio.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
    )
    try:
        yield env
    finally:
        await env.shutdown()


def signup(contact: str) -> EventMessage:
    return EventMessage(message_id=unique("m"), event="signup", contact_id=contact,
                        timestamp=T0)


async def cli(env: WorkflowEnvironment, store: Store, monkeypatch: pytest.MonkeyPatch,
              *args: str) -> Result:
    monkeypatch.setenv("CAIRN_DATABASE_URL", store.url)
    monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS", env.client.service_client.config.target_host)
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))
    finally:
        get_settings.cache_clear()


async def eventually(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await probe():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)


async def started_without_worker(env: WorkflowEnvironment, store: Store, key: str,
                                 count: int) -> list[str]:
    """`count` runs entered by the router on a queue no worker polls: they answer no query."""
    router = Router(env.client, store, task_queue=unique("nobody"))
    contacts = [unique("c") for _ in range(count)]
    for contact in contacts:
        [decision] = await router.route(signup(contact))
        assert decision.action == "started", decision

    async def listed() -> bool:
        return await run_views.count_runs(env.client, key) == count

    await eventually(listed, f"{count} runs of {key} in visibility")
    return contacts


def listed_contacts(output: str, contacts: list[str]) -> list[str]:
    return [c for c in contacts if c in output]


async def test_runs_pages_through_visibility_without_asking_any_run(
    dev_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = unique("paged")
    await publish(sqlite_store, {"key": key, "name": "Paged", "trigger": {"event": "signup"},
                                 "steps": WAIT_A_DAY})
    contacts = await started_without_worker(dev_env, sqlite_store, key, 7)

    began = time.monotonic()
    first = await cli(dev_env, sqlite_store, monkeypatch, "runs", "--journey", key, "--limit", "3")
    seconds = time.monotonic() - began

    # No worker runs these: one `state` query each would take 5 s (its timeout) per run.
    assert seconds < run_views.QUERY_TIMEOUT.total_seconds(), seconds
    assert first.exit_code == 0, first.output
    assert "(7 running)" in first.stdout
    seen = listed_contacts(first.stdout, contacts)
    assert len(seen) == 3
    assert first.stdout.count("pause") == 3
    token = re.search(r"--next (\S+)", first.stderr)
    assert token is not None, first.stderr

    second = await cli(dev_env, sqlite_store, monkeypatch, "runs", "--journey", key, "--limit",
                       "3", "--next", token.group(1))
    assert second.exit_code == 0, second.output
    more = listed_contacts(second.stdout, contacts)
    assert len(more) == 3 and not set(more) & set(seen)
    token = re.search(r"--next (\S+)", second.stderr)
    assert token is not None, second.stderr

    last = await cli(dev_env, sqlite_store, monkeypatch, "runs", "--journey", key, "--limit",
                     "3", "--page-token", token.group(1))
    assert last.exit_code == 0, last.output
    rest = listed_contacts(last.stdout, contacts)
    assert sorted(seen + more + rest) == sorted(contacts)
    assert "--next" not in last.stderr


async def test_journeys_counts_steps_from_visibility(
    dev_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = unique("counted")
    await publish(sqlite_store, {"key": key, "name": "Counted", "trigger": {"event": "signup"},
                                 "steps": {"pause": {"wait": "1d", "next": "later"},
                                           "later": {"wait": "1d", "next": "end"}}})
    await started_without_worker(dev_env, sqlite_store, key, 4)

    assert dict(await run_views.step_counts(dev_env.client, key, ["pause", "later"])) == {
        "pause": 4}
    listed = await cli(dev_env, sqlite_store, monkeypatch, "journeys")

    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if key in line]
    assert "pause: 4" in line
    assert re.search(r"\b4\b.*pause: 4", line), line  # open entries, from one count query


async def test_one_run_and_one_contact_show_the_state_query(
    dev_env: WorkflowEnvironment, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, contact = unique("detail"), unique("c")
    await publish(sqlite_store, {"key": key, "name": "Detail", "trigger": {"event": "signup"},
                                 "steps": WAIT_A_DAY})
    async with engine(dev_env, sqlite_store) as router:
        [decision] = await router.route(signup(contact))
        assert decision.action == "started"
        wid = workflow_id(key, contact)

        async def waiting() -> bool:
            view = await run_views.run_detail(dev_env.client, wid)
            return view is not None and view.waiting_for is not None

        await eventually(waiting, "the run waits in pause")
        one = await cli(dev_env, sqlite_store, monkeypatch, "runs", wid)
        by_contact = await cli(dev_env, sqlite_store, monkeypatch, "runs", "--contact", contact)
        missing = await cli(dev_env, sqlite_store, monkeypatch, "runs", f"journey/{key}/nobody")

    view = await run_views.run_detail(dev_env.client, wid)
    assert one.exit_code == 0, one.output
    assert f"contact {contact}" in one.stdout
    assert "step pause, waiting for" in one.stdout
    assert "path" in one.stdout and "wait" in one.stdout
    assert by_contact.exit_code == 0, by_contact.output
    assert "waiting for" in by_contact.stdout and "until" in by_contact.stdout
    assert contact in by_contact.stdout
    assert view is None or view.current_step == "pause"
    assert missing.exit_code == 1
    assert "has no run" in missing.stderr


def test_a_page_token_that_is_not_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS", "127.0.0.1:1")
    done = CliRunner().invoke(cli_app, ["runs", "--next", "not a token!"])

    assert done.exit_code == 1
    assert "not a page token" in done.stderr
