"""CSV imports: good rows applied, bad rows reported by line, idempotent, journeys started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cairn.events.imports import ImportFileError, ImportJourneyError, import_csv, read_rows
from cairn.events.ingest import Ingest
from cairn.settings import Settings, get_settings
from cairn.store import contacts as contacts_repo
from cairn.store.db import Store
from cairn.store.schema import Delivery, Event
from cairn.sweeps import SweepConfig, SweepResult, import_entry_id
from starter.api.app import create_app
from starter.cli.main import app as cli_app
from tests.api_support import admin
from tests.engine_support import (
    MARK_AND_END,
    engine,
    entries_of,
    events_named,
    finished,
    publish,
    unique,
)

MIXED = (
    "userId,email,plan,timezone,orders\n"          # line 1
    "c-1,ana@example.com,trial,Europe/Bucharest,3\n"  # line 2: good
    "c-2,not-an-email,pro,UTC,1\n"                  # line 3: bad email
    ",bob@example.com,pro,UTC,1\n"                  # line 4: no id
    "c-4,dan@example.com,pro,Mars/Olympus,2\n"      # line 5: bad timezone
    "\n"                                            # line 6: blank, not a row
    "c-5,,\"pro, annual\",,007\n"                   # line 7: good, quoted comma, empties
)


async def event_total(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


def test_rows_are_read_with_line_numbers_and_reasons() -> None:
    good, bad, read = read_rows(MIXED)
    assert read == 5
    assert [(row.line, row.contact_id) for row in good] == [(2, "c-1"), (7, "c-5")]
    assert good[0].traits == {"email": "ana@example.com", "plan": "trial",
                              "timezone": "Europe/Bucharest", "orders": 3}
    assert good[1].traits == {"plan": "pro, annual", "orders": "007"}  # "007" stays text
    assert [(p.line, p.message) for p in bad] == [
        (3, "email: 'not-an-email' is not an email address"),
        (4, "no contact id: the userId cell is empty"),
        (5, "timezone: 'Mars/Olympus' is not a time zone; use an IANA name such as "
            "Europe/Bucharest"),
    ]


def test_email_is_the_id_without_a_user_id_column() -> None:
    good, bad, _ = read_rows("email,first_name\nana@example.com,Ana\nana-at-example,Bo\n")
    assert [(row.contact_id, row.traits) for row in good] == [
        ("ana@example.com", {"email": "ana@example.com", "first_name": "Ana"})]
    assert [p.line for p in bad] == [3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("first_name,plan\nAna,pro\n", "no column identifies the contact"),
        ("userId,plan,plan\nc-1,a,b\n", "plan appear twice"),
    ],
)
def test_unreadable_files_are_refused_as_a_whole(text: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        read_rows(text)


async def test_good_rows_are_applied_and_bad_ones_reported(store: Store) -> None:
    summary, _ = await import_csv(Ingest(store, None), MIXED)
    assert (summary.rows, summary.applied, summary.duplicates, summary.skipped) == (5, 2, 0, 3)
    assert [e.line for e in summary.errors] == [3, 4, 5]
    async with store.session() as session:
        ana = await contacts_repo.snapshot(session, "c-1")
        assert ana is not None
        assert (ana.email, ana.timezone) == ("ana@example.com", "Europe/Bucharest")
        assert ana.attributes["plan"] == "trial" and ana.attributes["orders"] == 3
        for bad in ("c-2", "c-4"):
            assert await contacts_repo.get_contact(session, bad) is None


async def test_the_same_file_twice_adds_nothing(store: Store) -> None:
    ingest = Ingest(store, None, attribute_changes=True)
    first, _ = await import_csv(ingest, MIXED)
    stored = await event_total(store)
    again, _ = await import_csv(ingest, MIXED.encode())
    assert again.import_id == first.import_id
    assert (again.applied, again.duplicates, again.skipped) == (0, 2, 3)
    assert await event_total(store) == stored
    changed, _ = await import_csv(ingest, MIXED.replace("trial", "pro", 1))
    assert changed.import_id != first.import_id and changed.applied == 2
    [plan_change] = [e for e in await events_named(store, "attribute_changed", "c-1")
                     if e.properties["attribute"] == "plan" and e.properties["to"] == "pro"]
    assert plan_change.properties["from"] == "trial"


async def test_an_import_for_a_journey_needs_an_imported_trigger(store: Store) -> None:
    await publish(store, {"key": "by-event", "name": "By event", "trigger": {"event": "x"},
                          "steps": MARK_AND_END})
    with pytest.raises(ImportJourneyError, match="no published journey 'nope'"):
        await import_csv(Ingest(store, None), MIXED, journey="nope")
    with pytest.raises(ImportJourneyError, match="imported: true"):
        await import_csv(Ingest(store, None), MIXED, journey="by-event")
    assert await event_total(store) == 0


async def test_an_imported_journey_starts_once_per_good_row(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    key = unique("imported")
    await publish(store, {"key": key, "name": "Imported welcome",
                          "trigger": {"imported": True}, "steps": MARK_AND_END})
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router)
        summary, _ = await import_csv(ingest, MIXED, journey=key)
        assert summary.routed and summary.applied == 2
        started = await entries_of(store, key)
        assert sorted(e.contact_id for e in started) == ["c-1", "c-5"]
        for entry in started:
            assert (await finished(temporal_env, entry.workflow_id)).outcome == "completed"
        imported = await events_named(store, "journey_imported", "c-5")
        assert [e.properties for e in imported] == [
            {"journey": key, "import_id": summary.import_id, "line": 7}]

        again, _ = await import_csv(ingest, MIXED, journey=key)
        assert (again.applied, again.duplicates) == (0, 2)
        assert len(await entries_of(store, key)) == 2


async def test_an_import_enters_on_the_workers_in_batches_and_a_send_only_journey_has_no_runs(
    temporal_env: WorkflowEnvironment, store: Store, tmp_path: Path
) -> None:
    """With `entries`, the import's entries go to an ImportEntryWorkflow: batches side by side,
    each entered together; a journey whose only step is a send is sent to by the batch."""
    waiting, mailing = unique("imported"), unique("imported")
    await publish(store, {"key": waiting, "name": "Imported drip", "trigger": {"imported": True},
                          "steps": {"pause": {"wait": "30d", "next": "end"}}})
    await publish(store, {"key": mailing, "name": "Imported mail", "trigger": {"imported": True},
                          "templates": {"hi": {"email": {"subject": "Hi", "body": "Hi"}}},
                          "steps": {"mail": {"send": {"channel": "email", "template": "hi",
                                                      "category": "transactional"},
                                             "next": "end"}}})
    rows = "userId,email\n" + "".join(f"i-{i},i{i}@example.com\n" for i in range(5))
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router)
        config = SweepConfig(journeys_dir=str(tmp_path), journey_task_queue=router.task_queue,
                             delivery_task_queue=router.delivery_task_queue, batch_size=2)
        for key in (waiting, mailing):
            summary, _ = await import_csv(ingest, rows, journey=key, entries=config)
            assert summary.routed and summary.applied == 5
            result = await temporal_env.client.get_workflow_handle(
                import_entry_id(summary.import_id, key), result_type=SweepResult).result()
            assert (result.contacts, result.batches) == (5, 3)
        drip = await entries_of(store, waiting)
        assert sorted((e.contact_id, e.workflow_id) for e in drip) == [
            (f"i-{i}", f"journey/{waiting}/i-{i}") for i in range(5)]
        mail = await entries_of(store, mailing)
        acting = import_entry_id(summary.import_id, mailing)
        assert {(e.workflow_id, e.outcome) for e in mail} == {(acting, "completed")}
        async with store.session() as session:
            sent = list(await session.scalars(select(Delivery).where(
                Delivery.journey_key == mailing)))
        assert sorted((d.contact_id, d.status, d.workflow_id) for d in sent) == [
            (f"i-{i}", "sent", acting) for i in range(5)]


async def test_the_api_imports_text_and_multipart(store: Store) -> None:
    key = unique("imported")
    await publish(store, {"key": key, "name": "Imported", "trigger": {"imported": True},
                          "steps": MARK_AND_END})
    await publish(store, {"key": "by-event", "name": "By event", "trigger": {"event": "x"},
                          "steps": MARK_AND_END})
    app = create_app(store, Ingest(store, None), settings=Settings(database_url=store.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test",
                                 auth=admin(app.state.store)) as api:
        answer = await api.post(f"/v1/imports?journey={key}", content=MIXED,
                                headers={"content-type": "text/csv"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["applied"], body["skipped"]) == (2, 3)
        assert body["errors"][0] == {"line": 3,
                                     "message": "email: 'not-an-email' is not an email address"}
        assert len(await events_named(store, "journey_imported")) == 2

        upload = await api.post("/v1/imports", files={
            "file": ("contacts.csv", b"userId,plan\nc-9,pro\nc-10,\n", "text/csv")})
        assert upload.status_code == 200, upload.text
        assert upload.json()["applied"] == 2
        resent = await api.post("/v1/imports", files={
            "file": ("same.csv", b"userId,plan\nc-9,pro\nc-10,\n", "text/csv")})
        assert (resent.json()["applied"], resent.json()["duplicates"]) == (0, 2)

        unknown = await api.post("/v1/imports?journey=nope", content=MIXED,
                                 headers={"content-type": "text/csv"})
        assert unknown.status_code == 404 and "cairn publish" in unknown.json()["detail"]
        wrong = await api.post("/v1/imports?journey=by-event", content=MIXED,
                               headers={"content-type": "text/csv"})
        assert wrong.status_code == 422 and "imported: true" in wrong.json()["detail"]
        headless = await api.post("/v1/imports", content="plan\npro\n",
                                  headers={"content-type": "text/csv"})
        assert headless.status_code == 422
        assert "no column identifies the contact" in headless.json()["detail"]


async def test_the_cli_imports_with_a_journey_and_exits_1_on_bad_rows(
    temporal_env: WorkflowEnvironment, store: Store, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = unique("imported")
    await publish(store, {"key": key, "name": "Imported", "trigger": {"imported": True},
                          "steps": MARK_AND_END})
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(MIXED)
    async with engine(temporal_env, store) as router:
        monkeypatch.setenv("CAIRN_DATABASE_URL", store.url)
        monkeypatch.setenv("CAIRN_TEMPORAL_ADDRESS",
                           temporal_env.client.service_client.config.target_host)
        # The workers here decode with the test server's clear converter.
        monkeypatch.setenv("CAIRN_PAYLOAD_ENCRYPTION", "false")
        monkeypatch.setenv("CAIRN_JOURNEY_TASK_QUEUE", router.task_queue)
        assert router.delivery_task_queue is not None
        monkeypatch.setenv("CAIRN_DELIVERY_TASK_QUEUE", router.delivery_task_queue)
        monkeypatch.setenv("CAIRN_JOURNEYS_DIR", str(tmp_path))
        monkeypatch.setenv("COLUMNS", "200")
        get_settings.cache_clear()
        runner = CliRunner()
        try:
            first = await asyncio.to_thread(
                runner.invoke, cli_app, ["import", str(csv_file), "--journey", key])
            again = await asyncio.to_thread(
                runner.invoke, cli_app, ["import", str(csv_file), "--journey", key])
            wrong = await asyncio.to_thread(
                runner.invoke, cli_app, ["import", str(csv_file), "--journey", "nope"])
        finally:
            get_settings.cache_clear()
        assert first.exit_code == 1, first.output
        assert "2 applied" in first.output and "3 bad" in first.output
        for line, words in ((3, "not an email address"), (4, "no contact id"),
                            (5, "not a time zone")):
            assert any(row.strip(" │").startswith(str(line)) and words in row
                       for row in first.output.splitlines()), first.output
        started = await entries_of(store, key)
        assert sorted(e.contact_id for e in started) == ["c-1", "c-5"]
        for entry in started:
            assert (await finished(temporal_env, entry.workflow_id)).outcome == "completed"
        assert again.exit_code == 1 and "0 applied, 2 already imported" in again.output
        assert len(await entries_of(store, key)) == 2
        assert wrong.exit_code == 1 and "no published journey 'nope'" in wrong.output
