"""Opening the store: an async engine, sessions, and the Alembic migrations run at open.

`Store.open(url)` takes any async SQLAlchemy URL; the default is a SQLite file under `.cairn/`.
Repositories (`cairn.store.contacts`, `events`, ...) take the sessions this hands out and never
commit: the caller owns the transaction (`async with store.session() as s, s.begin(): ...`).

SQLite notes, because the default store is a file shared by the API and the worker:

* WAL journal, so readers never wait for a writer; a busy timeout, so writers queue instead of
  failing at once.
* Python's sqlite3 module starts a transaction only before the first INSERT/UPDATE/DELETE. Reads
  before it run without a snapshot, which keeps a read-then-write transaction from failing when
  another connection wrote in between. A SAVEPOINT, though, would start a transaction that its
  own RELEASE commits; `_begin_before_savepoint` opens the real transaction first, so the
  repositories' insert-or-find-existing savepoints stay inside their caller's transaction.

PostgreSQL (`postgresql+asyncpg://`, or plain `postgresql://`, which means the same here) is the
production store: the same migrations create it, an advisory lock makes processes that open it at
the same moment migrate one after the other, times are `timestamptz`, and JSON columns are `json`.
Its transactions are READ COMMITTED, so the repositories lock the rows they read-modify-write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from cairn.log import get_logger
from cairn.private_files import private_database

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
"""Alembic's script folder, installed with the package (no alembic.ini needed)."""

SQLITE_BUSY_TIMEOUT_MS = 15_000
"""How long a SQLite writer waits for another one before giving up with 'database is locked'."""

_MIGRATION_LOCK = 0x6361_6972_6E
"""PostgreSQL advisory lock key held while migrating, so two processes opening at once queue."""


Row = TypeVar("Row")


class StoreError(RuntimeError):
    """The store cannot be opened with the URL given; the message says what to change."""


def alembic_config(url: str | None = None) -> Config:
    """Alembic configured in code: Cairn's migrations, and the database URL if given.

    Developers write a new migration against a scratch database with
    `alembic.command.revision(alembic_config("sqlite+aiosqlite:///scratch.db"), autogenerate=True,
    message="...")` after upgrading it to head.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _async_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StoreError(
            f"cannot read the database URL {url!r}: use a SQLAlchemy URL such as "
            "'sqlite+aiosqlite:///.cairn/cairn.db' or 'postgresql+asyncpg://user:pw@host/cairn'"
        ) from error
    if parsed.drivername == "sqlite":
        # The plain SQLite URL is what people write; the store needs its async driver.
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres"):
        # Likewise `postgresql://` (what PostgreSQL tools print) means asyncpg here.
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def normalized_url(url: str) -> str:
    """`url` as `Store.open` keeps it in `Store.url` (async driver named): two URLs of the same
    database compare equal."""
    return _async_url(url).render_as_string(hide_password=False)


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def dump_json(value: Any) -> str:
    """A JSON column's text: orjson (several times faster than `json` on the rows a batch
    writes); what orjson refuses (integers over 64 bits, lone surrogates) as the standard
    library writes it. Reading stays with the standard library: orjson reads integers over 64
    bits as floats."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)



def _engine_options(url: URL) -> dict[str, Any]:
    """Pool settings per backend: a server connection may die under the pool (a PostgreSQL
    restart or failover), so it is checked before use; a SQLite file needs no such check."""
    if url.get_backend_name() == "postgresql":
        return {"pool_pre_ping": True}
    return {}


def _driver_in_transaction(connection: Connection) -> bool:
    driver = connection.connection.driver_connection
    return bool(getattr(driver, "in_transaction", False))


def _prepare_sqlite(engine: AsyncEngine, *, wal: bool) -> None:
    """Per-connection pragmas, and real transactions around savepoints (see module docstring)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # First: switching a new file to WAL takes its lock, and another process opening
            # the same new file at that moment must wait for it rather than fail.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "savepoint")
    def _begin_before_savepoint(connection: Connection, _name: str) -> None:
        if not _driver_in_transaction(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _lock_for_migration(connection: Connection) -> None:
    """Make a second process that opens the store at the same moment wait for this migration."""
    backend = connection.dialect.name
    if backend == "sqlite":
        if not _driver_in_transaction(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif backend == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")


def _upgrade_to_head(connection: Connection) -> tuple[str | None, str | None]:
    _lock_for_migration(connection)
    before = MigrationContext.configure(connection).get_current_revision()
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    after = MigrationContext.configure(connection).get_current_revision()
    return before, after


ADDRESS_KEY = "address_key"
"""Where a session's `info` holds the key of `Store.use_address_key`."""


class Store:
    """The database behind journeys: one async engine and the sessions it hands out."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    def use_address_key(self, key: bytes) -> None:
        """The server key that hashes the addresses of erased suppressions
        (`cairn.store.suppressions`); every session of this store carries it in `info`.
        Processes set it from their settings (`Settings.address_key`)."""
        self._sessions.configure(info={ADDRESS_KEY: key})

    @property
    def address_key(self) -> bytes | None:
        info = self._sessions.kw.get("info") or {}
        return info.get(ADDRESS_KEY)

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, pool_size: int | None = None) -> Store:
        """Connect to `url` (creating a SQLite file's folder) and bring the schema to head.

        `pool_size`: connections the pool keeps (opened when first needed); a process that runs
        N activities at once sizes it to N, so none opens and closes an overflow connection.
        """
        parsed = _async_url(url)
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # It holds contacts' personal data: owner only (SQLite gives -wal/-shm its mode).
            private_database(path, create=True)
        options = _engine_options(parsed)
        if pool_size is not None:
            options["pool_size"] = pool_size
        try:
            # hide_parameters: a database error's message (and so any traceback logged) shows
            # the statement but never the values bound to it (contacts' traits, events).
            engine = create_async_engine(parsed, hide_parameters=True,
                                         json_serializer=dump_json,
                                         **options)
        except (InvalidRequestError, ModuleNotFoundError) as error:
            raise StoreError(
                f"cannot open {parsed.render_as_string(hide_password=True)!r}: {error}. The store "
                "needs an async driver, e.g. sqlite+aiosqlite:// or postgresql+asyncpg:// "
                "(install the driver package)"
            ) from error
        if parsed.get_backend_name() == "sqlite":
            _prepare_sqlite(engine, wal=path is not None)
        store = cls(parsed.render_as_string(hide_password=False), engine)
        if migrate:
            try:
                await store.migrate()
            except BaseException:
                await engine.dispose()
                raise
        return store

    async def migrate(self) -> None:
        """Run Alembic `upgrade head` on this store's database (safe to repeat)."""
        _quiet_alembic()
        async with self.engine.connect() as connection:
            before, after = await connection.run_sync(_upgrade_to_head)
            await connection.commit()
        if before != after:
            log.info("store.migrated", url=self.engine.url.render_as_string(hide_password=True),
                     before=before, after=after)

    def session(self) -> AsyncSession:
        """A new session; use as `async with store.session() as s, s.begin():` to write."""
        return self._sessions()

    async def close(self) -> None:
        await self.engine.dispose()


def _quiet_alembic() -> None:
    """Alembic announces its context on every open at INFO; Cairn logs what changed instead."""
    logger = logging.getLogger("alembic")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


async def insert_once(
    s: AsyncSession, row: Row, find: Callable[[], Awaitable[Row | None]], *,
    known_absent: bool = False,
) -> tuple[Row, bool]:
    """Insert a row keyed by a unique column, or return the row already stored under that key.

    `find` looks the key up. It runs first (the usual case for a retry), and again when the insert
    loses a race to a concurrent writer: the insert runs in a SAVEPOINT, so the unique violation
    rolls back only the insert and the caller's transaction goes on. Returns (row, newly stored).
    """
    if not known_absent:
        existing = await find()
        if existing is not None:
            return existing, False
    if await _holds_sqlite_write_lock(s):
        # SQLite: this transaction has written already, so it holds the database's write lock
        # and no other writer can store the key between the lookup and this insert; the
        # savepoint (two statements) guards against nothing here.
        s.add(row)
        await s.flush()
        return row, True
    try:
        async with s.begin_nested():
            s.add(row)
            await s.flush()
    except IntegrityError:
        existing = await find()
        if existing is None:
            raise
        return existing, False
    return row, True


async def _holds_sqlite_write_lock(s: AsyncSession) -> bool:
    """Whether `s` is in a SQLite transaction that has written (the driver begins its
    transaction at the first write, which takes the database's write lock until the commit;
    `BEGIN IMMEDIATE` takes it at once)."""
    if s.bind is None or s.bind.dialect.name != "sqlite" or not s.in_transaction():
        return False
    connection = await s.connection()
    return _driver_in_transaction(connection.sync_connection)  # type: ignore[arg-type]
