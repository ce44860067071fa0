"""`cairn keys`: the secret printed once as the last line, listed without it, revoked for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from cairn.events.ingest import Ingest
from cairn.settings import Settings, get_settings
from cairn.store import keys as keys_repo
from cairn.store.db import Store
from starter.api.app import create_app
from starter.cli.main import app


async def _cli(*args: str) -> Result:
    get_settings.cache_clear()
    return await asyncio.to_thread(CliRunner().invoke, app, ["keys", *args])


async def test_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}"
    monkeypatch.setenv("CAIRN_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")

    created = await _cli("create", "backend", "--scope", "admin")
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    assert secret.startswith(keys_repo.SECRET_PREFIX) and " " not in secret

    again = await _cli("create", "backend", "--scope", "read")
    unknown_scope = await _cli("create", "other", "--scope", "owner")
    assert (again.exit_code, unknown_scope.exit_code) == (1, 1)
    assert "exists already" in again.output and "unknown scope" in unknown_scope.output

    listed = await _cli("list")
    assert listed.exit_code == 0
    assert "backend" in listed.output and "admin" in listed.output
    assert secret not in listed.output

    store = await Store.open(url)
    try:
        api = create_app(store, Ingest(store, None), settings=Settings(database_url=url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                     base_url="http://cairn.test") as client:
            headers = {"authorization": f"Bearer {secret}"}
            before = await client.get("/v1/keys", headers=headers)
            revoked = await _cli("revoke", "backend")
            api.state.keyring.forget()  # another process revoked it: the cache would wait 10 s
            after = await client.get("/v1/keys", headers=headers)
    finally:
        await store.close()
    assert before.status_code == 200 and [k["name"] for k in before.json()] == ["backend"]
    assert revoked.exit_code == 0, revoked.output
    assert after.status_code == 401
    listed = await _cli("list")
    assert "backend" in listed.output and listed.output.count("20") >= 2  # created and revoked
    missing = await _cli("revoke", "nobody")
    assert missing.exit_code == 1 and "no key named" in missing.output
