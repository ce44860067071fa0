"""Step transitions: the visits of steps by entries, written as the runs report them.

A run buffers its step visits (`cairn.journey_run.StepTransition`) and the next activity it
calls writes them here in its own transaction (`record_transitions`). A visit is written when
reached and again when left, possibly by a retried activity: an upsert on (entry, step, visit)
keeps the latest record. Reading them for the journey report is `cairn.reports`' job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.contracts import StepContext
from cairn.store.schema import StepTransitionRecord

__all__ = ["record_transitions"]


async def record_transitions(s: AsyncSession, context: StepContext) -> int:
    """Write the visits `context` carries (in `s`'s transaction); returns how many."""
    if not context.transitions:
        return 0
    # The latest record of a visit wins, also within one batch (reached, then left).
    latest = {(t.step, t.visit): t for t in context.transitions}
    rows = [{
        "journey_key": context.journey_key, "version": context.journey_version,
        "workflow_id": context.workflow_id, "entry_id": context.entry_id,
        "contact_id": context.contact_id, "entered_at": context.entered_at, "seq": t.seq,
        "step": t.step, "visit": t.visit, "reached_at": t.reached_at, "left_by": t.left_by,
        "left_at": t.left_at, "next_step": t.next_step,
    } for t in latest.values()]
    await s.execute(_upsert(s.get_bind().dialect.name), rows)
    return len(rows)


def _upsert(dialect_name: str) -> Any:
    """One statement per dialect, executed with many rows (compiled once, then cached)."""
    found = _UPSERTS.get(dialect_name)
    if found is None:
        dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
        table = StepTransitionRecord
        statement = dialect.insert(table)
        # A visit once left stays left: a retried activity may bring its reached record again.
        found = _UPSERTS[dialect_name] = statement.on_conflict_do_update(
            index_elements=["entry_id", "step", "visit"],
            set_={"left_by": func.coalesce(statement.excluded.left_by, table.left_by),
                  "left_at": func.coalesce(statement.excluded.left_at, table.left_at),
                  "next_step": func.coalesce(statement.excluded.next_step, table.next_step)},
        )
    return found


_UPSERTS: dict[str, Any] = {}
