"""The worker's Prometheus endpoint: Cairn's counters and the Temporal SDK's runtime metrics.

`CAIRN_WORKER_METRICS_PORT` turns it on. The SDK exports its metrics (workflow and activity task
latencies, slots, polls, `temporal_activity_execution_failed`...) from its Rust core on an address
of its own; the worker binds that one to a free loopback port and serves both sets together on
the one port Prometheus scrapes, so a scrape config names one target per worker. Also here: the
interceptor that counts failed activity attempts (`cairn_activity_failures_total`).
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from cairn.log import get_logger
from cairn.metrics import ACTIVITY_FAILURES

log = get_logger(__name__)


class _CountFailures(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as error:
            error_type = (error.type if isinstance(error, ApplicationError) and error.type
                          else type(error).__name__)
            ACTIVITY_FAILURES.labels(activity=activity.info().activity_type,
                                     error_type=error_type).inc()
            raise


class ActivityFailures(Interceptor):
    """Counts every activity attempt that raised, by activity and error type."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountFailures(next)


class TemporalSdkMetrics(Collector):
    """The SDK's exporter, read on each scrape and served with Cairn's counters."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                text = answer.read().decode()
        except OSError as error:
            log.warning("metrics.temporal_sdk_unavailable", error=str(error))
            return
        yield from text_string_to_metric_families(text)


@dataclass
class WorkerMetrics:
    """The running endpoint: the runtime the worker's client must use, and how to stop it."""

    runtime: Runtime
    port: int
    _server: Any
    _collector: TemporalSdkMetrics

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        REGISTRY.unregister(self._collector)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> WorkerMetrics:
    """Start the endpoint on `host:port` and a Temporal runtime exporting to it."""
    sdk_address = f"127.0.0.1:{_free_loopback_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=sdk_address, counters_total_suffix=True,
                                 durations_as_seconds=True)))
    collector = TemporalSdkMetrics(f"http://{sdk_address}/metrics")
    REGISTRY.register(collector)
    try:
        server, _ = start_http_server(port, addr=host)
    except BaseException:
        REGISTRY.unregister(collector)
        raise
    bound = server.server_address[1]
    log.info("worker.metrics", url=f"http://{host}:{bound}/metrics", temporal_sdk=sdk_address)
    return WorkerMetrics(runtime=runtime, port=bound, _server=server, _collector=collector)
