"""One handler per step kind: `async def handler(step, run) -> Next`.

Adding a step kind means one model in `cairn.journey`, one handler here and one test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from workflows.run import JourneyRun, Next
from workflows.steps import acting, deciding, ending, waiting

Handler = Callable[[Any, JourneyRun], Awaitable[Next]]

HANDLERS: dict[str, Handler] = {
    "wait": waiting.wait,
    "wait_until": waiting.wait_until,
    "wait_for_window": waiting.wait_for_window,
    "wait_for_event": waiting.wait_for_event,
    "if": deciding.if_,
    "split": deciding.split,
    "send": acting.send,
    "score": acting.score,
    "update": acting.update,
    "webhook": acting.webhook,
    "notify": acting.notify,
    "task": acting.task,
    "audience": acting.audience,
    "start_journey": acting.start_journey,
    "end": ending.end,
}
