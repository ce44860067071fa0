"""The simulation report: what happened to the scenario's contact (`cairn simulate --json`).

`SimulationReport.model_dump(mode="json")` is the JSON contract of docs/simulation.md: its keys,
their order and the way times are written (`utc_text`) are what users' scripts and CI checks read,
so they change only with that document. This module only describes the report; the engine
(`cairn.simulation.engine`) fills it from what the workflows and the store recorded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PrivateAttr
from temporalio.client import WorkflowHistory


def utc_text(moment: datetime) -> str:
    """UTC ISO-8601 with `Z`, to the second (milliseconds of real processing are not news)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


UtcTime = Annotated[datetime, PlainSerializer(utc_text, return_type=str, when_used="json")]


class ReportItem(BaseModel):
    model_config = ConfigDict(frozen=True)


class PathItem(ReportItem):
    step: str
    at: UtcTime
    note: str


class SendItem(ReportItem):
    at: UtcTime
    step: str | None
    channel: str | None
    template: str | None
    status: str
    reason: str = Field(default="", description="why a send was skipped, deferred or failed")


class ScoreItem(ReportItem):
    at: UtcTime
    dimension: str
    add: int
    total: int


class TaskItem(ReportItem):
    at: UtcTime
    queue: str
    title: str
    due: UtcTime | None


class AlertItem(ReportItem):
    at: UtcTime
    step: str | None
    to: str | None
    template: str | None
    status: str


class WebhookItem(ReportItem):
    at: UtcTime
    step: str | None
    method: str | None
    url: str | None
    status: str


class AudienceItem(ReportItem):
    at: UtcTime
    step: str | None
    sync: str | None
    audience: str | None
    action: str | None
    status: str


class SimulationReport(BaseModel):
    """What happened to the contact; `model_dump(mode="json")` is docs/simulation.md's JSON."""

    journey: str
    version: int | None
    contact: str
    outcome: str
    path: list[PathItem] = Field(default_factory=list)
    sends: list[SendItem] = Field(default_factory=list)
    scores: list[ScoreItem] = Field(default_factory=list)
    tasks: list[TaskItem] = Field(default_factory=list)
    alerts: list[AlertItem] = Field(default_factory=list)
    webhooks: list[WebhookItem] = Field(default_factory=list)
    audiences: list[AudienceItem] = Field(default_factory=list)

    _histories: dict[str, list[WorkflowHistory]] = PrivateAttr(default_factory=dict)

    @property
    def steps(self) -> list[str]:
        """Step names in the order the contact went through them (handy in assertions)."""
        return [item.step for item in self.path]

    @property
    def histories(self) -> dict[str, list[WorkflowHistory]]:
        """Workflow histories per workflow id, oldest run first (only with `keep_histories`)."""
        return self._histories

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False)
