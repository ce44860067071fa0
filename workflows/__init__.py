"""Deterministic workflow code only: the journey interpreter and its step handlers.

Imports here are limited to `cairn` models and pure helpers, so the Temporal sandbox stays cheap.
"""

from workflows.journey import JourneyWorkflow

WORKFLOWS = [JourneyWorkflow]

__all__ = ["WORKFLOWS", "JourneyWorkflow"]
