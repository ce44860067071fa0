"""Nothing personal in logs: an ingest, a refused call and a journey run, with a unique marker in
traits and properties, log at DEBUG without the marker ever appearing; tracebacks hide the values
exceptions quote."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cairn.events.ingest import Ingest
from cairn.journey_run import workflow_id
from cairn.log import RedactingFormatter, configure, redact
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from tests.api_support import admin
from tests.engine_support import engine, publish

MARKER = f"zq{uuid.uuid4().hex[:10]}"


async def test_ingest_refusals_and_a_run_log_no_trait_or_property_value(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    configure("DEBUG")
    caplog.set_level(logging.DEBUG)
    store = sqlite_store
    key, contact = f"logs-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    await publish(store, {
        "key": key, "name": "Logs", "trigger": {"event": "signup",
                                                 "where": {"properties.note": {"exists": True}}},
        "start": "check",
        "steps": {"check": {"if": {"attribute": "secret", "eq": MARKER},
                            "then": "tag", "else": "end"},
                  "tag": {"update": {"set": {"nickname": f"{MARKER}-nick"}}, "next": "end"}}})
    async with engine(temporal_env, store) as router:
        ingest = Ingest(store, router, attribute_changes=True)
        app = create_app(store, ingest, settings=Settings(home=tmp_path,
                                                          database_url=store.url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test", auth=admin(store)) as api:
            traits = {"email": f"{MARKER}@example.com", "first_name": MARKER, "secret": MARKER}
            assert (await api.post("/v1/identify", json={
                "userId": contact, "traits": traits})).status_code == 202
            assert (await api.post("/v1/identify", json={
                "userId": contact, "traits": {"first_name": f"{MARKER}-2"}})).status_code == 202
            refused = await api.post("/v1/identify", json={
                "userId": contact, "traits": {"timezone": f"{MARKER}/Nowhere"}})
            assert refused.status_code == 422 and MARKER in refused.text  # told the caller
            bad = await api.post("/v1/track", json={"userId": contact, "event": ["x", MARKER]})
            assert bad.status_code == 422
            assert (await api.post("/v1/track", json={
                "userId": contact, "event": "signup",
                "properties": {"note": MARKER, "address": f"{MARKER} street"}})).status_code == 202
            handle = temporal_env.client.get_workflow_handle(workflow_id(key, contact))
            for _ in range(200):
                try:
                    if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.05)
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
            patched = await api.patch(f"/v1/contacts/{contact}",
                                      json={"attributes": {"secret": f"{MARKER}-new"}})
            assert patched.status_code == 200
            await asyncio.sleep(0.2)  # the PATCH's attribute_changed events are routed after

    logged = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert "attribute.changed" in logged and "condition.decided" in logged  # they did log
    assert "ingest.stored" in logged and "api.rejected" in logged
    assert MARKER not in logged


def test_tracebacks_hide_quoted_inputs_and_bound_parameters() -> None:
    class Call(BaseModel):
        count: int

    try:
        Call.model_validate({"count": f"{MARKER} lives at 5 Main St"})
    except ValidationError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None,
                                   __import__("sys").exc_info())
    formatted = RedactingFormatter("%(message)s").format(record)
    assert "input_value=<hidden>" in formatted and MARKER not in formatted
    assert redact("DETAIL\n[parameters: ('ana@example.com', 3)]\n") == \
        "DETAIL\n[parameters hidden]\n"


async def test_database_errors_never_carry_the_values_bound(sqlite_store: Store) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with sqlite_store.session() as session:
            await session.execute(text("SELECT * FROM no_such_table WHERE x = :x"),
                                  {"x": MARKER})
    assert MARKER not in str(caught.value)
