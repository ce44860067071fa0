"""A group commit: callers that write one item each, at the same moment, share one write.

Under load many callers arrive at once (track calls from many clients, entries recorded by many
routing lanes); a transaction each makes them queue for the store's write lock one after another
(SQLite has one), while one transaction for all of them costs little more than one. The first
caller starts a writer task; everything that arrives while it writes goes into its next write.
Each caller gets its own item's result. Should a shared write fail, each item is written again on
its own, so an item's failure is only ever its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """`submit(item)` returns `item`'s result once the write that held it committed.

    `write_all(items)` writes items together and returns their results in order; `write_one(item)`
    writes one item alone (after a shared write failed; it may rebuild what the failed
    transaction spent)."""

    def __init__(self, write_all: Callable[[list[Item]], Awaitable[list[Result]]],
                 write_one: Callable[[Item], Awaitable[Result]], *, name: str) -> None:
        self.write_all = write_all
        self.write_one = write_one
        self.name = name
        self._arriving: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is not None and writer.get_loop() is not loop:
            self._arriving, writer = [], None  # left over from another event loop (tests)
        written: asyncio.Future[Result] = loop.create_future()
        self._arriving.append((item, written))
        if writer is None or writer.done():
            self._writer = asyncio.create_task(self._write(), name=self.name)
        return await written

    async def _write(self) -> None:
        while self._arriving:
            taken, self._arriving = self._arriving, []
            try:
                results = await self.write_all([item for item, _ in taken])
            except Exception as error:
                if len(taken) == 1:
                    _settle(taken[0][1], error=error)
                    continue
                for item, written in taken:
                    try:
                        _settle(written, await self.write_one(item))
                    except Exception as own:
                        _settle(written, error=own)
                continue
            for (_, written), result in zip(taken, results, strict=True):
                _settle(written, result)


def _settle(future: asyncio.Future[Result], result: Result | None = None, *,
            error: BaseException | None = None) -> None:
    if future.done():  # the caller went away (its request was cancelled); the item is written
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
