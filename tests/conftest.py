"""Shared fixtures.

Temporal's Python runtime can abort at interpreter exit (code 134) after a clean test run; the hook
at the bottom leaves with pytest's real status once everything is reported.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and not hasattr(sys, "_called_from_xdist"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
