"""Deterministic workflow code only: the journey interpreter, its step handlers, the sweeps.

Imports here are limited to `cairn` models and pure helpers, so the Temporal sandbox stays cheap.
"""

from workflows.journey import JourneyWorkflow
from workflows.sweeps import (
    DateAttributeSweepWorkflow,
    ImportEntryWorkflow,
    ScheduledEntryWorkflow,
    SegmentSweepWorkflow,
)

WORKFLOWS = [JourneyWorkflow, SegmentSweepWorkflow, DateAttributeSweepWorkflow,
             ScheduledEntryWorkflow, ImportEntryWorkflow]

__all__ = [
    "WORKFLOWS",
    "DateAttributeSweepWorkflow",
    "ImportEntryWorkflow",
    "JourneyWorkflow",
    "ScheduledEntryWorkflow",
    "SegmentSweepWorkflow",
]
