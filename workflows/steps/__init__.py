"""One handler per step kind: `async def handler(step, run) -> Next`, in the module of its role
(`waiting`, `deciding`, `acting`, `ending`; the role is declared on the step's model).

Adding a step kind:
- `cairn/journey.py`: its model (a `StepBase` with `kind`, `role` and `describe`, which graphs
  use) and its place in `STEP_MODELS`;
- here: its handler in the module of its role, and its line in `HANDLERS`;
- if it acts on the world: its module `activities/<kind>.py` and its line in
  `activities.STEP_ACTIVITIES`; then either a `record_action` kind (its body in
  `cairn.contracts.ActionRequest`, its functions in `activities.actions.ACTIONS`) or an activity
  of its own (name, request and result in `cairn.contracts`, registered in
  `activities.journey_activities`);
- tests: its behaviour, and a saved history that visits it (`tests/engine/test_replay.py` replays
  every kind). `tests/architecture/test_step_kinds.py` checks that these tables agree.
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
