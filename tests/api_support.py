"""Calling the API as a test: keys made in the app's own store, and clients that send them.

`api_client(app)` is an in-process client authenticated as admin (what most API tests want);
`api_client(app, scope=None)` sends no key at all, `scope="read"` a read key, and so on.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
from fastapi import FastAPI

from cairn.events.ingest import utc_now
from cairn.store import keys
from cairn.store.db import Store

_names = itertools.count(1)


async def new_key(store: Store, scope: str = "admin", name: str | None = None) -> str:
    """A new key of `scope` in `store`; answers its secret."""
    async with store.session() as s, s.begin():
        return await keys.create_key(s, name or f"test-{scope}-{next(_names)}", scope, utc_now())


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def basic(user: str, password: str = "") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class StoreKey(httpx.Auth):
    """Sends `Authorization: Bearer KEY` with a key of `scope` made in `store` on first use,
    unless the request names its own Authorization."""

    def __init__(self, store: Store, scope: str = "admin") -> None:
        self.store = store
        self.scope = scope
        self.secret: str | None = None

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if "authorization" not in request.headers:
            if self.secret is None:
                self.secret = await new_key(self.store, self.scope)
            request.headers["authorization"] = f"Bearer {self.secret}"
        yield request


def admin(store: Store) -> StoreKey:
    """`auth=admin(store)`: the client calls as an admin key of `store`."""
    return StoreKey(store, "admin")


@contextlib.asynccontextmanager
async def api_client(app: FastAPI, *, scope: str | None = "admin",
                     base_url: str = "http://cairn.test") -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of `app` holding a key of `scope` (None: no key)."""
    auth = StoreKey(app.state.store, scope) if scope else None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url,
                                 auth=auth) as client:
        yield client
