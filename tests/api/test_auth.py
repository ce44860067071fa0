"""API keys on every door: the route table, Bearer and Basic, revocation, scopes, the OpenAPI,
inbox tokens, CORS, and what a key costs a request."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select

from cairn import inbox_tokens
from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import ApiKey, Event
from starter.api.app import create_app
from starter.api.auth import api_routes, requirement_of
from starter.console.session import session_requirement_of
from tests.api_support import api_client, basic, bearer, new_key

OPEN_ROUTES = {
    # liveness and readiness probes: called by orchestrators without credentials
    ("GET", "/v1/health"), ("GET", "/v1/ready"),
    # the signed unsubscribe link (the token in it is the credential)
    ("GET", "/v1/unsubscribe"), ("POST", "/v1/unsubscribe"),
    # click tracking's redirects and open pixel (the signed token is the credential)
    ("GET", "/l/{token}"), ("GET", "/o/{token}"),
    # provider callbacks: each checks its provider's signature or credentials
    ("POST", "/v1/feedback/postmark"), ("POST", "/v1/feedback/twilio/status"),
    ("POST", "/v1/feedback/twilio/inbound"),
    # the API's own documentation
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    # the console's login page (the key typed into it is the credential) and its own CSS, JS
    # and icon; every other console page is guarded by the console's session (below)
    ("GET", "/console/login"), ("POST", "/console/login"), ("GET", "/console/static/{name}"),
}
"""Every route that takes no API key, each for a reason; a new route is not one of them."""

TOO_SMALL = {"read": ["write"], "write": ["read"], "admin": ["read", "write"]}


@pytest.fixture
def settings(store: Store, tmp_path: object) -> Settings:
    return Settings(database_url=store.url, secret_key="test-workspace-key")


@pytest_asyncio.fixture
async def app(store: Store, settings: Settings) -> FastAPI:
    return create_app(store, Ingest(store, None), settings=settings)


@pytest_asyncio.fixture
async def nobody(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app, scope=None) as client:
        yield client


def keyed_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, scope) of every route of the app that needs a key."""
    found = []
    for route in api_routes(app.routes):
        requirement = requirement_of(route)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if requirement is not None:
                found.append((method, route.path, requirement.scope))
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_route_needs_a_key_of_its_scope_except_the_open_ones(
    app: FastAPI, nobody: httpx.AsyncClient, store: Store,
) -> None:
    all_routes = {(method, route.path) for route in api_routes(app.routes)
                  for method in (route.methods or set()) - {"HEAD"}}
    keyed = keyed_routes(app)
    # The console's pages take a session made from a key instead (tests/console/test_session.py
    # checks each sends a stranger to its login page).
    console = {(method, route.path) for route in api_routes(app.routes)
               if session_requirement_of(route) is not None
               for method in (route.methods or set()) - {"HEAD"}}
    assert console and all(path.startswith("/console") for _, path in console)
    assert all_routes - {(m, p) for m, p, _ in keyed} - console == OPEN_ROUTES
    assert len(keyed) >= 30

    secrets = {scope: await new_key(store, scope) for scope in ("read", "write")}
    failures = []
    for method, path, scope in keyed:
        url = concrete(path)
        anonymous = await nobody.request(method, url)
        if anonymous.status_code != 401 or "Bearer" not in anonymous.headers.get(
                "www-authenticate", ""):
            failures.append(f"{method} {path} without a key: {anonymous.status_code}")
        for smaller in TOO_SMALL[scope]:
            refused = await nobody.request(method, url, headers=bearer(secrets[smaller]))
            if refused.status_code != 403 or scope not in refused.json()["detail"]:
                failures.append(f"{method} {path} with a {smaller} key: {refused.status_code}")
    assert failures == []


async def test_the_openapi_declares_both_schemes_and_names_401_403_and_the_scope(
    app: FastAPI, nobody: httpx.AsyncClient,
) -> None:
    spec = (await nobody.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert {name: scheme["scheme"] for name, scheme in schemes.items()} == {
        "bearer": "bearer", "basic": "basic"}
    for method, path, scope in keyed_routes(app):
        operation = spec["paths"][path][method.lower()]
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
        assert {"bearer": []} in operation["security"] and {"basic": []} in operation["security"]
        assert operation["x-cairn-scope"] == scope
        assert f"`{scope}`" in operation["description"]
    assert "security" not in spec["paths"]["/v1/health"]["get"]


async def test_bearer_and_basic_with_an_empty_password_both_authenticate(
    nobody: httpx.AsyncClient, store: Store,
) -> None:
    secret = await new_key(store, "write")
    call = {"userId": "c-1", "event": "signup"}
    as_bearer = await nobody.post("/v1/track", json=call, headers=bearer(secret))
    as_basic = await nobody.post("/v1/track", json=call, headers=basic(secret))
    wrong = [await nobody.post("/v1/track", json=call, headers=bearer(secret + "x")),
             await nobody.post("/v1/track", json=call, headers=basic("cairn_guess")),
             await nobody.post("/v1/track", json=call, headers={"authorization": "Basic !!"}),
             await nobody.post("/v1/track", json=call, headers={"authorization": secret})]
    assert (as_bearer.status_code, as_basic.status_code) == (202, 202)
    assert [r.status_code for r in wrong] == [401] * 4
    async with store.session() as s:
        assert len(list(await s.scalars(select(Event)))) == 2


async def test_a_caller_without_a_key_never_gets_its_body_read(
    nobody: httpx.AsyncClient,
) -> None:
    too_large = await nobody.post("/v1/batch", content=b"x" * 600_000)
    not_gzip = await nobody.post("/v1/track", content=b"nope",
                                 headers={"content-encoding": "gzip"})
    assert (too_large.status_code, not_gzip.status_code) == (401, 401)


async def test_a_revoked_key_is_refused_at_once_and_stays_listed(
    app: FastAPI, store: Store,
) -> None:
    async with api_client(app) as admin_client:
        created = await admin_client.post("/v1/keys", json={"name": "source", "scope": "write"})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        headers = bearer(secret)
        call = {"userId": "c-1", "event": "signup"}
        assert (await admin_client.post("/v1/track", json=call, headers=headers)).status_code \
            == 202
        revoked = await admin_client.post("/v1/keys/source/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        after = await admin_client.post("/v1/track", json=call, headers=headers)
        assert after.status_code == 401 and "revoked" in after.json()["detail"]
        listed = (await admin_client.get("/v1/keys")).json()
        duplicate = await admin_client.post("/v1/keys", json={"name": "source", "scope": "read"})
        missing = await admin_client.post("/v1/keys/nobody/revoke")
        own_name = next(key["name"] for key in listed if key["scope"] == "admin")
        itself = await admin_client.post(f"/v1/keys/{own_name}/revoke")
    [source] = [key for key in listed if key["name"] == "source"]
    assert source["scope"] == "write" and source["last_used_at"] is not None
    assert "secret" not in source and secret not in str(listed)
    assert (duplicate.status_code, missing.status_code) == (409, 404)
    assert itself.status_code == 409 and "key of this request" in itself.json()["detail"]


async def test_last_used_is_written_once_a_minute_not_per_request(
    nobody: httpx.AsyncClient, store: Store,
) -> None:
    secret = await new_key(store, "read", name="dashboard")
    for _ in range(5):
        assert (await nobody.get("/v1/journeys", headers=bearer(secret))).status_code == 200
    async with store.session() as s:
        [first] = (await s.scalars(select(ApiKey).where(ApiKey.name == "dashboard"))).all()
    assert first.last_used_at is not None
    for _ in range(5):
        await nobody.get("/v1/journeys", headers=bearer(secret))
    async with store.session() as s:
        again = (await s.scalars(select(ApiKey).where(ApiKey.name == "dashboard"))).one()
    assert again.last_used_at == first.last_used_at


async def test_a_cached_key_costs_a_request_well_under_a_millisecond(
    app: FastAPI, store: Store,
) -> None:
    from starter.api.auth import Keyring

    keyring: Keyring = app.state.keyring
    secret = await new_key(store, "write")
    await keyring.find(secret)
    started = time.perf_counter()
    for _ in range(2000):
        assert await keyring.find(secret) is not None
    per_lookup = (time.perf_counter() - started) / 2000
    assert per_lookup < 0.0001, f"{per_lookup * 1e6:.1f} µs per cached lookup"


async def test_multipart_imports_need_an_admin_key(nobody: httpx.AsyncClient,
                                                   store: Store) -> None:
    files = {"file": ("contacts.csv", b"user_id,email\nc-1,ana@example.com\n", "text/csv")}
    write = await new_key(store, "write")
    anonymous = await nobody.post("/v1/imports", files=files)
    with_write = await nobody.post("/v1/imports", files=files, headers=bearer(write))
    with_admin = await nobody.post("/v1/imports", files=files,
                                   headers=bearer(await new_key(store, "admin")))
    assert (anonymous.status_code, with_write.status_code, with_admin.status_code) == (
        401, 403, 200)


# --------------------------------------------------------------------------- inbox tokens


async def test_an_inbox_token_opens_its_contact_inbox_only_until_it_expires(
    nobody: httpx.AsyncClient, store: Store, settings: Settings,
) -> None:
    read = await new_key(store, "read")
    write = await new_key(store, "write")
    issued = await nobody.post("/v1/contacts/c-1/inbox-token", headers=bearer(read))
    assert issued.status_code == 200, issued.text
    token = issued.json()["token"]
    expires = datetime.fromisoformat(issued.json()["expires_at"])
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    as_token = bearer(token)

    assert (await nobody.get("/v1/contacts/c-1/inbox", headers=as_token)).json() == []
    marked = await nobody.post("/v1/contacts/c-1/inbox/1/read", headers=as_token)
    assert marked.status_code == 404  # past the door: no such message
    other = await nobody.get("/v1/contacts/c-2/inbox", headers=as_token)
    assert other.status_code == 403 and "another contact" in other.json()["detail"]
    elsewhere = await nobody.get("/v1/contacts/c-1", headers=as_token)
    assert elsewhere.status_code == 401  # a token is no key

    key = settings.signing_key()
    expired, _ = inbox_tokens.issue("c-1", datetime.now(UTC) - timedelta(hours=1),
                                    timedelta(minutes=15), key)
    foreign, _ = inbox_tokens.issue("c-1", datetime.now(UTC), timedelta(minutes=15), b"other")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad, why in ((expired, "expired"), (foreign, "signature"), (tampered, "signature")):
        refused = await nobody.get("/v1/contacts/c-1/inbox", headers=bearer(bad))
        assert refused.status_code == 401 and why in refused.json()["detail"], bad

    # Keys: read lists, write marks; a write key cannot read the inbox, nor mint tokens.
    assert (await nobody.get("/v1/contacts/c-1/inbox", headers=bearer(read))).status_code == 200
    assert (await nobody.get("/v1/contacts/c-1/inbox",
                             headers=bearer(write))).status_code == 403
    assert (await nobody.post("/v1/contacts/c-1/inbox-token",
                              headers=bearer(write))).status_code == 403


def test_an_unsubscribe_token_is_no_inbox_token() -> None:
    from cairn.unsubscribe import UnsubscribeScope, sign

    key = b"workspace"
    link_token = sign(UnsubscribeScope("c-1", "email"), key)
    with pytest.raises(inbox_tokens.InboxTokenError):
        inbox_tokens.verify(link_token, "c-1", datetime.now(UTC), key)
    with pytest.raises(inbox_tokens.InboxTokenError):
        inbox_tokens.verify(inbox_tokens.PREFIX + link_token, "c-1", datetime.now(UTC), key)


# --------------------------------------------------------------------------- browsers


async def test_cors_is_closed_unless_origins_are_listed(store: Store) -> None:
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    closed = create_app(store, Ingest(store, None), settings=Settings(database_url=store.url))
    async with api_client(closed, scope=None) as client:
        answer = await client.options("/v1/track", headers=preflight)
        read = await client.get("/v1/health", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-origin" not in read.headers

    opened = create_app(store, Ingest(store, None), settings=Settings(
        database_url=store.url, cors_origins="https://app.example, https://admin.example/"))
    assert opened.state.settings.cors_origins == ["https://app.example", "https://admin.example"]
    async with api_client(opened, scope=None) as client:
        allowed = await client.options("/v1/track", headers={
            **preflight, "origin": "https://app.example"})
        refused = await client.options("/v1/track", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in refused.headers


async def test_a_page_of_another_origin_cannot_change_anything_even_with_a_key(
    nobody: httpx.AsyncClient, store: Store,
) -> None:
    """A browser adds Origin to a cross-site form or fetch; a key it holds by itself (cached
    Basic credentials) must not let another site's page act."""
    secret = await new_key(store, "admin")
    headers = {**basic(secret), "origin": "https://evil.example",
               "content-type": "application/x-www-form-urlencoded"}
    forged = await nobody.post("/v1/track", content=b"userId=c-1&event=signup", headers=headers)
    patched = await nobody.patch("/v1/contacts/c-1", json={"email": "x@evil.example"},
                                 headers={**bearer(secret), "origin": "https://evil.example"})
    assert (forged.status_code, patched.status_code) == (403, 403)
    assert "CAIRN_CORS_ORIGINS" in forged.json()["detail"]
    own_docs = await nobody.post("/v1/track", json={"userId": "c-1", "event": "tried"},
                                 headers={**bearer(secret), "origin": "http://cairn.test"})
    assert own_docs.status_code == 202  # the API's own /docs page, same origin
    reading = await nobody.get("/v1/journeys",
                               headers={**bearer(secret), "origin": "https://evil.example"})
    assert reading.status_code == 200  # CORS keeps the answer from the page itself
