"""Child processes that end when the process that started them ends, however it ends.

`cairn dev` runs Temporal's dev server as a child in a session of its own, so that a Ctrl-C
reaches Cairn first and Cairn stops things in order. Killed outright (SIGKILL, a crash, the OOM
killer), Cairn gets no say, and the server would run on, holding its port and its database. So the
child is tied to its parent when it starts:

- on Linux the kernel sends it SIGTERM when the parent dies (`prctl(PR_SET_PDEATHSIG)`, set
  between fork and exec);
- elsewhere a small watcher process reads a pipe only the parent writes to: the pipe closes when
  the parent dies, whatever kills it, and the watcher then ends the child.

Run as `python -m starter.lifeline PID`, this module is that watcher. It does not decide when a
child should stop while its parent lives: that is the parent's job, which then `release`s the tie.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>: the signal a process gets when its parent dies."""

GRACE_SECONDS = 10.0
"""How long the watcher lets the child stop on SIGTERM before it kills it."""


@dataclass
class Lifeline:
    """The tie between this process and a child; `release` it once the child has been stopped."""

    watcher: subprocess.Popen[bytes] | None = None

    def release(self, *, timeout: float = 5.0) -> None:
        """Let the watcher (if there is one) leave without touching the child."""
        watcher, self.watcher = self.watcher, None
        if watcher is None:
            return
        stdin: IO[bytes] | None = watcher.stdin
        try:
            if stdin is not None:
                stdin.write(b"released")
                stdin.close()
            watcher.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            watcher.kill()
            watcher.wait()


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that asks the kernel for SIGTERM when the parent dies; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: the child must not load
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the tie was made
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def start_tied(
    command: list[str], *, prctl: bool = True, **popen: Any
) -> tuple[subprocess.Popen[bytes], Lifeline]:
    """Start `command` (with Popen's keyword arguments) tied to this process.

    The kernel's tie follows the thread that starts the child: start it from the thread that
    lives as long as the process (the asyncio loop's, in Cairn). `prctl=False` uses the watcher
    even on Linux.
    """
    preexec = _die_with_parent() if prctl else None
    if preexec is not None:
        return subprocess.Popen(command, preexec_fn=preexec, **popen), Lifeline()
    child = subprocess.Popen(command, **popen)
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "starter.lifeline", str(child.pid)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
        )
    except BaseException:
        child.kill()
        child.wait()
        raise
    return child, Lifeline(watcher)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def end(pid: int, *, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM, then SIGKILL if the process is still there after `grace` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def watch(pid: int) -> None:
    """Block until the parent releases the tie (data on stdin) or dies (end of stdin)."""
    if not sys.stdin.buffer.read(1):
        end(pid)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
