"""Who may call what: API keys with scopes on every route, checked by one dependency.

`requires("read")` on a route (or router) makes it answer 401 to a request without a valid key
and 403 to a key whose scope is too small; `admin` keys may call everything (`cairn.store.keys`
says what each scope grants). A key is sent as `Authorization: Bearer KEY`, or as HTTP Basic with
the key as user name and an empty password, which is how Segment's and RudderStack's libraries
send their write key.

Not for: provider callbacks (they carry the provider's own signature, checked where they are
served), the signed unsubscribe links, click tracking's signed redirects and open pixel
(`/l/{token}`, `/o/{token}`: clicked from an inbox, the token is the credential), and the
liveness/readiness probes, which stay open (a load balancer or orchestrator calls them without
credentials; they reveal nothing but "up").

Ingest is hot, so a key found in the store is kept in memory for `CACHE_SECONDS` (a revocation
from another process takes effect within that time; one in this process at once), and the key's
`last_used_at` is written at most once per `TOUCH_SECONDS`, never on every request.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.security.http import HTTPBase
from starlette.routing import BaseRoute, Route

from cairn import inbox_tokens
from cairn.events.ingest import utc_now
from cairn.log import get_logger
from cairn.store import keys as keys_repo
from cairn.store.db import Store

log = get_logger(__name__)

CACHE_SECONDS = 10.0
TOUCH_SECONDS = 60.0
_CACHE_LIMIT = 4096
"""Cached lookups kept at most (unknown secrets included), so random keys cannot grow memory."""

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cairn"'}
"""Only the Bearer challenge: a Basic one makes browsers prompt for credentials and then send
them by themselves with every request to the API, forms of other sites included."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """The key a request was authenticated with (never its secret)."""

    id: int
    name: str
    scope: str
    revoked: bool


class Keyring:
    """Looks keys up by secret, with a short in-process cache and throttled `last_used_at`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._found: dict[str, tuple[float, Caller | None]] = {}
        self._touched: dict[int, float] = {}

    async def find(self, secret: str) -> Caller | None:
        digest = keys_repo.secret_hash(secret)
        now = time.monotonic()
        cached = self._found.get(digest)
        if cached is not None and cached[0] > now:
            caller = cached[1]
        else:
            async with self.store.session() as s:
                row = await keys_repo.key_with_secret(s, secret)
                caller = None if row is None else Caller(row.id, row.name, row.scope,
                                                         row.revoked_at is not None)
            if len(self._found) >= _CACHE_LIMIT:
                self._found.clear()
            self._found[digest] = (now + CACHE_SECONDS, caller)
        if caller is not None and not caller.revoked:
            await self._touch(caller, now)
        return caller

    async def _touch(self, caller: Caller, now: float) -> None:
        if now - self._touched.get(caller.id, -TOUCH_SECONDS) < TOUCH_SECONDS:
            return
        self._touched[caller.id] = now
        async with self.store.session() as s, s.begin():
            await keys_repo.mark_used(s, caller.id, utc_now())

    def forget(self) -> None:
        """Drop every cached lookup (after a revocation in this process)."""
        self._found.clear()


def presented_secret(authorization: str | None) -> str | None:
    """The key in `Authorization: Bearer KEY` or in Basic `KEY:` (user name, empty password)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None


class _Scheme(HTTPBase):
    """A security scheme named in the OpenAPI; the header itself is read by `Requirement`."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


BEARER = _Scheme(scheme="bearer", scheme_name="bearer", auto_error=False,
                 description="`Authorization: Bearer KEY` (a key from `cairn keys create`)")
BASIC = _Scheme(scheme="basic", scheme_name="basic", auto_error=False,
                description="HTTP Basic with the key as user name and an empty password "
                            "(how Segment's and RudderStack's libraries send a write key)")


class Requirement:
    """The dependency `requires(scope)` puts on a route."""

    def __init__(self, scope: str) -> None:
        if scope not in keys_repo.SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    def describe(self) -> str:
        """What the route's OpenAPI description says it needs."""
        return f"Needs an API key of scope `{self.scope}` (or `admin`)."

    async def __call__(self, request: Request, _bearer: None = Depends(BEARER),
                       _basic: None = Depends(BASIC)) -> Caller:
        return await self.authenticate(request)

    async def authenticate(self, request: Request) -> Caller:
        known: Caller | None = getattr(request.state, "caller", None)
        if known is not None and keys_repo.grants(known.scope, self.scope):
            return known  # checked already in this request (ingest checks before the body)
        secret = presented_secret(request.headers.get("authorization"))
        if secret is None:
            raise unauthorized("no API key: send `Authorization: Bearer KEY` (or HTTP Basic with "
                               "the key as user name); `cairn keys create` makes one")
        keyring: Keyring = request.app.state.keyring
        caller = await keyring.find(secret)
        if caller is None:
            raise unauthorized("unknown API key: check it, or create one with `cairn keys create`")
        if caller.revoked:
            log.info("api.key_refused", key=caller.name, reason="revoked", path=request.url.path)
            raise unauthorized(f"the API key {caller.name!r} is revoked: use another one")
        if not keys_repo.grants(caller.scope, self.scope):
            log.info("api.key_refused", key=caller.name, reason="scope", scope=caller.scope,
                     needed=self.scope, path=request.url.path)
            raise HTTPException(403, f"the API key {caller.name!r} has scope {caller.scope!r}; "
                                     f"{request.method} {request.url.path} needs a "
                                     f"{self.scope!r} or 'admin' key")
        self.check_origin(request)
        request.state.caller = caller
        return caller

    def check_origin(self, request: Request) -> None:
        refuse_foreign_origin(request)


class CodecAccess(Requirement):
    """The remote-codec routes (`/codec/decode`, `/codec/encode`): an admin key, sent by the
    Temporal CLI (`--codec-auth`) or a UI that passes one, from the UI's origins
    (`CAIRN_CODEC_CORS_ORIGINS`) too. `cairn dev` also lets its own UI in without a key
    (`CAIRN_CODEC_UI_WITHOUT_KEY`): the dev server's UI has no way to send one, and it runs on
    the developer's machine beside the key file anyway."""

    def __init__(self) -> None:
        super().__init__("admin")

    def describe(self) -> str:
        return ("Needs an API key of scope `admin`; `cairn dev` also answers its own Temporal "
                "UI (an Origin in `CAIRN_CODEC_CORS_ORIGINS`) without one.")

    async def authenticate(self, request: Request) -> Caller:
        settings = request.app.state.settings
        origin = request.headers.get("origin")
        if (settings.codec_ui_without_key and origin in settings.codec_cors_origins
                and not request.headers.get("authorization")):
            caller = Caller(id=0, name="the Temporal UI of cairn dev", scope="admin",
                            revoked=False)
            request.state.caller = caller
            return caller
        return await super().authenticate(request)

    def check_origin(self, request: Request) -> None:
        if request.headers.get("origin") in request.app.state.settings.codec_cors_origins:
            return
        refuse_foreign_origin(request)


class InboxAccess(Requirement):
    """The inbox routes: an inbox token for the contact in the path (`cairn.inbox_tokens`), which
    a front end holds on the contact's behalf, or a key of `scope`."""

    def __init__(self, scope: str, workspace_key: bytes) -> None:
        super().__init__(scope)
        self._workspace_key = workspace_key

    def describe(self) -> str:
        return (f"Needs an inbox token for this contact (`Authorization: Bearer inbox.…`, from "
                f"`POST /v1/contacts/{{contact_id}}/inbox-token`), or an API key of scope "
                f"`{self.scope}` (or `admin`).")

    async def authenticate(self, request: Request) -> Caller:
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or not token.startswith(inbox_tokens.PREFIX):
            return await super().authenticate(request)
        contact_id = str(request.path_params.get("contact_id", ""))
        try:
            inbox_tokens.verify(token, contact_id, utc_now(), self._workspace_key)
        except inbox_tokens.InboxTokenForAnother as error:
            raise HTTPException(403, str(error)) from error
        except inbox_tokens.InboxTokenError as error:
            raise unauthorized(str(error)) from error
        # No Origin check: the token is sent on purpose by the page holding it, never ambiently.
        caller = Caller(id=0, name=f"inbox token of {contact_id}", scope="inbox", revoked=False)
        request.state.caller = caller
        return caller


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers=CHALLENGE)


def refuse_foreign_origin(request: Request) -> None:
    """A state-changing call from a web page of an origin not allowed (CAIRN_CORS_ORIGINS) is
    refused even with a key: browsers send an Origin header with such calls, server-side
    clients and the official libraries send none. Belt and braces beside CORS, for keys a browser
    might hold on its own (Basic credentials it cached)."""
    origin = request.headers.get("origin")
    if origin is None or request.method in SAFE_METHODS:
        return
    if urlsplit(origin).netloc == request.headers.get("host"):
        return  # the API's own pages (`/docs`): the same origin, not another site
    if origin not in request.app.state.settings.cors_origins:
        raise HTTPException(403, f"calls from web pages of {origin} are not allowed: add it to "
                                 "CAIRN_CORS_ORIGINS")


def requires(scope: str) -> Any:
    """The dependency of a route that needs a key of `scope` (or an admin key)."""
    return Depends(Requirement(scope))


# ---------------------------------------------------------------------------- the route table


def api_routes(routes: list[BaseRoute]) -> Iterator[Route]:
    """Every route of an app or router (its own documentation's too), through included
    routers."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from api_routes(original.routes)
        elif isinstance(route, Route):
            yield route


def requirement_of(route: Route) -> Requirement | None:
    """The key requirement on a route, if it has one (directly or through its router)."""
    if not isinstance(route, APIRoute):
        return None
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, Requirement):
            return dependency.call
    return None


AUTH_RESPONSES: dict[int, dict[str, Any]] = {
    401: {"description": "no API key, an unknown one, or a revoked one (`WWW-Authenticate: "
                         "Bearer`)"},
    403: {"description": "the key's scope does not allow this call"},
}


def document_keys(app: FastAPI) -> None:
    """Name 401 and 403, and the scope needed, on every route that needs a key."""
    needs = {(route.path, method.lower()): requirement
             for route in api_routes(app.routes) if (requirement := requirement_of(route))
             for method in route.methods or ()}
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                requirement = needs.get((path, method))
                if requirement is None:
                    continue
                responses = operation.setdefault("responses", {})
                for status, response in AUTH_RESPONSES.items():
                    responses.setdefault(str(status), dict(response))
                operation["x-cairn-scope"] = requirement.scope
                operation["description"] = (operation.get("description", "") + "\n\n" +
                                            requirement.describe()).strip()
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

