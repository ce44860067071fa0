"""Several stores on one SQLite file in one process, read by other processes (`cairn dev`, CLI).

`cairn dev` opens the same SQLite file more than once (the store, the payload codec's data keys);
the CLI opens it in processes of its own while `cairn dev` runs. Opening a store must never drop
the SQLite locks that the process's other connections hold: if it did, a CLI process closing
its connection would take the file as unused, checkpoint it and delete the -wal file under
`cairn dev`, and everything `cairn dev` committed afterwards would be invisible to every other
process (an operator's `cairn outbox` empty, `cairn report` stale).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cairn.store import contacts as contacts_repo
from cairn.store.db import Store

COUNT = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("select count(*) from contacts").fetchone()[0])
db.close()
"""


def contacts_seen_by_another_process(path: Path) -> int:
    done = subprocess.run([sys.executable, "-c", COUNT, str(path)], capture_output=True,
                          text=True, check=True, timeout=60)
    return int(done.stdout)


async def add_contact(store: Store, contact_id: str) -> None:
    async with store.session() as session, session.begin():
        await contacts_repo.identify(session, contact_id, {"first_name": "Ana"},
                                     datetime.now(UTC))


async def test_a_second_store_on_the_file_keeps_the_first_ones_commits_visible_to_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cairn.db"
    first = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        await add_contact(first, "c-1")
        second = await Store.open(f"sqlite+aiosqlite:///{path}")  # as the codec's key store does
        try:
            assert contacts_seen_by_another_process(path) == 1
            assert path.with_name("cairn.db-wal").exists(), \
                "another process's close deleted the -wal file the first store still writes"
            await add_contact(first, "c-2")
            assert contacts_seen_by_another_process(path) == 2
            await add_contact(second, "c-3")
            assert contacts_seen_by_another_process(path) == 3
        finally:
            await second.close()
    finally:
        await first.close()
    assert path.stat().st_mode & 0o777 == 0o600
