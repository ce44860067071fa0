"""The API as a new user starts it, without Temporal, on a loopback port: for `.ci/schemathesis.sh`.

Usage: python .ci/serve_api.py PORT HOME — a fresh SQLite store in HOME, events stored (not routed).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

from cairn.events.ingest import Ingest
from cairn.log import configure
from cairn.settings import Settings
from cairn.store.db import Store
from starter.api.app import create_app


async def serve(port: int, home: Path) -> None:
    settings = Settings(home=home, secret_key="schemathesis-secret", log_level="WARNING")
    configure("WARNING", False)
    store = await Store.open(settings.store_url)
    try:
        app = create_app(store, Ingest(store, None), settings=settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off")
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
