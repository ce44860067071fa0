"""structlog set-up: key-value lines for people, JSON lines for machines (`CAIRN_LOG_JSON=1`).

Modules bind context once (`log.bind(journey=..., contact=..., step=...)`) and log events with
key-value pairs. Every log line goes to stderr, Cairn's and its libraries' alike: stdout belongs to
a command's output (`cairn graph x > x.mmd`, `cairn simulate --json | jq`).
"""

from __future__ import annotations

import logging
import re
import sys

import structlog


class _StandardError:
    """Writes each line to whatever `sys.stderr` is now.

    Binding the stream once would keep writing to a stream a test runner or a CLI runner has
    since closed; stdout stays free for machine-readable output (`cairn simulate --json`).
    """

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure(level: str = "INFO", json: bool = False) -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=lambda *args: _StandardError(),
        cache_logger_on_first_use=False,
    )
    _configure_standard_logging(logging.getLevelNamesMapping().get(level.upper(), logging.INFO))


_QUOTED_INPUT = re.compile(r"input_value=.*?(?=, input_type=)", re.DOTALL)
_BOUND_PARAMETERS = re.compile(r"\[parameters: .*?\]$", re.MULTILINE)


def redact(text: str) -> str:
    """A traceback without the values exceptions quote: pydantic's `input_value=...` (a
    request body, a contact) and a database error's bound `[parameters: ...]`."""
    return _BOUND_PARAMETERS.sub("[parameters hidden]",
                                 _QUOTED_INPUT.sub("input_value=<hidden>", text))


class RedactingFormatter(logging.Formatter):
    """Libraries' log lines with their tracebacks `redact`ed."""

    def formatException(self, ei: object) -> str:
        return redact(super().formatException(ei))  # type: ignore[arg-type]


_HANDLER = "cairn"
"""Name of the stderr handler `configure` puts on the root logger when nobody else has one."""


def _configure_standard_logging(level: int) -> None:
    """Libraries' own logs (Temporal, SQLAlchemy, Alembic) go to stderr at the same level.

    A handler someone else installed (a test runner's, an embedding application's) is left as it
    is; the level of Cairn's own handler follows each call, so a command that sets a quieter
    level first does not silence the process that starts after it.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER)
        handler.setFormatter(RedactingFormatter("%(name)s %(message)s"))
        root.addHandler(handler)
    if any(handler.get_name() == _HANDLER for handler in root.handlers):
        root.setLevel(level)
    # Alembic announces its plugins and migration context at INFO each time the store opens;
    # the store logs what it migrated itself (`store.migrated`).
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # aiosqlite logs every statement with its bound values at DEBUG: contacts' traits and
    # events. Never below INFO, whatever CAIRN_LOG_LEVEL says.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
