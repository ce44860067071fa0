"""The console's pages: journeys, a journey, a contact, tasks, the outbox; login and logout.

Each page calls the service functions the API calls (`cairn.reports.journey_report`,
`cairn.contact_timeline.contact_timeline`, `starter.api.journeys.published_journeys`,
`starter.api.tasks`, `starter.api.outbox`) and renders a Jinja2 template; the journey's picture
is `cairn.journey_picture`, the journeys list's figures and trends `cairn.journey_trends` (grouped
counts for every journey at once: no report per journey). Every page but the login page and the
assets needs a console session (`starter.console.session.ConsoleSession`); none is in the OpenAPI
(they are pages, not API).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cairn.contact_timeline import UnknownContact, contact_timeline
from cairn.events.ingest import Ingest
from cairn.journey_picture import journey_svg, report_figures
from cairn.journey_trends import DayFigures, JourneyTrend, WindowFigures, journey_trends
from cairn.journey_versions import journey_versions, version_changes
from cairn.reports import UnknownJourney, journey_report
from cairn.settings import Settings
from cairn.store import contacts as contacts_repo
from cairn.store import entries as entries_repo
from cairn.store import journeys as journeys_repo
from cairn.store import tasks as tasks_repo
from cairn.store.db import Store
from starter.api.journeys import published_journeys
from starter.api.outbox import latest_deliveries
from starter.api.tasks import claim_task, complete_task, task_list
from starter.console import views
from starter.console.session import (
    CONSOLE_SCOPES,
    ConsoleRefusal,
    ConsoleSession,
    LoginRequired,
    Viewer,
    clear_cookie,
    safe_next,
    same_origin,
    session_cookie,
    set_cookie,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"
ASSETS = {path.name for path in STATIC.iterdir() if path.is_file()} if STATIC.is_dir() else set()
"""The files `/console/static/{name}` serves: the package's own, nothing else."""

SECURITY_HEADERS = {
    # Everything the pages use is served by the console itself: no CDN, no inline script.
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
REPORT_DRAWN = {"funnel", "versions", "messages", "notes", "steps", "experiments"}
"""Report lists the journey page draws itself; any other list a newer report carries gets a
generic table."""

Reading = Annotated[Viewer, Depends(ConsoleSession("read"))]
"""A page any console session may see (read or admin key)."""
Acting = Annotated[Viewer, Depends(ConsoleSession("admin"))]
"""An action that needs an admin key's session, as the API's task routes do."""

templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))
templates.globals.update(percent=views.percent, when=views.when,
                         signed_percent=views.signed_percent, significance=views.significance)
templates.filters["path"] = lambda value: quote(str(value), safe="")


def render(name: str, code: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)


def install_console(app: FastAPI, store: Store, ingest: Ingest, settings: Settings) -> None:
    """Serve the console at `/console` on `app`."""
    app.include_router(console_router(store, ingest, settings))

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(exc.next_path, status_code=303, headers=SECURITY_HEADERS)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleRefusal)
        return render("refused.html", exc.status, message=exc.message,
                      viewer=getattr(request.state, "viewer", None))

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(ConsoleRefusal, refused)


def console_router(store: Store, ingest: Ingest, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)
    ui, namespace = settings.temporal_ui, settings.temporal_namespace

    def page(name: str, request: Request, viewer: Viewer, code: int = 200,
             **context: Any) -> HTMLResponse:
        return render(name, code, viewer=viewer, path=request.url.path, ui=ui, **context)

    # ------------------------------------------------------------------ open: login, assets

    @router.get("/login")
    async def login_page(request: Request, next: str | None = None) -> Response:
        # Always the form, even with a cookie: its key may be revoked since (no redirect loop).
        return render("login.html", next=safe_next(next), error=None, viewer=None)

    @router.post("/login")
    async def login(request: Request, key: Annotated[str, Form()] = "",
                    next: Annotated[str, Form()] = "/console") -> Response:
        if not same_origin(request):
            return render("login.html", 403, next=safe_next(next), viewer=None,
                          error="this form was sent from a page of another site")
        caller = await request.app.state.keyring.find(key.strip()) if key.strip() else None
        error = None
        if caller is None or caller.revoked:
            error = "unknown or revoked API key"
        elif caller.scope not in CONSOLE_SCOPES:
            error = (f"the key {caller.name!r} has scope {caller.scope!r}: the console needs a "
                     "read or admin key")
        if error is not None or caller is None:
            return render("login.html", 401, next=safe_next(next), error=error, viewer=None)
        value, _viewer = session_cookie(request, caller)
        response = RedirectResponse(safe_next(next), status_code=303, headers=SECURITY_HEADERS)
        set_cookie(response, request, value)
        return response

    @router.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return Response("no such asset", status_code=404)
        return FileResponse(STATIC / name, headers={"cache-control": "max-age=3600"})

    # ------------------------------------------------------------------ pages

    @router.post("/logout")
    async def logout(request: Request, viewer: Reading) -> Response:
        response = RedirectResponse("/console/login", status_code=303, headers=SECURITY_HEADERS)
        clear_cookie(response, request)
        return response

    @router.get("")
    async def journeys(request: Request, viewer: Reading) -> HTMLResponse:
        now = datetime.now(UTC)
        published = await published_journeys(store)
        trends = await journey_trends(store, days=30, now=now, windows={
            name: start for name in ("7d", "30d")
            if (start := views.window_start(name, now)) is not None})
        nothing = JourneyTrend(key="", windows={}, days=[
            DayFigures(day=now.date() - timedelta(days=29 - i)) for i in range(30)])
        rows = []
        for j in published:
            trend = trends.get(j.key, nothing)
            rows.append({"journey": j, "week": trend.windows.get("7d", WindowFigures()),
                         "month": trend.windows.get("30d", WindowFigures()),
                         "trend": views.sparkline(trend.days)})
        return page("journeys.html", request, viewer, rows=rows)

    @router.get("/journeys/{key}")
    async def journey(
        request: Request, viewer: Reading, key: str,
        version: Annotated[int | None, Query(ge=1)] = None,
        window: str = "30d",
        from_version: Annotated[int | None, Query(ge=1)] = None,
        to_version: Annotated[int | None, Query(ge=1)] = None,
    ) -> HTMLResponse:
        now = datetime.now(UTC)
        window = window if window in views.WINDOWS else "30d"
        async with store.session() as s:
            row = await journeys_repo.get_version(s, key, version)
        if row is None:
            return page("missing.html", request, viewer, what=f"journey {key!r}"
                        + (f" version {version}" if version else ""), code=404)
        definition = journeys_repo.journey_of(row)
        try:
            report = await journey_report(store, key, version=version,
                                          since=views.window_start(window, now), now=now)
        except UnknownJourney:
            return page("missing.html", request, viewer, what=f"journey {key!r}", code=404)
        versions = await journey_versions(store, key)
        changes = []
        for older, newer in pairwise(versions):
            changes.append((older.version, newer.version,
                            version_changes(older.definition, newer.definition)))
        compared = None
        by_number = {v.version: v for v in versions}
        if from_version in by_number and to_version in by_number:
            compared = (from_version, to_version, version_changes(
                by_number[from_version].definition, by_number[to_version].definition))
        messages = views.table(report.messages)
        figures = report_figures(definition, report)
        return page(
            "journey.html", request, viewer, key=key, row=row, journey=definition,
            report=report, version=version, window=window, windows=list(views.WINDOWS),
            svg=journey_svg(definition, figures), graph_notes=figures.notes,
            messages=messages, extra=views.sections(report, REPORT_DRAWN),
            versions=versions, changes=changes, compared=compared,
            runs_link=views.runs_link(ui, namespace, key))

    @router.get("/contacts")
    async def contact_search(request: Request, viewer: Reading,
                             id: str | None = None) -> Response:
        if id and id.strip():
            return RedirectResponse(f"/console/contacts/{quote(id.strip(), safe='')}",
                                    status_code=303)
        return page("contacts.html", request, viewer)

    @router.get("/contacts/{contact_id}")
    async def contact(request: Request, viewer: Reading, contact_id: str) -> HTMLResponse:
        async with store.session() as s:
            snapshot = await contacts_repo.snapshot(s, contact_id)
            entries = await entries_repo.entries_for(s, contact_id=contact_id)
        if snapshot is None:
            return page("missing.html", request, viewer, what=f"contact {contact_id!r}",
                        code=404)
        try:
            timeline = await contact_timeline(store, contact_id)
        except UnknownContact:
            return page("missing.html", request, viewer, what=f"contact {contact_id!r}",
                        code=404)
        runs = [(e, views.run_link(ui, namespace, e.workflow_id)) for e in entries]
        return page("contact.html", request, viewer, contact=snapshot, timeline=timeline,
                    runs=runs, runs_link=views.contact_runs_link(ui, namespace, contact_id),
                    run_link=lambda wid: views.run_link(ui, namespace, wid))

    @router.get("/tasks")
    async def tasks(request: Request, viewer: Reading, status: str | None = None,
                    note: str | None = None) -> HTMLResponse:
        status = status if status in ("open", "claimed", "done") else None
        found = await task_list(store, None, status)
        return page("tasks.html", request, viewer, tasks=found, status=status, note=note)

    @router.post("/tasks/{task_id}/claim")
    async def claim(request: Request, viewer: Acting, task_id: int,
                    assignee: Annotated[str, Form()] = "") -> Response:
        try:
            view = await claim_task(store, task_id, assignee.strip() or viewer.name)
        except tasks_repo.TaskStateError as error:
            raise ConsoleRefusal(409, str(error)) from error
        if view is None:
            raise ConsoleRefusal(404, f"no task {task_id}")
        return RedirectResponse(f"/console/tasks?note=claimed+{task_id}", status_code=303)

    @router.post("/tasks/{task_id}/complete")
    async def complete(request: Request, viewer: Acting, task_id: int,
                       outcome: Annotated[str, Form()] = "") -> Response:
        view = await complete_task(store, ingest, task_id, outcome=outcome.strip() or None,
                                   by=viewer.name)
        if view is None:
            raise ConsoleRefusal(404, f"no task {task_id}")
        return RedirectResponse(f"/console/tasks?note=completed+{task_id}", status_code=303)

    @router.get("/outbox")
    async def outbox(request: Request, viewer: Reading, status: str | None = None,
                     ) -> HTMLResponse:
        status = (status or "").strip()[:32] or None
        rows = await latest_deliveries(store, 100, status)
        return page("outbox.html", request, viewer, deliveries=rows, status=status)

    return router
