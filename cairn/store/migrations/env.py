"""Alembic environment for Cairn's store.

`Store.open` hands over its own connection (`config.attributes["connection"]`), so migrations run
inside the application's event loop through `run_sync`. Run by hand (for example to autogenerate a
new revision), the URL comes from the config's `sqlalchemy.url`, set by
`cairn.store.db.alembic_config(url)`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cairn.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_offline(url: str) -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


async def run_with_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        run_on(given)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database to migrate: open the store with cairn.store.db.Store.open(url), or pass "
            "cairn.store.db.alembic_config(url) to the alembic command"
        )
    if context.is_offline_mode():
        run_offline(url)
    else:
        asyncio.run(run_with_url(url))


main()
