"""CSV imports: contacts (and, for a journey, their entries) from a spreadsheet export.

The first row names the columns. One column identifies the contact: `userId` (or `user_id`);
without one, `email` is the id. Every other column is a trait, merged like an `identify` call
(`email`, `phone`, `timezone` go to the contact's channel columns, the rest to attributes). An empty
cell leaves the trait alone. Cells that read as whole numbers (`42`, not `042`), decimals
(`19.90`) or `true`/`false` become numbers and booleans, so conditions such as `{attribute: orders,
gt: 2}` work on imported contacts.

Good rows are applied, bad rows are reported with their line in the file and the reason (no id,
an email that is not one, an unknown time zone, too many cells), and one bad row never stops the
others. With a journey key, each good row also stores a `journey_imported` event for the contact
(`{journey, import_id, line}`), which the `imported` trigger of that journey listens to.

Importing is idempotent: the import id is a hash of the file's bytes, and every call's message id
derives from it and the row's line (`import/<id>/<line>` for the traits, `.../journey/<key>` for
the entry), so importing the same file again stores, starts and changes nothing.

This module reads CSV and hands Segment calls to `cairn.events.ingest`; HTTP is
`starter.api.imports`, the command line `starter.cli.imports`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from cairn.events.calls import (
    BatchCall,
    IdentifyCall,
    TrackCall,
    check_profile_traits,
    unstorable,
)
from cairn.events.ingest import Ingest, IngestResult
from cairn.journey import TRIGGER_EVENTS
from cairn.local_time import is_timezone
from cairn.log import get_logger
from cairn.store import journeys as journeys_repo
from cairn.store.db import Store
from cairn.sweeps import IMPORT_ENTRY_WORKFLOW, ImportInput, SweepConfig, import_entry_id
from cairn.traits import ContactTraitError

log = get_logger(__name__)

IMPORTED_EVENT = TRIGGER_EVENTS["imported"]
"""`journey_imported`: the event each good row stores when the import names a journey."""

ID_COLUMNS = ("userId", "user_id")
"""Column names that identify the contact; without one of them, `email` is the id."""

CHUNK_ROWS = 200
"""Rows stored per transaction: large files commit steadily and report progress as they go."""

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INTEGER = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)\.[0-9]+$")


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (not CSV text, no header, no id column)."""


class ImportJourneyError(LookupError):
    """The journey named for the import is not published, or does not start from imports."""

    def __init__(self, message: str, *, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


class RowProblem(BaseModel):
    """A bad row: its line in the file (the header is line 1) and what to fix."""

    model_config = ConfigDict(json_schema_extra={
        "examples": [{"line": 3, "message": "email: 'ana@' is not an email address"}]})

    line: int
    message: str


class ImportSummary(BaseModel):
    """What an import did: rows applied now, rows already imported before, bad rows and why."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "import_id": "9f2c41d07a6be3a1", "journey": "welcome-imported", "rows": 4,
        "applied": 2, "duplicates": 1, "skipped": 1,
        "errors": [{"line": 4, "message": "no contact id: the userId cell is empty"}],
        "routed": True,
    }]})

    import_id: str = Field(description="hash of the file's content; the same file, the same id")
    journey: str | None = None
    rows: int = Field(description="data rows read (header excluded)")
    applied: int = Field(description="good rows stored by this import")
    duplicates: int = Field(description="good rows an earlier import of this file already stored")
    skipped: int = Field(description="bad rows, not applied (see errors)")
    errors: list[RowProblem] = Field(default_factory=list)
    routed: bool = Field(default=False,
                         description="whether the journey entries were routed (not deferred)")


@dataclass
class ContactRow:
    """A good row: the contact it is about and the traits to merge."""

    line: int
    contact_id: str
    traits: dict[str, Any] = field(default_factory=dict)


def import_id_of(content: bytes) -> str:
    """The import's id: the first 16 hex digits of the SHA-256 of the file's bytes."""
    return hashlib.sha256(content).hexdigest()[:16]


def _text(content: bytes | str) -> tuple[bytes, str]:
    raw = content.encode("utf-8") if isinstance(content, str) else content
    try:
        text = raw.decode("utf-8-sig")  # spreadsheet exports often start with a BOM
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"the file is not UTF-8 text (byte {error.start}); export the sheet as CSV UTF-8"
        ) from None
    return raw, text


def _cell(value: str) -> Any:
    """A cell as a trait value: numbers and booleans when the text clearly is one."""
    if _INTEGER.match(value):
        return int(value)
    if _DECIMAL.match(value):
        return float(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def read_rows(text: str) -> tuple[list[ContactRow], list[RowProblem], int]:
    """Parse CSV text into good rows and problems; returns (good, bad, data rows read).

    Raises `ImportFileError` when there is no header or no column to identify contacts by.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: the first row must name the columns "
                              "(e.g. userId,email,first_name)") from None
    except csv.Error as error:
        raise ImportFileError(f"line 1: not readable as CSV: {error}") from None
    columns = [name.strip() for name in header]
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    if id_column is None and "email" not in columns:
        raise ImportFileError(
            f"line 1: no column identifies the contact; add userId (or user_id, or email) to the "
            f"header (found: {', '.join(c for c in columns if c) or 'nothing'})"
        )
    id_column = id_column or "email"
    blank = [str(i + 1) for i, c in enumerate(columns) if not c]
    if blank:
        raise ImportFileError(f"line 1: column(s) {', '.join(blank)} have no name; name them "
                              "or remove them")
    doubled = sorted({c for c in columns if columns.count(c) > 1})
    if doubled:
        raise ImportFileError(f"line 1: column(s) {', '.join(doubled)} appear twice")
    good: list[ContactRow] = []
    bad: list[RowProblem] = []
    read = 0
    for line, cells in _numbered(reader):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are not rows
        read += 1
        row, problem = _row(line, columns, id_column, cells)
        if problem is not None:
            bad.append(RowProblem(line=line, message=problem))
        elif row is not None:
            good.append(row)
    return good, bad, read


def _numbered(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Rows with the line each starts on (a quoted cell may span lines)."""
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ImportFileError(f"line {start}: not readable as CSV: {error}") from None
        yield start, cells
        start = reader.line_num + 1


def _row(line: int, columns: list[str], id_column: str,
         cells: list[str]) -> tuple[ContactRow | None, str | None]:
    if len(cells) > len(columns):
        return None, (f"{len(cells)} cells but the header names {len(columns)} columns; "
                      "quote cells that contain commas")
    values = {name: cells[i].strip() for i, name in enumerate(columns) if i < len(cells)}
    contact_id = values.get(id_column, "")
    if not contact_id:
        return None, f"no contact id: the {id_column} cell is empty"
    if len(contact_id) > 255:
        return None, f"{id_column}: longer than 255 characters"
    traits: dict[str, Any] = {}
    for name, value in values.items():
        if name in ID_COLUMNS or value == "":
            continue
        if name == "email":
            if not _EMAIL.match(value):
                return None, f"email: {value!r} is not an email address"
            traits[name] = value
        elif name == "timezone":
            if not is_timezone(value):
                return None, (f"timezone: {value!r} is not a time zone; use an IANA name "
                              "such as Europe/Bucharest")
            traits[name] = value
        elif name == "phone":
            traits[name] = value  # kept as written: "+40..." must stay text
        else:
            traits[name] = _cell(value)
    # What an identify call would refuse (a huge number, a date at year 1, an over-long phone) is
    # this row's problem, not the failure of the whole file.
    problem = next((found for name, value in traits.items()
                    if (found := unstorable(value, name)) is not None), None)
    if problem is None:
        try:
            check_profile_traits(traits)
        except ContactTraitError as error:
            problem = str(error)
    if problem is not None:
        return None, problem
    return ContactRow(line=line, contact_id=contact_id, traits=traits), None


async def check_journey(store: Store, key: str) -> None:
    """Raise `ImportJourneyError` unless `key` is published with an `imported` trigger."""
    async with store.session() as session:
        journey = await journeys_repo.published_journey(session, key)
    if journey is None:
        raise ImportJourneyError(f"no published journey {key!r}; publish it first "
                                 "(cairn publish)", unknown=True)
    if journey.trigger.kind != "imported":
        raise ImportJourneyError(
            f"journey {key!r} starts on {journey.trigger.describe()}, not from imports; give it "
            "`trigger: {imported: true}` to start it for imported contacts", unknown=False)


def _entry_event(message_id: str) -> bool:
    return "/journey/" in message_id


async def route_import(ingest: Ingest, results: list[IngestResult], *, import_id: str,
                       journey: str | None, entries: SweepConfig | None) -> bool:
    """Route what an import stored; True when all of it was routed or handed on.

    With `entries` (how the workers' entry batches run) and a router, the journey's entries
    are not routed here one by one: an `ImportEntryWorkflow` enters them on the workers, in
    batches side by side, each entered together (`activities.broadcast`). The traits' events
    are routed here (segments, scoring, attribute changes). Without Temporal the entry events
    wait for the relay, like any event stored while Temporal was away.
    """
    together = journey is not None and entries is not None and ingest.router is not None
    fresh = [i for r in results if not r.duplicate
             and not (together and _entry_event(r.message_id))
             for i in (r.event_id, *r.derived)]
    done = await ingest.route_events(fresh) if fresh else {}
    routed = all(i in done for i in fresh)
    if together and any(_entry_event(r.message_id) for r in results):
        assert journey is not None and entries is not None and ingest.router is not None
        routed = await start_import_entry(ingest.router.client, import_id, journey,
                                          entries) and routed
    return routed


async def start_import_entry(client: Client, import_id: str, journey: str,
                             entries: SweepConfig) -> bool:
    """Start (or find running) the workflow entering an import into a journey."""
    try:
        await client.start_workflow(
            IMPORT_ENTRY_WORKFLOW, ImportInput(config=entries, journey=journey,
                                               import_id=import_id),
            id=import_entry_id(import_id, journey), task_queue=entries.journey_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"import {import_id} into {journey}")
    except RPCError as error:
        log.warning("import.entries_not_started", import_id=import_id, journey=journey,
                    error=str(error))
        return False
    return True


async def import_csv(
    ingest: Ingest,
    content: bytes | str,
    *,
    journey: str | None = None,
    route: bool = True,
    progress: Callable[[int, int], None] | None = None,
    entries: SweepConfig | None = None,
) -> tuple[ImportSummary, list[IngestResult]]:
    """Apply a CSV file's good rows, report its bad ones; returns the summary and the results.

    With `journey`, each good row also stores a `journey_imported` event. `route=False` stores
    only (the caller routes later with `route_import`, as the API does after answering).
    `entries` hands the journey's entries to the workers (`route_import`). `progress(done,
    total)` is called after each chunk of rows. Raises `ImportFileError` for a file that cannot
    be read at all and `ImportJourneyError` for a journey that cannot take imported contacts.
    """
    raw, text = _text(content)
    import_id = import_id_of(raw)
    bound = log.bind(import_id=import_id, journey=journey)
    if journey is not None:
        await check_journey(ingest.store, journey)
    good, bad, read = read_rows(text)
    results: list[IngestResult] = []
    routed_all = True
    applied = duplicates = 0
    total = len(good)
    if progress is not None:
        progress(0, total)
    for start in range(0, total, CHUNK_ROWS):
        chunk = good[start:start + CHUNK_ROWS]
        calls: list[IdentifyCall | TrackCall] = []
        for row in chunk:
            base = f"import/{import_id}/{row.line}"
            calls.append(IdentifyCall(user_id=row.contact_id, traits=row.traits,
                                      message_id=base))
            if journey is not None:
                calls.append(TrackCall(
                    user_id=row.contact_id, event=IMPORTED_EVENT, message_id=f"{base}/journey/"
                    f"{journey}", properties={"journey": journey, "import_id": import_id,
                                              "line": row.line}))
        chunk_results = await ingest.batch(BatchCall(batch=calls), route=False)
        if route:
            chunk_routed = await route_import(ingest, [r for r in chunk_results
                                                       if not _entry_event(r.message_id)],
                                              import_id=import_id, journey=journey,
                                              entries=entries)
            routed_all = routed_all and chunk_routed
        results += chunk_results
        for row in chunk:
            base = f"import/{import_id}/{row.line}"
            mine = [r for r in chunk_results
                    if r.message_id == base or r.message_id.startswith(f"{base}/")]
            if all(r.duplicate for r in mine):
                duplicates += 1
            else:
                applied += 1
        if progress is not None:
            progress(min(start + CHUNK_ROWS, total), total)
    if route:
        # The entries last: the traits they read are routed (segments decided) by now.
        entered = await route_import(ingest, [r for r in results if _entry_event(r.message_id)],
                                     import_id=import_id, journey=journey, entries=entries)
        routed_all = routed_all and entered
    routed = routed_all if route else False
    summary = ImportSummary(import_id=import_id, journey=journey, rows=read, applied=applied,
                            duplicates=duplicates, skipped=len(bad), errors=bad, routed=routed)
    bound.info("import.done", rows=read, applied=applied, duplicates=duplicates,
               skipped=len(bad), routed=routed)
    return summary, results


__all__ = [
    "IMPORTED_EVENT",
    "ContactRow",
    "ImportFileError",
    "ImportJourneyError",
    "ImportSummary",
    "RowProblem",
    "check_journey",
    "import_csv",
    "import_id_of",
    "read_rows",
    "route_import",
    "start_import_entry",
]
