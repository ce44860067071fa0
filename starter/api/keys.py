"""Key management over HTTP (admin keys only): list, create, revoke. `cairn keys` does the same
on the store directly. A secret is answered once, when its key is created, and never again."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from cairn.events.ingest import utc_now
from cairn.store import keys as keys_repo
from cairn.store.db import Store
from starter.api.auth import Keyring, requires


class KeyView(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "name": "backend", "scope": "write", "created_at": "2026-03-02T09:00:00Z",
        "last_used_at": "2026-03-02T09:05:00Z", "revoked_at": None}]})

    name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKey(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "backend",
                                                               "scope": "write"}]})

    name: str = Field(min_length=1, max_length=128, pattern=r"\S")
    scope: Literal["write", "read", "admin"]


class CreatedKey(KeyView):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "backend", "scope": "write", "created_at": "2026-03-02T09:00:00Z",
        "last_used_at": None, "revoked_at": None,
        "secret": "cairn_0mJq3d1l8QyZ4v8pX2w3k5Yc9n7B6t1sR0aE4uH2gF8"}]})

    secret: str = Field(description="the key itself: shown this once, stored only as a hash")


def keys_router(store: Store) -> APIRouter:
    router = APIRouter(tags=["keys"], dependencies=[requires("admin")])

    @router.get("/v1/keys", response_model=list[KeyView], summary="API keys (never their secrets)")
    async def list_keys() -> list[KeyView]:
        async with store.session() as s:
            return [KeyView.model_validate(key) for key in await keys_repo.all_keys(s)]

    @router.post("/v1/keys", response_model=CreatedKey, status_code=201,
                 summary="Create an API key; its secret is answered this once",
                 responses={409: {"description": "a key of this name exists (or existed)"}})
    async def create_key(new: NewKey) -> CreatedKey:
        async with store.session() as s, s.begin():
            try:
                secret = await keys_repo.create_key(s, new.name, new.scope, utc_now())
            except keys_repo.KeyRefused as error:
                raise HTTPException(409, str(error)) from error
            key = await keys_repo.key_named(s, new.name.strip())
            assert key is not None
            view = KeyView.model_validate(key)
        return CreatedKey(**view.model_dump(), secret=secret)

    @router.post("/v1/keys/{name}/revoke", response_model=KeyView,
                 summary="Revoke an API key at once (it stays listed)",
                 responses={404: {"description": "no key of this name"},
                            409: {"description": "it is the key of this request"}})
    async def revoke_key(name: str, request: Request) -> KeyView:
        """Not the key the request is made with: that would lock its caller out mid-task (use
        another admin key, or `cairn keys revoke`)."""
        if request.state.caller.name == name:
            raise HTTPException(409, f"{name!r} is the key of this request: revoke it with "
                                     "another admin key, or with `cairn keys revoke`")
        async with store.session() as s, s.begin():
            try:
                key = await keys_repo.revoke_key(s, name, utc_now())
            except keys_repo.KeyRefused as error:
                raise HTTPException(404, str(error)) from error
            view = KeyView.model_validate(key)
        keyring: Keyring = request.app.state.keyring
        keyring.forget()
        return view

    return router
