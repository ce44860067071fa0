"""structlog set-up: key-value lines for people, JSON lines for machines (`CAIRN_LOG_JSON=1`).

Modules bind context once (`log.bind(journey=..., contact=..., step=...)`) and log events with
key-value pairs.
"""

from __future__ import annotations

import logging
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
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(name)s %(message)s")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
