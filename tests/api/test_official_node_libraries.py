"""Segment's and RudderStack's official Node.js libraries (`@segment/analytics-node`,
`@rudderstack/rudder-sdk-node`, pinned in tests/api/node/package.json), in their default settings,
pointed at the real API on loopback: every call type arrives and is stored, and a wrong write key
delivers nothing. The libraries run in `node` (tests/api/node/send-every-call.js); their
dependencies are installed by the README's install command (`npm ci --prefix tests/api/node`)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cairn.store.db import Store
from cairn.store.schema import Event
from tests.api.test_official_libraries import assert_every_call_stored

NODE_PROJECT = Path(__file__).parent / "node"
SCRIPT = NODE_PROJECT / "send-every-call.js"
INSTALL = "npm ci --prefix tests/api/node"
CALLS = ["page", "identify", "alias", "track", "screen", "group"]


def node() -> str:
    """The `node` executable, or a failure saying what to install (never a skip)."""
    found = shutil.which("node")
    if found is None:
        pytest.fail("these tests run Segment's and RudderStack's Node.js libraries: install "
                    f"Node.js 18 or newer (with npm), then run `{INSTALL}` (the README's install "
                    "step)",
                    pytrace=False)
    for package in ("@segment/analytics-node", "@rudderstack/rudder-sdk-node"):
        if not (NODE_PROJECT / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"{package} is not installed in tests/api/node: run `{INSTALL}` "
                        "(the README's install step)", pytrace=False)
    return found


async def send_every_call(library: str, base_url: str, key: str) -> tuple[int, dict[str, Any], str]:
    """Runs the script in `node` without blocking the event loop that serves the API; answers
    its exit status, its report (stdout) and its stderr."""
    process = await asyncio.create_subprocess_exec(
        node(), str(SCRIPT), library, base_url, key, cwd=NODE_PROJECT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert out, f"{library}: no report on stdout; stderr: {err.decode()}"
    return process.returncode or 0, json.loads(out.decode().strip().splitlines()[-1]), err.decode()


def sent_calls(report: dict[str, Any]) -> list[str]:
    return [call for request in report["requests"] for call in request["calls"]]


async def test_segment_analytics_node_delivers_every_call(
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    status, report, stderr = await send_every_call("segment", base_url, write_key)

    assert status == 0, (report, stderr)
    assert report["ok"] and report["errors"] == [] and sorted(report["delivered"]) == sorted(CALLS)
    # Batching by default: the six calls go in one POST /v1/batch, as plain JSON (the library has
    # no gzip), the write key as the Basic user name.
    [request] = report["requests"]
    assert request["url"] == f"{base_url}/v1/batch"
    assert request["calls"] == CALLS
    assert request["auth"] == "Basic"
    assert request["headers"]["content-type"] == "application/json"
    assert "content-encoding" not in request["headers"]
    assert request["status"] == 200
    await assert_every_call_stored(sqlite_store, [])


async def test_rudder_sdk_node_delivers_every_call(
    base_url: str, sqlite_store: Store, write_key: str
) -> None:
    status, report, stderr = await send_every_call("rudderstack", base_url, write_key)

    assert status == 0, (report, stderr)
    assert report["ok"] and report["errors"] == [] and sorted(report["delivered"]) == sorted(CALLS)
    # Batching and gzip by default: every request is a gzipped POST /v1/batch with the write key as
    # the Basic user name (the library sends the first call of a fresh client at once, the rest
    # together on flush); axios labels the gzipped JSON as a form, which the API reads as JSON.
    assert sent_calls(report) == CALLS
    assert len(report["requests"]) < len(CALLS)
    for request in report["requests"]:
        assert request["url"] == f"{base_url}/v1/batch"
        assert request["headers"]["content-encoding"] == "gzip"
        assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
        assert request["auth"] == "Basic"
        assert request["status"] == 200
    await assert_every_call_stored(sqlite_store, [])


@pytest.mark.parametrize("library", ["segment", "rudderstack"])
async def test_a_node_source_with_a_wrong_write_key_delivers_nothing(
    library: str, base_url: str, sqlite_store: Store
) -> None:
    status, report, _ = await send_every_call(library, base_url, "not-a-cairn-key")

    assert status == 1
    assert not report["ok"] and report["delivered"] == []
    assert report["errors"] and all("401" in error or "Unauthorized" in error
                                    for error in report["errors"]), report["errors"]
    assert {request["status"] for request in report["requests"]} == {401}
    assert sent_calls(report) == CALLS  # it did try to send every call
    async with sqlite_store.session() as session:
        assert list(await session.scalars(select(Event))) == []
