"""A scriptable HTTP stand-in: a real uvicorn server on loopback, answering like a provider.

Each provider's stand-in is a Starlette app built around a `Script`: tests queue what the next
requests meet (`fail(500)`, `fail(429, retry_after=1)`, `slow(seconds)` which accepts the
message and answers late) and read what the provider accepted (`script.accepted`). Without a
plan, requests succeed. `refused_url()` names a loopback port nothing listens on.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette


@dataclass
class Plan:
    """What one request meets: an error status (with a body and Retry-After), or a delay."""

    status: int | None = None
    body: Any = None
    retry_after: str | None = None
    delay: float = 0.0
    accept: bool = False  # with delay: the message is accepted before the late answer


@dataclass
class Script:
    plans: deque[Plan] = field(default_factory=deque)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, status: int, body: Any = None, retry_after: str | None = None,
             times: int = 1) -> None:
        for _ in range(times):
            self.plans.append(Plan(status=status, body=body, retry_after=retry_after))

    def slow(self, seconds: float, accept: bool = True) -> None:
        self.plans.append(Plan(delay=seconds, accept=accept))

    def next_plan(self) -> Plan | None:
        return self.plans.popleft() if self.plans else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_url() -> str:
    """An http URL on a loopback port that refuses connections."""
    return f"http://127.0.0.1:{free_port()}"


class StandInServer:
    """Runs an ASGI app in uvicorn on its own thread; `url` is its base URL."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> StandInServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stand-in server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def apply_plan(plan: Plan | None) -> None:
    """Sleep for a slow plan (call after recording an accepted message when `plan.accept`)."""
    if plan is not None and plan.delay:
        await asyncio.sleep(plan.delay)
