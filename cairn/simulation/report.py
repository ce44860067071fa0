"""The simulation report: what happened to the scenario's contact (`cairn simulate --json`).

`SimulationReport.model_dump(mode="json")` is the JSON contract of docs/simulation.md: its keys,
their order and the way times are written (`utc_text`) are what users' scripts and CI checks read,
so they change only with that document. This module only describes the report; the engine
(`cairn.simulation.engine`) fills it from what the workflows and the store recorded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from temporalio.client import WorkflowHistory

from cairn.journey import AudienceStep, NotifyStep, WebhookStep
from cairn.store.schema import Delivery


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


class LedgerItem(ReportItem):
    """A report line made from one row of the deliveries ledger and the step that wrote it."""

    @classmethod
    def of(cls, row: Delivery, step: Any) -> LedgerItem:
        raise NotImplementedError


class SendItem(LedgerItem):
    at: UtcTime
    step: str | None
    channel: str | None
    template: str | None
    status: str
    reason: str = Field(default="", description="why a send was skipped, deferred or failed")
    variant: str | None = Field(default=None, description="the variant sent (a send with "
                                "variants); left out of the JSON for other sends")

    @model_serializer(mode="wrap")
    def _variant_when_any(self, handler: SerializerFunctionWrapHandler) -> Any:
        dumped = handler(self)
        if isinstance(dumped, dict) and dumped.get("variant") is None:
            dumped.pop("variant", None)
        return dumped

    @classmethod
    def of(cls, row: Delivery, step: Any) -> SendItem:
        return cls(at=row.sent_at or row.created_at, step=row.step, channel=row.channel,
                   template=row.template, status=row.status, reason=row.reason or "",
                   variant=row.variant)


class ClickItem(ReportItem):
    """A tracked link clicked in a message (`link_clicked`), as the report lists it."""

    at: UtcTime
    step: str | None
    channel: str | None
    template: str | None
    link: str | None = Field(description="the link's label (anchor text or data-label)")
    url: str


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


class AlertItem(LedgerItem):
    at: UtcTime
    step: str | None
    to: str | None
    template: str | None
    status: str

    @classmethod
    def of(cls, row: Delivery, step: Any) -> AlertItem:
        notify = step.notify if isinstance(step, NotifyStep) else None
        return cls(at=row.sent_at or row.created_at, step=row.step,
                   to=notify.to if notify else row.channel,
                   template=notify.template if notify else row.template, status=row.status)


class WebhookItem(LedgerItem):
    at: UtcTime
    step: str | None
    method: str | None
    url: str | None
    status: str

    @classmethod
    def of(cls, row: Delivery, step: Any) -> WebhookItem:
        spec = step.webhook if isinstance(step, WebhookStep) else None
        rendered = row.rendered or {}
        return cls(at=row.sent_at or row.created_at, step=row.step,
                   method=rendered.get("method") or (spec.method if spec else None),
                   url=rendered.get("url") or (spec.url if spec else None), status=row.status)


class AudienceItem(LedgerItem):
    at: UtcTime
    step: str | None
    sync: str | None
    audience: str | None
    action: str | None
    status: str

    @classmethod
    def of(cls, row: Delivery, step: Any) -> AudienceItem:
        sync = step.audience if isinstance(step, AudienceStep) else None
        return cls(at=row.sent_at or row.created_at, step=row.step,
                   sync=sync.sync if sync else row.provider,
                   audience=sync.audience if sync else None,
                   action=sync.action if sync else None, status=row.status)


LEDGER_ITEMS: dict[str, tuple[str, type[LedgerItem]]] = {
    "send": ("sends", SendItem),
    "notify": ("alerts", AlertItem),
    "webhook": ("webhooks", WebhookItem),
    "audience": ("audiences", AudienceItem),
}
"""Ledger row kind -> the report list its rows join and the line each becomes. Other kinds
(`start_journey`) show in the path only."""


class SimulationReport(BaseModel):
    """What happened to the contact; `model_dump(mode="json")` is docs/simulation.md's JSON."""

    journey: str
    version: int | None
    contact: str
    outcome: str
    path: list[PathItem] = Field(default_factory=list)
    sends: list[SendItem] = Field(default_factory=list)
    clicks: list[ClickItem] = Field(default_factory=list)
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
