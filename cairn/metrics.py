"""Cairn's Prometheus counters: what the event pipeline and the ledger did, per process.

Counted where it happens, with a line each: calls accepted and rejected (`cairn.events.ingest`,
the API's refusals), events routed (`cairn.events.ingest`), entries (`cairn.events.router`), send
ledger rows by channel and status (`activities.ledger`), sends held by quiet hours or a frequency
cap (`activities.send`), step transitions written (`activities.context`), activity failures
(the worker's interceptor). The API serves them on
`/metrics`, the worker on `CAIRN_WORKER_METRICS_PORT` (with the Temporal SDK's own metrics).

Labels never carry personal data: no contact ids, addresses or event properties; only journey
keys, channels, statuses, reasons, call types, endpoints and activity names, all bounded sets.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

__all__ = ["ACTIVITY_FAILURES", "CONTENT_TYPE_LATEST", "ENTRIES", "EVENTS_ACCEPTED",
           "EVENTS_REJECTED", "EVENTS_ROUTED", "INGEST_ENDPOINTS", "SENDS", "SEND_HOLDS",
           "STEP_TRANSITIONS",
           "count_rejected", "exposition"]

EVENTS_ACCEPTED = Counter(
    "cairn_events_accepted", "Calls stored (a message id seen before is not counted again), "
    "by call type", ["type"])
EVENTS_REJECTED = Counter(
    "cairn_events_rejected", "Calls refused: invalid bodies on the ingest endpoints and refused "
    "items of a batch, by endpoint", ["endpoint"])
EVENTS_ROUTED = Counter(
    "cairn_events_routed", "Events marked routed (matched against every published journey)")
ENTRIES = Counter(
    "cairn_entries", "Entries recorded by the router (a contact entering a journey), by journey",
    ["journey"])
SENDS = Counter(
    "cairn_sends", "Send ledger rows reaching a status (sending, sent, unconfirmed, failed, "
    "skipped:<reason>), by channel", ["channel", "status"])
SEND_HOLDS = Counter(
    "cairn_send_holds", "Marketing sends held until later, by reason (quiet_hours, "
    "frequency_cap)", ["reason"])
STEP_TRANSITIONS = Counter(
    "cairn_step_transitions", "Step visits written to the store by the runs' activities (a "
    "step reached, or left by a route), by journey", ["journey"])
ACTIVITY_FAILURES = Counter(
    "cairn_activity_failures", "Activity attempts that raised, by activity and error type "
    "(ProviderUnavailable is retried, ProviderRejected is not)", ["activity", "error_type"])

INGEST_ENDPOINTS = frozenset({"/v1/track", "/v1/identify", "/v1/page", "/v1/screen",
                              "/v1/group", "/v1/alias", "/v1/batch", "/v1/import"})
"""The only paths refusals are counted for: other paths carry contact ids."""


def count_rejected(path: str, n: int = 1) -> None:
    """Count refused calls on an ingest endpoint (any other path is not counted)."""
    if path in INGEST_ENDPOINTS and n:
        EVENTS_REJECTED.labels(endpoint=path).inc(n)


def exposition() -> bytes:
    """Every metric of this process in Prometheus' text format."""
    return generate_latest(REGISTRY)
