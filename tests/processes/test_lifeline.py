"""A tied child ends when its parent is killed outright, through the kernel or the watcher.

Each test runs a parent process that starts a sleeping child with `start_tied`, kills the parent
with SIGKILL (no handler of its own can run) and waits for the child to be gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from starter.lifeline import start_tied
from tests.processes.liveness import alive

REPO = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]

PARENT = textwrap.dedent("""\
    import sys, time
    from starter.lifeline import start_tied
    child, _ = start_tied({sleeper!r}, prctl={prctl})
    print(child.pid, flush=True)
    time.sleep(300)
""")


def wait_until_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def kill_parent_and_watch_child(prctl: bool) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(sleeper=SLEEPER, prctl=prctl)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_until_gone(child, 15), "the child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_kernel_ends_the_child_of_a_killed_parent() -> None:
    kill_parent_and_watch_child(prctl=True)


def test_the_watcher_ends_the_child_of_a_killed_parent() -> None:
    kill_parent_and_watch_child(prctl=False)


def test_a_released_watcher_leaves_the_child_alone() -> None:
    child, lifeline = start_tied(SLEEPER, prctl=False)
    watcher = lifeline.watcher
    assert watcher is not None
    try:
        lifeline.release()
        assert watcher.returncode == 0
        assert alive(child.pid), "releasing the tie must not stop the child"
    finally:
        child.kill()
        child.wait()
