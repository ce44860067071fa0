"""Production workers share the interpreter's modules between runs (`share_workflow_code`);
tests and simulations keep the strict sandbox. Runs on shared code are exercised by
`benchmarks/waiting.py` and `cairn dev`."""

from __future__ import annotations

from cairn.settings import Settings
from starter.worker import SHARED_WORKFLOW_MODULES, workflow_runner


def test_only_production_workers_pass_the_interpreter_through() -> None:
    shared = workflow_runner(share_workflow_code=True).restrictions.passthrough_modules
    strict = workflow_runner().restrictions.passthrough_modules

    assert set(SHARED_WORKFLOW_MODULES) <= shared
    assert not set(SHARED_WORKFLOW_MODULES) & strict
    assert Settings().worker_strict_sandbox is False
