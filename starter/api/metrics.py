"""`GET /metrics`: Cairn's counters for Prometheus (`cairn.metrics`), with a read key.

Counts only (no contact ids, addresses or properties), but they still tell an outsider how much
traffic a business has, and this API usually faces the internet (apps send it events): so it
asks for a `read` key like every read view. Prometheus sends one with `authorization:
credentials_file` in its scrape config (docs/operations.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from cairn.metrics import CONTENT_TYPE_LATEST, exposition
from starter.api.auth import requires

_EXAMPLE = ('# HELP cairn_events_accepted_total Calls stored...\n'
            '# TYPE cairn_events_accepted_total counter\n'
            'cairn_events_accepted_total{type="track"} 42.0\n')


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", dependencies=[requires("read")], response_class=Response,
                summary="Prometheus metrics of this API process",
                responses={200: {"description": "Prometheus text format",
                                 "content": {"text/plain": {"example": _EXAMPLE}}}})
    async def metrics() -> Response:
        """Events accepted, rejected and routed, entries, and the send ledger's counts as this
        process saw them (the worker serves its own, with the Temporal SDK's). See
        docs/operations.md."""
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
