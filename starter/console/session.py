"""Who is looking at the console: a signed session cookie made from an API key, and CSRF tokens.

Logging in takes an API key of scope `read` or `admin` (a `write` key reads nothing) and answers
a cookie holding the key's id, scope and name, an expiry and a CSRF token, signed with HMAC-SHA256
under a key derived from the workspace's signing key (`Settings.signing_key`). The cookie is
HttpOnly, SameSite=Strict, Secure when the console is served over https, and never holds the key's
secret. Every page checks it (`ConsoleSession`, the guard of every console route but the login
page and the assets), and every request re-reads the key: a revoked key's session ends at once.
Every state-changing form (task claim and completion, logout) carries the session's CSRF token,
and a request from a page of another origin is refused.

Not for: the API (`starter.api.auth` checks keys on every `/v1` route).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from cairn.store import keys as keys_repo
from cairn.store.schema import ApiKey

COOKIE = "cairn_console"
SESSION_SECONDS = 8 * 3600
LOGIN_PATH = "/console/login"
CONSOLE_SCOPES = ("read", "admin")
"""Scopes that may log in: a write key (a source's) reads nothing."""


class LoginRequired(Exception):
    """No valid session: the console answers with its login page (a redirect)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class ConsoleRefusal(Exception):
    """A session that may not do this (its scope, a missing CSRF token, another origin)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """The key a console session was opened with (never its secret)."""

    key_id: int
    name: str
    scope: str
    csrf: str
    expires: float

    def may(self, scope: str) -> bool:
        return keys_repo.grants(self.scope, scope)


def _signing_key(request: Request) -> bytes:
    root = request.app.state.settings.signing_key()
    return hmac.new(root, b"cairn console session", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_cookie(request: Request, key: ApiKey | Any) -> tuple[str, Viewer]:
    """The signed cookie value for a login with `key`, and the viewer it stands for."""
    viewer = Viewer(key.id, key.name, key.scope, secrets.token_urlsafe(24),
                    time.time() + SESSION_SECONDS)
    payload = _b64(json.dumps({"k": viewer.key_id, "n": viewer.name, "s": viewer.scope,
                               "c": viewer.csrf, "e": viewer.expires}).encode())
    signature = _b64(hmac.new(_signing_key(request), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}", viewer


def read_cookie(request: Request) -> Viewer | None:
    """The viewer of a valid, unexpired cookie (its key still to be checked)."""
    value = request.cookies.get(COOKIE, "")
    payload, _, signature = value.partition(".")
    if not payload or not signature:
        return None
    expected = _b64(hmac.new(_signing_key(request), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        fields = json.loads(_unb64(payload))
        viewer = Viewer(int(fields["k"]), str(fields["n"]), str(fields["s"]), str(fields["c"]),
                        float(fields["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return viewer if viewer.expires > time.time() else None


def set_cookie(response: Any, request: Request, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=SESSION_SECONDS, path="/console", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_cookie(response: Any, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from the console's own pages (or names no
    origin: browsers send Origin with every POST, so only non-browser clients omit it)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


def safe_next(path: str | None) -> str:
    """Where to go after logging in: a console page only (never another site)."""
    if path and path.startswith("/console") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console"


def login_redirect_path(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{LOGIN_PATH}?next={quote(target, safe='')}"


class ConsoleSession:
    """The dependency every console page has: a valid session of a key that still exists, is
    not revoked and grants `scope`; for a POST also the session's CSRF token in the form and no
    foreign Origin. Without a session: the login page; otherwise a refusal."""

    def __init__(self, scope: str) -> None:
        if scope not in keys_repo.SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    async def __call__(self, request: Request) -> Viewer:
        viewer = read_cookie(request)
        if viewer is not None:
            async with request.app.state.store.session() as s:
                key = await s.get(ApiKey, viewer.key_id)
            if key is None or key.revoked_at is not None or key.scope != viewer.scope:
                viewer = None
        if viewer is None:
            raise LoginRequired(login_redirect_path(request))
        if not viewer.may(self.scope):
            raise ConsoleRefusal(403, f"the key {viewer.name!r} has scope {viewer.scope!r}; "
                                      f"this needs a {self.scope!r} or 'admin' key: log in "
                                      "with one")
        if request.method not in ("GET", "HEAD"):
            if not same_origin(request):
                raise ConsoleRefusal(403, "this form was sent from a page of another site")
            form = await request.form()
            token = str(form.get("csrf", ""))
            if not hmac.compare_digest(token, viewer.csrf):
                raise ConsoleRefusal(403, "the form's CSRF token does not match your session: "
                                          "reload the page and try again")
        request.state.viewer = viewer
        return viewer


def session_requirement_of(route: BaseRoute) -> ConsoleSession | None:
    """The console session a route needs, if it is a console page."""
    if not isinstance(route, APIRoute):
        return None
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, ConsoleSession):
            return dependency.call
    return None
