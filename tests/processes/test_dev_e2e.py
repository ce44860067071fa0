"""End to end on the real `temporal server start-dev` binary, as `cairn dev` runs it.

One stack for the module (dev server on free ports with a temporary SQLite file, a temporary store,
the bundled catalog published, workers and API in this process): events go in over real HTTP, runs
are found in Temporal by Cairn's search attributes, and a send ends as a row in the deliveries
ledger. The last test runs `cairn dev` itself as a subprocess and stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus

from cairn import search_attributes
from cairn.catalog import publish_catalog
from cairn.channels.smtp_sink import read_sink
from cairn.events.calls import TrackCall
from cairn.journey_run import STATE_QUERY, JourneyResult, JourneyStateView
from cairn.settings import Settings
from cairn.store import deliveries, entries, events
from cairn.store.schema import Delivery, Event
from starter.dev import DevStack, EventRelay, dev_stack, free_port, port_is_open
from tests.processes.liveness import alive

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0
"""Seconds any eventually-true fact may take (visibility lags the run by up to a second or so)."""

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"after {DEADLINE:.0f}s still no {what}")
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    home = tmp_path_factory.mktemp("cairn-home")
    settings = Settings(
        home=home,
        temporal_port=free_port(),
        ui_port=free_port(),
        api_port=free_port(),
        smtp_sink_port=free_port(),
        journeys_dir=REPO / "journeys",
    )
    async with dev_stack(settings, headless=True) as running:
        yield running


@pytest_asyncio.fixture
async def http(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    assert stack.api_url is not None and stack.keys is not None
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10,
                                 headers={"authorization": f"Bearer {stack.keys.admin}"}) as client:
        yield client


def new_contact() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


async def identify(http: httpx.AsyncClient, contact: str, traits: dict[str, object]) -> None:
    answer = await http.post("/v1/identify", json={"userId": contact, "traits": traits})
    assert answer.status_code == 202, answer.text


async def track(http: httpx.AsyncClient, contact: str, event: str,
                properties: dict[str, object]) -> None:
    answer = await http.post("/v1/track", json={"userId": contact, "event": event,
                                                "properties": properties})
    assert answer.status_code == 202, answer.text


async def test_catalog_is_published_with_cart_abandonment(stack: DevStack) -> None:
    keys = {row.key: row.version for row, _ in stack.published}
    assert "cart-abandonment" in keys
    assert keys["cart-abandonment"] == 1


async def test_tracked_event_starts_a_run_found_by_search_attributes_and_exits_on_goal(
    stack: DevStack, http: httpx.AsyncClient
) -> None:
    contact = new_contact()
    await identify(http, contact, {"email": f"{contact}@example.com", "cart": {"items": 2},
                                   "consent": {"marketing": True}})
    tracked_at = datetime.now(UTC)
    await track(http, contact, "cart_item_added", {"value": 25})

    query = f'CairnJourney = "cart-abandonment" AND CairnContact = "{contact}"'

    async def listed() -> list[str] | None:
        return [run.id async for run in stack.client.list_workflows(query)] or None

    run_ids = await eventually(listed, f"run listed for {query}")
    assert run_ids == [f"journey/cart-abandonment/{contact}"]

    handle = stack.client.get_workflow_handle(run_ids[0])
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.typed_search_attributes.get(search_attributes.JOURNEY) == "cart-abandonment"
    assert described.typed_search_attributes.get(search_attributes.CONTACT) == contact
    assert described.typed_search_attributes.get(search_attributes.VERSION) == 1

    async def waiting() -> JourneyStateView | None:
        state = await handle.query(STATE_QUERY, result_type=JourneyStateView)
        return state if state.current_step == "wait_2h" and state.until else None

    state = await eventually(waiting, "state query answering `wait_2h`")
    assert state.journey == "cart-abandonment" and state.contact == contact
    assert state.until is not None
    assert tracked_at + timedelta(hours=1, minutes=59) < state.until
    assert state.until < datetime.now(UTC) + timedelta(hours=2, minutes=1)

    async with stack.store.session() as session:
        rows = await entries.entries_for(session, journey_key="cart-abandonment",
                                         contact_id=contact)
    assert [row.workflow_id for row in rows] == [run_ids[0]]

    # The exit goal, over HTTP too: checking out ends the run mid-wait.
    await track(http, contact, "checkout_completed", {})
    result = await stack.client.get_workflow_handle(
        run_ids[0], result_type=JourneyResult).result()
    assert result.outcome == "converted"


async def test_relay_routes_an_event_the_api_stored_but_never_routed(stack: DevStack) -> None:
    contact = new_contact()
    # What the API leaves behind when it dies between its 202 and the routing: a stored event.
    stored = await stack.ingest.track(
        TrackCall(user_id=contact, event="cart_item_added", properties={"value": 30}),
        route=False,
    )
    assert not stored.routed

    routed = await EventRelay(stack.ingest, stack.store, grace=timedelta(0)).pass_once()

    assert routed >= 1
    described = await stack.client.get_workflow_handle(
        f"journey/cart-abandonment/{contact}").describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    async with stack.store.session() as session:
        left = await events.unrouted_events(session)
    assert stored.event_id not in [row.id for row in left]


PING_JOURNEY = """\
key: e2e-ping
name: End-to-end ping
trigger: {event: e2e_ping}
steps:
  hello:
    send: {channel: email, template: ping}
    next: end
"""

PING_TEMPLATE = """\
email:
  subject: "Ping for {{ contact.first_name | default: 'you' }}"
  body: "Ping {{ event.properties.n }} reached {{ contact.email }}."
"""


async def test_send_step_writes_a_delivery_row(
    stack: DevStack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    catalog = tmp_path / "journeys"
    (catalog / "templates").mkdir(parents=True)
    (catalog / "e2e-ping.yaml").write_text(PING_JOURNEY)
    (catalog / "templates" / "ping.yaml").write_text(PING_TEMPLATE)
    published = await publish_catalog(stack.store, catalog)
    assert [(row.key, new) for row, new in published] == [("e2e-ping", True)]

    contact = new_contact()
    await identify(http, contact, {"email": f"{contact}@example.com", "first_name": "Ana",
                                   "consent": {"marketing": True}})
    await track(http, contact, "e2e_ping", {"n": 7})

    async def delivered() -> list[Delivery] | None:
        async with stack.store.session() as session:
            rows = await deliveries.deliveries_for(session, contact_id=contact, kind="send")
        return rows if rows and all(r.status != "sending" for r in rows) else None

    rows = await eventually(delivered, f"delivery row for {contact}")
    assert len(rows) == 1
    row = rows[0]
    assert (row.journey_key, row.step, row.channel, row.template, row.status) == (
        "e2e-ping", "hello", "email", "ping", "sent")
    assert row.workflow_id == f"journey/e2e-ping/{contact}"
    assert row.rendered["subject"] == "Ping for Ana"
    assert row.rendered["body"] == f"Ping 7 reached {contact}@example.com."
    # `cairn dev` sends email over SMTP to its local sink, which keeps what arrived.
    assert row.provider == "smtp" and row.provider_message_id
    [mail] = [m for m in read_sink(stack.settings.mail_dir)
              if m.message_id == row.provider_message_id]
    assert mail.to == [f"{contact}@example.com"] and mail.subject == "Ping for Ana"
    assert (mail.text or "").strip() == f"Ping 7 reached {contact}@example.com."
    assert mail.headers["List-Unsubscribe"].startswith("<http://127.0.0.1:")

    result = await stack.client.get_workflow_handle(
        row.workflow_id, result_type=JourneyResult).result()
    assert result.outcome == "completed"
    assert [entry.step for entry in result.path] == ["hello"]


OPEN_JOURNEY = """
key: e2e-opened
name: Reminder, then SMS unless opened
trigger: {event: e2e_invoice}
start: reminder
steps:
  reminder: {send: {channel: email, template: invoice, category: transactional}, next: opened}
  opened:
    wait_for_event: {event: email_opened, where: {properties.template: invoice}, timeout: 2d}
    then: end
    timeout_next: sms
  sms: {send: {channel: sms, template: invoice, category: transactional}, next: end}
templates:
  invoice:
    email: {subject: "Invoice due", body: "Please pay invoice {{ event.properties.n }}."}
    sms: {body: "Invoice {{ event.properties.n }} is due."}
"""


async def test_an_open_reported_by_the_provider_webhook_moves_the_journey_on(
    stack: DevStack, http: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SMTP message's id comes back in a Postmark `Open` webhook: Cairn turns it into
    `email_opened` for the contact, and the journey waiting for it ends instead of texting."""
    catalog = tmp_path / "journeys"
    catalog.mkdir()
    (catalog / "e2e-opened.yaml").write_text(OPEN_JOURNEY)
    await publish_catalog(stack.store, catalog)
    contact = new_contact()
    await identify(http, contact, {"email": f"{contact}@example.com", "phone": "+40722000000"})
    await track(http, contact, "e2e_invoice", {"n": 42})

    async def sent() -> Delivery | None:
        async with stack.store.session() as session:
            rows = await deliveries.deliveries_for(session, contact_id=contact, kind="send")
        return rows[0] if rows and rows[0].status == "sent" else None

    row = await eventually(sent, f"sent reminder for {contact}")
    webhook: dict[str, object] = {"RecordType": "Open", "MessageID": row.provider_message_id,
               "Recipient": f"{contact}@example.com", "ReceivedAt": "2026-03-02T09:05:00Z",
               "FirstOpen": True, "Metadata": {}, "MessageStream": "outbound"}
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_USERNAME", "postmark")
    monkeypatch.setenv("CAIRN_POSTMARK_WEBHOOK_PASSWORD", "s3cret")
    postmark = ("postmark", "s3cret")
    answer = await http.post("/v1/feedback/postmark", json=webhook, auth=postmark)
    assert answer.status_code == 200, answer.text
    assert answer.json()["event"] == "email_opened"
    again = await http.post("/v1/feedback/postmark", json=webhook, auth=postmark)
    assert again.json()["duplicate"] is True

    handle = stack.client.get_workflow_handle(f"journey/e2e-opened/{contact}",
                                              result_type=JourneyResult)
    result = await asyncio.wait_for(handle.result(), DEADLINE)
    assert [entry.step for entry in result.path] == ["reminder", "opened"]
    async with stack.store.session() as session:
        opened = list(await session.scalars(
            select(Event).where(Event.contact_id == contact, Event.name == "email_opened")))
    assert len(opened) == 1
    assert opened[0].properties["template"] == "invoice"
    assert opened[0].properties["step"] == "reminder"


async def test_cairn_graph_shows_how_many_contacts_wait_in_each_step(
    stack: DevStack, http: httpx.AsyncClient,
) -> None:
    contact = new_contact()
    await identify(http, contact, {"email": f"{contact}@example.com", "cart": {"items": 1},
                                   "consent": {"marketing": True}})
    await track(http, contact, "cart_item_added", {"value": 30})

    async def listed() -> bool:
        from starter.cli.catalog import step_counts

        return (await step_counts(stack.client, "cart-abandonment")).get("wait_2h", 0) >= 1

    await eventually(listed, "a cart-abandonment run in wait_2h in Temporal's visibility")
    env = {**os.environ, "CAIRN_TEMPORAL_ADDRESS": stack.server.address}
    drawn = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "starter.cli", "graph", "cart-abandonment",
                         "--journeys-dir", str(REPO / "journeys")],
        capture_output=True, text=True, env=env, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("flowchart"), "stdout is the graph alone (logs: stderr)"
    [waiting] = [line for line in drawn.stdout.splitlines() if "<b>wait_2h</b>" in line]
    count = int(waiting.rsplit("<br/>", 1)[1].split()[0])
    assert count >= 1 and waiting.endswith(("contact\"])", "contacts\"])"))
    plain = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "starter.cli", "graph", "cart-abandonment",
                         "--journeys-dir", str(REPO / "journeys"), "--no-counts"],
        capture_output=True, text=True, env=env, timeout=120)
    assert " contact" not in plain.stdout


def test_cairn_dev_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    temporal_port, ui_port, api_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path / ".cairn"),
        "CAIRN_API_PORT": str(api_port),
        "CAIRN_SMTP_SINK_PORT": str(free_port()),
        "CAIRN_JOURNEYS_DIR": str(REPO / "journeys"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",  # rich wraps at 80 columns when not on a terminal
    }
    log = tmp_path / "cairn-dev.out"
    with log.open("w") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "starter.cli", "dev", "--port", str(temporal_port),
             "--ui-port", str(ui_port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            health = _wait_for_health(dev, f"http://127.0.0.1:{api_port}/v1/health", log)
            assert health["status"] == "ok"
            assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
            assert (tmp_path / ".cairn" / "temporal.db").exists()
            keys_file = tmp_path / ".cairn" / "dev-keys.sh"
            assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
            admin_key = re.search(r"CAIRN_ADMIN_KEY=(\S+)", keys_file.read_text())
            assert admin_key is not None
            journeys = f"http://127.0.0.1:{api_port}/v1/journeys"
            assert httpx.get(journeys, timeout=10).status_code == 401
            assert httpx.get(journeys, timeout=10, headers={
                "authorization": f"Bearer {admin_key.group(1)}"}).status_code == 200
            with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as browser:
                assert browser.get("/console").status_code == 303  # to the login page
                login = browser.post("/console/login", data={"key": admin_key.group(1)})
                assert login.status_code == 303
                assert 'data-journey="cart-abandonment"' in browser.get("/console").text
            dev.send_signal(signal.SIGINT)
            code = dev.wait(timeout=60)
        finally:
            if dev.poll() is None:
                dev.kill()
                dev.wait()
    output = log.read_text()
    assert code == 0, output
    assert f"http://127.0.0.1:{api_port}/docs" in output
    assert f"http://127.0.0.1:{api_port}/console" in output
    assert f"http://localhost:{ui_port}" in output
    assert "cart-abandonment v1" in output
    assert "Stopped." in output
    assert re.search(rf"Admin key:?\s+{admin_key.group(1)}", output), output
    assert f"Store: sqlite+aiosqlite:///{tmp_path / '.cairn' / 'cairn.db'}" in output
    assert f"Temporal: 127.0.0.1:{temporal_port} (the dev server), namespace default" in output
    assert not port_is_open("127.0.0.1", temporal_port), "the dev server outlived `cairn dev`"
    assert not port_is_open("127.0.0.1", api_port), "the API outlived `cairn dev`"


def test_cairn_dev_killed_outright_takes_its_temporal_server_along(tmp_path: Path) -> None:
    temporal_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path / ".cairn"),
        "CAIRN_API_PORT": str(api_port),
        "CAIRN_SMTP_SINK_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "cairn-dev.out"
    with log.open("w") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "starter.cli", "dev", "--port", str(temporal_port),
             "--ui-port", str(free_port()), "--no-publish"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_health(dev, f"http://127.0.0.1:{api_port}/v1/health", log)
            found = re.search(r"dev_server\.starting .*pid=(\d+)", log.read_text())
            assert found, log.read_text()
            server = int(found.group(1))
            dev.send_signal(signal.SIGKILL)
            dev.wait(timeout=10)
            deadline = time.monotonic() + 15
            while alive(server) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            if dev.poll() is None:
                dev.kill()
                dev.wait()
    if alive(server):
        os.kill(server, signal.SIGKILL)
        pytest.fail("the Temporal dev server outlived a `cairn dev` killed with SIGKILL")
    assert not port_is_open("127.0.0.1", temporal_port)


def _wait_for_health(dev: subprocess.Popen[bytes], url: str, log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            pytest.fail(f"`cairn dev` exited with {dev.returncode}:\n{log.read_text()}")
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                body: dict[str, object] = answer.json()
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"`cairn dev` did not answer {url} within 60s:\n{log.read_text()}")
