"""The worker's metrics port: Cairn's counters and the Temporal SDK's on one endpoint, and
failed activity attempts counted by the worker's interceptor."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from cairn.metrics import ACTIVITY_FAILURES
from cairn.store.db import Store
from starter.worker_metrics import ActivityFailures, serve_worker_metrics
from tests.engine_support import unique


@activity.defn(name="metrics_test_refused")
async def refused() -> None:
    raise ApplicationError("no such address", type="ProviderRejected", non_retryable=True)


@workflow.defn(name="MetricsTestWorkflow", sandboxed=False)
class FailingWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            refused, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


async def test_the_metrics_port_serves_cairn_and_temporal_sdk_metrics(
    temporal_env: WorkflowEnvironment,
) -> None:
    endpoint = serve_worker_metrics(_free_port(), "127.0.0.1")
    try:
        client = await Client.connect(
            temporal_env.client.service_client.config.target_host,
            namespace=temporal_env.client.namespace, runtime=endpoint.runtime,
            data_converter=pydantic_data_converter)
        failures = ACTIVITY_FAILURES.labels(activity="metrics_test_refused",
                                            error_type="ProviderRejected")
        before = failures._value.get()
        queue = unique("metrics")
        async with Worker(client, task_queue=queue, workflows=[FailingWorkflow],
                          activities=[refused], interceptors=[ActivityFailures()]):
            handle = await client.start_workflow(FailingWorkflow.run, id=unique("metrics"),
                                                 task_queue=queue)
            try:
                await handle.result()
                raise AssertionError("the workflow should fail")
            except WorkflowFailureError:
                pass
        assert failures._value.get() == before + 1

        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{endpoint.port}/metrics")
        names = {family.name for family in text_string_to_metric_families(text)}
        assert "cairn_activity_failures" in names
        assert "cairn_sends" in names and "cairn_events_accepted" in names
        sdk = {name for name in names if name.startswith("temporal_")}
        assert "temporal_request" in sdk, sorted(sdk)
        assert any("activity" in name for name in sdk), sorted(sdk)
    finally:
        endpoint.close()


async def test_run_worker_serves_its_metrics_on_the_configured_port(
    temporal_env: WorkflowEnvironment, sqlite_store: Store,
) -> None:
    from cairn.settings import Settings
    from starter.worker import run_worker

    port = _free_port()
    settings = Settings(database_url=sqlite_store.url,
                        temporal_address=temporal_env.client.service_client.config.target_host,
                        temporal_namespace=temporal_env.client.namespace,
                        journey_task_queue=unique("journeys"),
                        delivery_task_queue=unique("delivery"),
                        worker_metrics_port=port, worker_metrics_host="127.0.0.1")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        text = ""
        for _ in range(100):
            try:
                text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
                if "temporal_request" in text:
                    break
            except OSError:
                pass
            assert not worker.done(), worker.exception()
            await asyncio.sleep(0.1)
        assert "cairn_sends_total" in text and "temporal_request" in text
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    try:
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        raise AssertionError("the metrics port should be closed with the worker")
    except OSError:
        pass
