"""The console's door: nothing without a session, a session only from a read or admin key,
cookie flags, CSRF on every state-changing form, revocation ending a session at once."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from cairn.store import keys as keys_repo
from cairn.store.db import Store
from starter.api.auth import api_routes
from starter.console.session import COOKIE, session_requirement_of
from tests.api_support import new_key
from tests.console.conftest import log_in
from tests.console.seed import seed


def console_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    return [(method, route.path, requirement.scope) for route in api_routes(app.routes)
            if (requirement := session_requirement_of(route))
            for method in sorted((route.methods or set()) - {"HEAD"})]


async def test_every_console_page_sends_a_stranger_to_the_login_page(
    app: FastAPI, browser_less: httpx.AsyncClient,
) -> None:
    routes = console_routes(app)
    assert {path for _, path, _ in routes} >= {
        "/console", "/console/journeys/{key}", "/console/contacts/{contact_id}",
        "/console/tasks", "/console/tasks/{task_id}/claim", "/console/tasks/{task_id}/complete",
        "/console/outbox", "/console/logout"}
    for method, path, _ in routes:
        url = path.replace("{key}", "k").replace("{contact_id}", "c").replace("{task_id}", "1")
        answer = await browser_less.request(method, url)
        assert answer.status_code == 303, (method, path)
        assert answer.headers["location"].startswith("/console/login?next="), (method, path)
        assert answer.content == b"", (method, path)  # nothing shown without a session


async def test_a_read_or_admin_key_logs_in_with_a_strict_httponly_cookie(
    browser_less: httpx.AsyncClient, sqlite_store: Store,
) -> None:
    secret = await new_key(sqlite_store, "read")
    login_page = await browser_less.get("/console/login")
    assert login_page.status_code == 200 and 'name="key"' in login_page.text
    answer = await browser_less.post("/console/login", data={
        "key": secret, "next": "/console/outbox"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/outbox"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # served over plain http here; https adds Secure
    assert secret not in cookie
    page = await browser_less.get("/console/outbox")
    assert page.status_code == 200 and "<h1>Outbox</h1>" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_over_https_the_cookie_is_secure(app: FastAPI, sqlite_store: Store) -> None:
    secret = await new_key(sqlite_store, "admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://cairn.test") as client:
        answer = await client.post("/console/login", data={"key": secret})
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_write_key_an_unknown_key_and_a_foreign_next_are_refused(
    browser_less: httpx.AsyncClient, sqlite_store: Store,
) -> None:
    write = await new_key(sqlite_store, "write")
    refused = await browser_less.post("/console/login", data={"key": write})
    assert refused.status_code == 401 and "needs a read or admin key" in refused.text
    assert "set-cookie" not in refused.headers
    unknown = await browser_less.post("/console/login", data={"key": "cairn_nope"})
    assert unknown.status_code == 401 and "unknown or revoked" in unknown.text
    admin = await new_key(sqlite_store, "admin")
    elsewhere = await browser_less.post("/console/login", data={
        "key": admin, "next": "https://evil.example/console"})
    assert elsewhere.headers["location"] == "/console"
    forged = await browser_less.post("/console/login", data={"key": admin},
                                     headers={"origin": "https://evil.example"})
    assert forged.status_code == 403


async def test_a_forged_or_tampered_cookie_is_no_session(
    browser_less: httpx.AsyncClient, sqlite_store: Store,
) -> None:
    await log_in(browser_less, sqlite_store, "read")
    value = browser_less.cookies[COOKIE]
    payload, _, signature = value.partition(".")
    browser_less.cookies.clear()
    browser_less.cookies.set(COOKIE, payload[:-2] + "xx." + signature, domain="cairn.test",
                             path="/console")
    assert (await browser_less.get("/console")).status_code == 303


async def test_forms_need_the_session_csrf_token_and_the_console_origin(
    browser_less: httpx.AsyncClient, sqlite_store: Store,
) -> None:
    await seed(sqlite_store)
    csrf = await log_in(browser_less, sqlite_store, "admin")
    without = await browser_less.post("/console/tasks/1/claim", data={"assignee": "maria"})
    assert without.status_code == 403 and "CSRF" in without.text
    wrong = await browser_less.post("/console/tasks/1/claim",
                                    data={"assignee": "maria", "csrf": "x" + csrf})
    assert wrong.status_code == 403
    foreign = await browser_less.post("/console/tasks/1/claim",
                                      data={"assignee": "maria", "csrf": csrf},
                                      headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403 and "another site" in foreign.text
    claimed = await browser_less.post("/console/tasks/1/claim",
                                      data={"assignee": "maria", "csrf": csrf},
                                      headers={"origin": "http://cairn.test"})
    assert claimed.status_code == 303
    page = await browser_less.get("/console/tasks")
    assert 'data-task="1" data-status="claimed"' in page.text and "maria" in page.text


async def test_a_read_session_sees_tasks_but_cannot_work_them(
    browser_less: httpx.AsyncClient, sqlite_store: Store,
) -> None:
    await seed(sqlite_store)
    csrf = await log_in(browser_less, sqlite_store, "read")
    page = await browser_less.get("/console/tasks")
    assert "Call ana" in page.text and 'name="claim"' not in page.text
    refused = await browser_less.post("/console/tasks/1/complete", data={"csrf": csrf})
    assert refused.status_code == 403 and "this needs a &#39;admin&#39;" in refused.text


async def test_revoking_the_key_ends_its_sessions_and_logout_clears_the_cookie(
    browser_less: httpx.AsyncClient, sqlite_store: Store,
) -> None:
    secret = await new_key(sqlite_store, "read", name="operator")
    await browser_less.post("/console/login", data={"key": secret})
    assert (await browser_less.get("/console")).status_code == 200
    async with sqlite_store.session() as s, s.begin():
        await keys_repo.revoke_key(s, "operator", datetime.now(UTC))
    assert (await browser_less.get("/console")).status_code == 303
    assert (await browser_less.get("/console/login")).status_code == 200  # no redirect loop

    csrf = await log_in(browser_less, sqlite_store, "read")
    out = await browser_less.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert (await browser_less.get("/console")).status_code == 303
