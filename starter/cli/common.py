"""What every `cairn` command shares: its settings, how it fails, where its output goes.

`load_settings` reads the `CAIRN_*` settings and sends logs to stderr (stdout carries only the
command's output, so it can be piped); `fail` prints one red `error:` line on stderr and ends the
command with an exit code; `output` is the console for tables, as wide as they are when stdout is
not a terminal. No command logic lives here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from cairn.settings import Settings
    from cairn.store.db import Store

T = TypeVar("T")

PIPED_WIDTH = 10_000
"""Columns of the output console when stdout is a file or a pipe: no table row is cut to fit.

Rich would use 80 there, which cuts table cells with an ellipsis; only an explicit COLUMNS
setting still decides the width.
"""

errors = Console(stderr=True)
"""Where notes and errors go: stderr, so stdout stays the command's output alone."""


def load_settings(*, chatty: bool = False, **overrides: Any) -> Settings:
    """The `CAIRN_*` settings (with the overrides given that are not None), logs on stderr.

    Long-running processes are `chatty` (they log at CAIRN_LOG_LEVEL); one-shot commands log
    warnings only unless CAIRN_LOG_LEVEL asks for more than the default INFO.
    """
    from cairn.log import configure
    from cairn.settings import get_settings

    settings = get_settings()
    given = {name: value for name, value in overrides.items() if value is not None}
    if given:
        settings = settings.model_copy(update=given)
    level = settings.log_level
    if not chatty and level.upper() == "INFO":
        level = "WARNING"
    configure(level, settings.log_json)
    return settings


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: <message>` on stderr; raise the returned exit to end with `code`."""
    errors.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False,
                 soft_wrap=True)
    return typer.Exit(code)


def run_job(job: Coroutine[Any, Any, T], *expected: type[Exception]) -> T:
    """Run a command's async work; the `expected` failures become one `error:` line, exit 1."""
    try:
        return asyncio.run(job)
    except expected as error:
        raise fail(str(error)) from None


async def with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store of `settings`, do `work` with it, close it."""
    from cairn.store.db import Store

    store = await Store.open(settings.store_url)
    try:
        return await work(store)
    finally:
        await store.close()


def output() -> Console:
    """The console for a command's tables and lines on stdout (see PIPED_WIDTH)."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console
