"""The API as a new user starts it, without Temporal, on a loopback port: for `.ci/schemathesis.sh`.

Usage: python .ci/serve_api.py PORT HOME — a fresh SQLite store in HOME, events stored (not routed).
An admin key is made in the store and written to HOME/admin-key (0600) for the fuzzer to send.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

import uvicorn

from cairn.events.ingest import Ingest, utc_now
from cairn.log import configure
from cairn.settings import Settings
from cairn.store import keys
from cairn.store.db import Store
from starter.api.app import create_app


async def serve(port: int, home: Path) -> None:
    settings = Settings(home=home, secret_key="schemathesis-secret", log_level="WARNING")
    configure("WARNING", False)
    store = await Store.open(settings.store_url)
    try:
        async with store.session() as s, s.begin():
            # A name no fuzzer guesses: POST /v1/keys/{name}/revoke is fuzzed too.
            name = f"schemathesis-{secrets.token_hex(8)}"
            secret = await keys.create_key(s, name, "admin", utc_now())
        key_file = home / "admin-key"
        key_file.touch(mode=0o600)
        key_file.write_text(secret)
        app = create_app(store, Ingest(store, None), settings=settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off")
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
