"""Files that hold secrets or personal data, made readable by their owner only (mode 0600).

Key files are created with that mode (never written world-readable first); databases made by
someone else (SQLite, the Temporal dev server) are tightened after the fact, with their -wal and
-shm companions.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600


def write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 and write `text`; FileExistsError if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


def private_database(path: Path, *, create: bool = False) -> None:
    """A SQLite file (created empty with mode 0600 if `create` and it does not exist) and its
    -wal/-shm files, 0600.

    An existing database is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, so the SQLite connections this process already has
    open on it would lose theirs, and another process closing its last connection would then
    take the file as unused, checkpoint it and delete the -wal file under them (their later
    commits invisible to everyone else). Only chmod, which leaves locks alone.
    """
    if create and not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(PRIVATE)
