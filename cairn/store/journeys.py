"""Published journey versions: one row per (key, version), a new version only when it changed.

The checksum of the definition decides: publishing the same definition again (a redeploy, `cairn
dev` restarting) keeps the version, so running entries and counts stay with it; a changed
definition becomes version + 1 and takes new entries, while running entries keep the definition
they entered with (it travels in their workflow input).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cairn.journey import Journey
from cairn.store.schema import JourneyVersion

PUBLISH_ATTEMPTS = 5
"""Tries when concurrent publishers of the same key keep taking the next version number."""


class PublishConflictError(RuntimeError):
    """Other publishers kept taking the next version of a journey; publish again."""


def definition_of(journey: Journey) -> dict[str, Any]:
    """The stored definition: the journey as its file reads, without the version it gets."""
    data: dict[str, Any] = journey.model_dump(mode="json", exclude={"version"})
    return data


def checksum(definition: dict[str, Any]) -> str:
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def latest_version(s: AsyncSession, key: str) -> JourneyVersion | None:
    return await s.scalar(
        select(JourneyVersion).where(JourneyVersion.key == key)
        .order_by(JourneyVersion.version.desc()).limit(1)
    )


async def publish(
    s: AsyncSession, journey: Journey, *, source: str | None, now: datetime
) -> tuple[JourneyVersion, bool]:
    """Publish a journey: (its version row, whether a new version was made).

    The new version becomes the only active one of its key, so new entries use it.
    """
    definition = definition_of(journey)
    digest = checksum(definition)
    for _ in range(PUBLISH_ATTEMPTS):
        latest = await latest_version(s, journey.key)
        if latest is not None and latest.checksum == digest:
            if not latest.active:
                latest.active = True
                await s.flush()
            return latest, False
        row = JourneyVersion(
            key=journey.key,
            version=(latest.version if latest else 0) + 1,
            name=journey.name,
            definition=definition,
            checksum=digest,
            source=source,
            published_at=now,
            active=True,
        )
        try:
            async with s.begin_nested():
                s.add(row)
                await s.flush()
        except IntegrityError:
            continue  # a concurrent publisher took this version number; look again
        await s.execute(
            update(JourneyVersion)
            .where(JourneyVersion.key == journey.key, JourneyVersion.id != row.id)
            .values(active=False)
            .execution_options(synchronize_session="fetch")
        )
        return row, True
    raise PublishConflictError(
        f"could not publish journey {journey.key!r}: other publishers kept taking its next "
        f"version number ({PUBLISH_ATTEMPTS} tries); publish again"
    )


def _newest_active() -> Any:
    return (
        select(JourneyVersion.key, func.max(JourneyVersion.version).label("version"))
        .where(JourneyVersion.active.is_(True))
        .group_by(JourneyVersion.key)
        .subquery()
    )


async def published(s: AsyncSession) -> list[JourneyVersion]:
    """The newest active version of every journey key, by key."""
    newest = _newest_active()
    rows = await s.scalars(
        select(JourneyVersion)
        .join(newest, (JourneyVersion.key == newest.c.key)
              & (JourneyVersion.version == newest.c.version))
        .order_by(JourneyVersion.key)
    )
    return list(rows)


async def published_ids(s: AsyncSession) -> tuple[int, ...]:
    """The row ids of what `published` returns, in the same order: a cheap way to tell whether
    anything was published (or deactivated) since the last look."""
    newest = _newest_active()
    rows = await s.scalars(
        select(JourneyVersion.id)
        .join(newest, (JourneyVersion.key == newest.c.key)
              & (JourneyVersion.version == newest.c.version))
        .order_by(JourneyVersion.key)
    )
    return tuple(rows)


async def get_version(
    s: AsyncSession, key: str, version: int | None = None
) -> JourneyVersion | None:
    """One version of a journey, or its newest when `version` is None."""
    if version is None:
        return await latest_version(s, key)
    return await s.scalar(
        select(JourneyVersion).where(JourneyVersion.key == key, JourneyVersion.version == version)
    )


async def published_journey(s: AsyncSession, key: str) -> Journey | None:
    """The newest published version of journey `key`, validated; None if it was never published."""
    row = await latest_version(s, key)
    return journey_of(row) if row is not None else None


def journey_of(row: JourneyVersion) -> Journey:
    """The validated journey of a stored version, with its version number set."""
    return Journey.model_validate({**row.definition, "version": row.version})
