"""Deterministic workflow code only: the journey interpreter, its step handlers, the sweeps.

Imports here are limited to `cairn` models and pure helpers, so the Temporal sandbox stays cheap.
This package's `__init__` imports nothing: the sandbox re-imports a workflow's modules (this one
included) for every new run, and a journey run must not pay for the sweeps' code and models.
`WORKFLOWS` (every workflow a worker registers) is therefore built on first access, outside the
sandbox, by the worker.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "WORKFLOWS",
    "DateAttributeSweepWorkflow",
    "ImportEntryWorkflow",
    "JourneyWorkflow",
    "ScheduledEntryWorkflow",
    "SegmentSweepWorkflow",
]

_SWEEPS = ("DateAttributeSweepWorkflow", "ImportEntryWorkflow", "ScheduledEntryWorkflow",
           "SegmentSweepWorkflow")


def __getattr__(name: str) -> Any:
    """The workflow classes, imported on first use (PEP 562)."""
    if name == "JourneyWorkflow":
        from workflows.journey import JourneyWorkflow

        return JourneyWorkflow
    if name in _SWEEPS:
        from workflows import sweeps

        return getattr(sweeps, name)
    if name == "WORKFLOWS":
        from workflows.journey import JourneyWorkflow
        from workflows.sweeps import (
            DateAttributeSweepWorkflow,
            ImportEntryWorkflow,
            ScheduledEntryWorkflow,
            SegmentSweepWorkflow,
        )

        return [JourneyWorkflow, SegmentSweepWorkflow, DateAttributeSweepWorkflow,
                ScheduledEntryWorkflow, ImportEntryWorkflow]
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
