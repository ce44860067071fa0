"""The journey catalog: a folder of journey files, validated and published into the store.

Publishing is idempotent: a journey whose definition did not change keeps its version, a changed
one gets the next version number, and running entries keep the definition they entered with (it
travels in their workflow input). Nothing is published when any file of the folder is invalid, so
a catalog is never half-updated.

This module does not parse the journey language (that is `cairn.journey_files`) and does not route
events to the published journeys (that is `cairn.events.router`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cairn.journey import Journey
from cairn.journey_files import journey_files, validate
from cairn.log import get_logger
from cairn.problems import Problem
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.store.schema import JourneyVersion

log = get_logger(__name__)


class CatalogError(ValueError):
    """The catalog folder is missing or holds invalid journeys; `problems` lists each one."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__("\n".join([message, *(f"  {problem}" for problem in self.problems)]))


def journey_paths(folder: Path) -> list[Path]:
    """The journey files of a catalog: YAML and JSON files directly in the folder, by name.

    Sub-folders (`templates/`, `segments/`, `scoring/`) hold other definitions, not journeys.
    """
    if not folder.is_dir():
        raise CatalogError(
            f"no journey catalog at {folder}: give a folder of journey files "
            "(default: journeys/, or set CAIRN_JOURNEYS_DIR)"
        )
    return journey_files(folder)


def load_catalog(folder: Path) -> list[Journey]:
    """Every journey of a folder, validated (language, graph, templates); all or nothing."""
    return [journey for _, journey in _load(folder)]


async def publish_catalog(
    store: Store, folder: Path, *, now: datetime | None = None
) -> list[tuple[JourneyVersion, bool]]:
    """Publish the journeys of a folder in one transaction; `True` marks a new version."""
    loaded = _load(folder)
    moment = now or datetime.now(UTC)
    published: list[tuple[JourneyVersion, bool]] = []
    async with store.session() as session, session.begin():
        for path, journey in loaded:
            row, new = await journeys_repo.publish(session, journey, source=_source(path),
                                                   now=moment)
            published.append((row, new))
    for row, new in published:
        log.info("catalog.published" if new else "catalog.unchanged", journey=row.key,
                 version=row.version, source=row.source)
    return published


def _load(folder: Path) -> list[tuple[Path, Journey]]:
    """Load the folder's journeys with `cairn.journey_files` (language, graph, templates, keys).

    An empty folder is an empty catalog, not an error: a new project publishes nothing yet.
    """
    if not journey_paths(folder):
        return []
    checked = validate([folder])
    if checked.problems:
        raise CatalogError(
            f"{len(checked.problems)} problem(s) in {folder}; nothing was published:",
            checked.problems,
        )
    return checked.journeys


def _source(path: Path) -> str:
    """The file a version came from, relative to the working directory when it is inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)
