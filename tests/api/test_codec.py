"""The codec endpoints and a journey run on Temporal with the codec on: its history is
ciphertext, the API decodes it for the UI and CLI, and erasing the contact makes it unreadable."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cairn.events.ingest import Ingest
from cairn.events.router import Router
from cairn.journey_run import workflow_id
from cairn.privacy.codec import cairn_data_converter
from cairn.privacy.keys import DataKeys, data_keys_for
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app
from starter.worker import journey_workers, running
from tests.api_support import admin, bearer, new_key
from tests.engine_support import publish, terminate_leftovers

MARKER = f"codec-marker-{uuid.uuid4().hex[:8]}"
UI = "http://localhost:8233"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def as_json(payload: Payload) -> dict[str, Any]:
    return {"metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
            "data": base64.b64encode(payload.data).decode()}


def from_json(item: dict[str, Any]) -> Payload:
    return Payload(metadata={k: base64.b64decode(v) for k, v in item["metadata"].items()},
                   data=base64.b64decode(item["data"]))


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every payload of a history event (inputs, results, signals, failures...) but its search
    attributes, which Temporal indexes and so keeps in clear (ids and step names only)."""
    if isinstance(message, Payload):
        yield message
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.name == "search_attributes":
            continue
        if isinstance(value, Message):
            yield from payloads_in(value)
            continue
        items = value.values() if hasattr(value, "values") else value  # a map, or repeated
        for item in items:
            if isinstance(item, Message):
                yield from payloads_in(item)


def settings_for(store: Store, home: Path) -> Settings:
    return Settings(home=home, database_url=store.url, codec_cors_origins=[UI])


@pytest_asyncio.fixture
async def codec_api(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(sqlite_store, Ingest(sqlite_store, None),
                     settings=settings_for(sqlite_store, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test", auth=admin(sqlite_store)) as client:
        yield client


async def test_encode_then_decode_through_the_endpoints(codec_api: httpx.AsyncClient) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"x": MARKER}).encode())
    headers = {"X-Namespace": "default"}  # and the fixture's admin key

    encoded = await codec_api.post("/codec/encode", json={"payloads": [as_json(plain)]},
                                   headers=headers)
    assert encoded.status_code == 200, encoded.text
    (sealed,) = encoded.json()["payloads"]
    assert from_json(sealed).metadata["encoding"] == b"binary/encrypted"
    assert MARKER.encode() not in base64.b64decode(sealed["data"])

    clear = Payload(metadata={"encoding": b"json/plain"}, data=b'"as it was"')
    decoded = await codec_api.post("/codec/decode", headers=headers,
                                   json={"payloads": [sealed, as_json(clear)]})
    assert decoded.status_code == 200, decoded.text
    assert [from_json(p) for p in decoded.json()["payloads"]] == [plain, clear]

    bad = await codec_api.post("/codec/decode", json={"payloads": [{"data": "not base64!"}]})
    assert bad.status_code == 422


async def test_cors_lets_the_ui_origin_in_and_no_other(codec_api: httpx.AsyncClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {"Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace"}

    allowed = await codec_api.options("/codec/decode", headers=preflight(UI))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == UI
    assert "x-namespace" in allowed.headers["access-control-allow-headers"].lower()
    refused = await codec_api.options("/codec/decode", headers=preflight("http://evil.test"))
    assert "access-control-allow-origin" not in refused.headers
    # Only the codec paths answer CORS at all.
    other = await codec_api.options("/v1/track", headers=preflight(UI))
    assert "access-control-allow-origin" not in other.headers


async def test_the_codec_needs_an_admin_key_except_for_cairn_devs_own_ui(
    sqlite_store: Store, tmp_path: Path
) -> None:
    body = {"payloads": [as_json(Payload(metadata={"encoding": b"json/plain"}, data=b"1"))]}
    for without_key, origin, expected in ((False, None, 401), (False, UI, 401),
                                          (True, UI, 200), (True, "http://evil.test", 401),
                                          (True, None, 401)):
        settings = settings_for(sqlite_store, tmp_path).model_copy(
            update={"codec_ui_without_key": without_key})
        app = create_app(sqlite_store, Ingest(sqlite_store, None), settings=settings)
        headers = {"Origin": origin} if origin else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://cairn.test") as client:
            answer = await client.post("/codec/decode", json=body, headers=headers)
        assert answer.status_code == expected, (without_key, origin, answer.text)
    # A read key is not enough: decoding shows what runs hold.
    app = create_app(sqlite_store, Ingest(sqlite_store, None),
                     settings=settings_for(sqlite_store, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://cairn.test") as client:
        read = await client.post("/codec/decode", json=body,
                                 headers=bearer(await new_key(sqlite_store, "read")))
        admin_key = await new_key(sqlite_store, "admin")
        from_ui = await client.post("/codec/decode", json=body,
                                    headers={**bearer(admin_key), "Origin": UI})
    assert read.status_code == 403
    assert from_ui.status_code == 200  # the UI's origin is allowed to send a key


async def test_a_run_with_the_codec_on_keeps_only_ciphertext_in_temporal(
    temporal_env: WorkflowEnvironment, sqlite_store: Store, tmp_path: Path
) -> None:
    store, settings = sqlite_store, settings_for(sqlite_store, tmp_path)
    keys = data_keys_for(settings, store)
    assert isinstance(keys, DataKeys)
    client = Client(temporal_env.client.service_client, namespace=temporal_env.client.namespace,
                    data_converter=cairn_data_converter(keys))
    key, contact = unique("codec"), unique("c")
    await publish(store, {"key": key, "name": "Welcome", "trigger": {"event": "signup"},
                          "steps": {"pause": {"wait": "3d", "next": "end"}}})
    queue = unique("journeys")
    workers = journey_workers(client, store, journey_queue=queue,
                              delivery_queue=f"{queue}-delivery")
    router = Router(client, store, task_queue=queue, delivery_task_queue=f"{queue}-delivery")
    ingest = Ingest(store, router)
    app = create_app(store, ingest, settings=settings, temporal=client)
    wid = workflow_id(key, contact)
    try:
        async with running(workers), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://cairn.test",
                auth=admin(store)) as api:
            assert (await api.post("/v1/identify", json={
                "userId": contact, "traits": {"email": f"{MARKER}@example.com",
                                              "first_name": MARKER}})).status_code == 202
            assert (await api.post("/v1/track", json={
                "userId": contact, "event": "signup",
                "properties": {"note": MARKER}})).status_code == 202
            handle = client.get_workflow_handle(wid)
            for _ in range(100):
                history = await handle.fetch_history()
                if any(e.HasField("timer_started_event_attributes") for e in history.events):
                    break
                await asyncio.sleep(0.05)
            payloads = [p for e in history.events for p in payloads_in(e)]

            assert payloads, "the run's history has payloads"
            clear = [p for p in payloads if p.metadata["encoding"] != b"binary/encrypted"]
            assert not clear, [(p.metadata, p.data) for p in clear]
            assert MARKER not in history.to_json() and contact not in str(
                [p.data for p in payloads])
            assert len({p.metadata["cairn-data-key-id"] for p in payloads}) == 1

            decoded = await api.post("/codec/decode", headers={"X-Namespace": "default"},
                                     json={"payloads": [as_json(p) for p in payloads]})
            assert decoded.status_code == 200, decoded.text
            texts = [from_json(p).data.decode() for p in decoded.json()["payloads"]]
            assert any(contact in text for text in texts)  # the start input names the contact

            erased = await api.delete(f"/v1/contacts/{contact}")
            assert erased.status_code == 200, erased.text
            assert erased.json()["data_key_destroyed"] is True
            assert (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

            after = await api.post("/codec/decode", json={"payloads": [as_json(payloads[0])]})
            assert after.status_code == 200, after.text
            (marker,) = after.json()["payloads"]
            assert json.loads(from_json(marker).data)["erased"] is True
    finally:
        await terminate_leftovers(client, store)


@pytest.mark.parametrize("encryption", [False])
async def test_encryption_off_leaves_payloads_in_clear(
    encryption: bool, tmp_path: Path, sqlite_store: Store
) -> None:
    settings = Settings(home=tmp_path, database_url=sqlite_store.url,
                        payload_encryption=encryption)
    assert data_keys_for(settings) is None
    (payload,) = await cairn_data_converter(data_keys_for(settings)).encode([MARKER])
    assert payload.data == json.dumps(MARKER).encode()
