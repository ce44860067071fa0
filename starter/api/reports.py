"""`GET /v1/journeys/{key}/report`: how a journey performs (funnel and message metrics).

The figures come from `cairn.reports.journey_report`, which `cairn report` prints too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from cairn.reports import JourneyReport, UnknownJourney, journey_report
from cairn.store.db import Store
from starter.api.auth import requires


def reports_router(store: Store) -> APIRouter:
    router = APIRouter(tags=["journeys"])

    @router.get(
        "/v1/journeys/{key}/report", response_model=JourneyReport,
        dependencies=[requires("read")],
        summary="How a journey performs: the entry funnel and message metrics",
        responses={404: {"description": "no such journey (or version)"}},
    )
    async def report(
        key: str,
        version: Annotated[int | None, Query(ge=1, description="one version (default: all)")]
        = None,
        since: Annotated[datetime | None, Query(
            description="entries from this time on (ISO-8601), e.g. 2026-03-01T00:00:00Z")]
        = None,
        until: Annotated[datetime | None, Query(description="entries before this time")]
        = None,
    ) -> JourneyReport:
        """Entries entered in the window (all time by default): active, completed, converted
        per exit goal (rate, interval, median time to convert), ended, removed, failed; and per
        send step, template and channel: sent, delivered, opened, clicked, bounced, complained,
        unsubscribed, failed, unconfirmed, skipped by reason, with rates. See
        docs/analytics.md."""
        try:
            return await journey_report(store, key, version=version, since=since, until=until)
        except UnknownJourney as error:
            raise HTTPException(404, str(error)) from error

    return router
