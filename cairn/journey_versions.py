"""A journey's published versions and what changed from one to another.

`journey_versions` lists every version of a key, oldest first; `version_changes` compares two
stored definitions and says, in a marketer's words, what differs: the name, trigger, entry rules,
exit goals, settings and start, and per step whether it was added, removed or changed (and in
which of its fields). The console's journey page shows both; pure reads, no Temporal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cairn.store.db import Store
from cairn.store.schema import JourneyVersion

__all__ = ["VersionRow", "journey_versions", "version_changes"]

TOP_LEVEL = ("name", "description", "trigger", "entry", "exit", "settings", "start")
"""The parts of a definition outside its steps that a change is reported for, in file order."""


@dataclass(frozen=True)
class VersionRow:
    version: int
    name: str
    published_at: datetime
    source: str | None
    active: bool
    checksum: str
    definition: dict[str, Any]


async def journey_versions(store: Store, key: str) -> list[VersionRow]:
    """Every published version of journey `key`, oldest first (empty: never published)."""
    async with store.session() as s:
        rows = (await s.execute(select(JourneyVersion).where(JourneyVersion.key == key)
                                .order_by(JourneyVersion.version))).scalars().all()
    return [VersionRow(r.version, r.name, r.published_at, r.source, r.active, r.checksum,
                       r.definition) for r in rows]


def version_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed from definition `old` to `new`, one line per change (empty: the same)."""
    changes = [f"{part} changed" for part in TOP_LEVEL if old.get(part) != new.get(part)]
    before, after = old.get("steps") or {}, new.get("steps") or {}
    for name in after:
        if name not in before:
            changes.append(f"step {name} added")
        elif before[name] != after[name]:
            fields = sorted(field for field in set(before[name]) | set(after[name])
                            if before[name].get(field) != after[name].get(field))
            changes.append(f"step {name} changed: {', '.join(fields)}")
    changes += [f"step {name} removed" for name in before if name not in after]
    return changes
