"""Files that hold secrets or personal data, made readable by their owner only (mode 0600).

Key files are created with that mode (never written world-readable first); databases made by
someone else (SQLite, the Temporal dev server) are tightened after the fact, with their -wal and
-shm companions.
"""

from __future__ import annotations

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
    """A SQLite file (created empty with mode 0600 if `create`) and its -wal/-shm files, 0600."""
    if create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(PRIVATE)
