"""The simulator's two failures: a scenario that cannot be used, and a run that could not happen.

Doors tell them apart (`cairn simulate` exits 1 for the first, 2 for the second), so every module
of the simulator raises these and nothing else of its own.
"""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario that cannot be used; `problems` lists each one with the field it concerns."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class SimulationError(RuntimeError):
    """The simulation could not run (no test server binary, a clock that does not move, ...)."""
