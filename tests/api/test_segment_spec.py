"""The Segment spec at the door: every call type on its own endpoint and inside a batch, partial
batches with their refused items kept, bodies as libraries send them (gzip, deflate, any content
type) within the size limits, and values that could not be stored or evaluated refused up front."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import select
from typer.testing import CliRunner

from cairn.conditions import Condition, ConditionScope, evaluate, parse_condition
from cairn.events.ingest import Ingest
from cairn.settings import Settings
from cairn.store.db import Store
from cairn.store.schema import Contact, Event, RejectedCall
from starter.api.app import create_app
from starter.cli.main import app as cli
from tests.api_support import admin


async def events(store: Store) -> list[Event]:
    async with store.session() as session:
        return list(await session.scalars(select(Event).order_by(Event.id)))


async def rejected(store: Store) -> list[RejectedCall]:
    async with store.session() as session:
        return list(await session.scalars(select(RejectedCall).order_by(RejectedCall.id)))


async def contact(store: Store, contact_id: str) -> Contact | None:
    async with store.session() as session:
        return await session.get(Contact, contact_id)


EVERY_CALL = [
    {"type": "identify", "anonymousId": "anon-1", "traits": {"email": "ana@example.com"},
     "messageId": "m-identify"},
    {"type": "track", "anonymousId": "anon-1", "event": "cart_item_added",
     "properties": {"value": 25}, "messageId": "m-track"},
    {"type": "page", "anonymousId": "anon-1", "name": "Pricing",
     "properties": {"url": "https://shop.example/pricing"}, "messageId": "m-page"},
    {"type": "screen", "anonymousId": "anon-1", "name": "Checkout", "properties": {"step": 2},
     "messageId": "m-screen"},
    {"type": "alias", "previousId": "anon-1", "userId": "u-1", "messageId": "m-alias"},
    {"type": "group", "userId": "u-1", "groupId": "acme",
     "traits": {"name": "Acme", "plan": "enterprise"}, "messageId": "m-group"},
    {"type": "track", "anonymousId": "anon-1", "event": "after_alias", "messageId": "m-after"},
]


# --------------------------------------------------------------------------- every call type


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import"])
async def test_every_call_type_in_a_batch_is_stored_as_its_endpoint_stores_it(
    api: httpx.AsyncClient, store: Store, path: str
) -> None:
    response = await api.post(path, json={"batch": EVERY_CALL})

    assert response.status_code == 200, response.text
    assert response.json() == [{"messageId": call["messageId"], "duplicate": False}
                               for call in EVERY_CALL]
    stored = {row.message_id: row for row in await events(store)}
    assert {m: (r.type, r.name, r.contact_id) for m, r in stored.items()} == {
        # the alias moved the visitor's earlier events to the user...
        "m-identify": ("identify", "identify", "u-1"),
        "m-track": ("track", "cart_item_added", "u-1"),
        "m-page": ("page", "page_viewed", "u-1"),
        "m-screen": ("screen", "screen_viewed", "u-1"),
        "m-alias": ("alias", "alias", "u-1"),
        "m-group": ("group", "group", "u-1"),
        # ...and a later call with only the anonymous id is the user's
        "m-after": ("track", "after_alias", "u-1"),
    }
    assert stored["m-screen"].properties == {"step": 2, "name": "Checkout"}
    assert stored["m-alias"].routed_at is not None  # bookkeeping: never routed to journeys
    user = await contact(store, "u-1")
    assert user is not None and user.email == "ana@example.com"
    assert user.attributes["group"] == {"id": "acme", "name": "Acme", "plan": "enterprise"}
    assert await contact(store, "anon-1") is None


async def test_screen_and_group_have_their_own_endpoints(
    api: httpx.AsyncClient, store: Store
) -> None:
    screen = await api.post("/v1/screen", json={"userId": "c-1", "name": "Home",
                                                "messageId": "s-1"})
    group = await api.post("/v1/group", json={"userId": "c-1", "groupId": 42,
                                              "traits": {"plan": "pro"}})
    regroup = await api.post("/v1/group", json={"userId": "c-1", "groupId": "42",
                                                "traits": {"seats": 5}})

    assert (screen.status_code, group.status_code, regroup.status_code) == (202, 202, 202)
    assert screen.json() == {"messageId": "s-1", "duplicate": False}
    names = [row.name for row in await events(store)]
    assert names == ["screen_viewed", "group", "group"]
    stored = await contact(store, "c-1")
    assert stored is not None
    # the same group merges its traits
    assert stored.attributes["group"] == {"id": "42", "plan": "pro", "seats": 5}
    other = await api.post("/v1/group", json={"userId": "c-1", "groupId": "globex"})
    assert other.status_code == 202
    stored = await contact(store, "c-1")
    assert stored is not None and stored.attributes["group"] == {"id": "globex"}


async def test_a_condition_reads_the_contacts_group(api: httpx.AsyncClient) -> None:
    await api.post("/v1/group", json={"userId": "c-g", "groupId": "acme",
                                      "traits": {"plan": "enterprise"}})
    snapshot = (await api.get("/v1/contacts/c-g")).json()
    scope = ConditionScope(now=datetime(2026, 3, 2, tzinfo=UTC), contact=snapshot)

    conditions: TypeAdapter[Any] = TypeAdapter(Condition)
    enterprise = conditions.validate_python(
        parse_condition({"attribute": "group.plan", "eq": "enterprise"}))
    trial = conditions.validate_python(parse_condition({"attribute": "group.plan", "eq": "trial"}))

    assert (await evaluate(enterprise, scope)).result
    assert not (await evaluate(trial, scope)).result


async def test_an_alias_to_itself_in_a_batch_is_refused_alone(
    api: httpx.AsyncClient, store: Store
) -> None:
    response = await api.post("/v1/batch", json={"batch": [
        {"type": "alias", "previousId": "u-1", "userId": "u-1", "messageId": "a-1"},
        {"type": "track", "userId": "u-1", "event": "ok", "messageId": "t-1"},
    ]})

    assert response.status_code == 200
    first, second = response.json()
    assert first["rejected"] is True and "an alias links two different ids" in first["errors"][0]
    assert second == {"messageId": "t-1", "duplicate": False}


# --------------------------------------------------------------------------- partial batches


async def test_a_partial_batch_stores_the_valid_calls_and_keeps_the_refused_ones(
    api: httpx.AsyncClient, store: Store
) -> None:
    response = await api.post("/v1/batch", json={"batch": [
        {"type": "track", "userId": "c-1", "event": "ok", "messageId": "ok-1"},
        {"type": "track", "userId": "c-1", "messageId": "no-event"},
        {"type": "teleport", "userId": "c-1"},
        {"type": "identify", "userId": "c-1", "traits": {"timezone": "Mars/Olympus"},
         "messageId": "bad-tz"},
        {"type": "track", "userId": "c-1", "event": "ok", "messageId": "ok-2"},
    ]})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer[0] == {"messageId": "ok-1", "duplicate": False}
    assert answer[4] == {"messageId": "ok-2", "duplicate": False}
    assert [(a["index"], a["messageId"], a["rejected"]) for a in answer[1:4]] == [
        (1, "no-event", True), (2, None, True), (3, "bad-tz", True)]
    assert answer[1]["errors"] == ["body.batch[1].event: Field required"]
    assert "track, identify, page, screen, group or alias" in answer[2]["errors"][0]
    assert "Mars/Olympus" in answer[3]["errors"][0]
    assert [row.message_id for row in await events(store)] == ["ok-1", "ok-2"]

    kept = await rejected(store)
    assert [(r.endpoint, r.batch_index, r.message_id) for r in kept] == [
        ("/v1/batch", 1, "no-event"), ("/v1/batch", 2, None), ("/v1/batch", 3, "bad-tz")]
    assert json.loads(kept[1].call) == {"type": "teleport", "userId": "c-1"}
    assert kept[0].reason == "body.batch[1].event: Field required"

    listed = await api.get("/v1/rejected", params={"limit": 2})
    assert listed.status_code == 200
    assert [(r["batch_index"], r["message_id"]) for r in listed.json()] == [
        (3, "bad-tz"), (2, None)]


def test_cairn_rejected_lists_the_refused_calls(tmp_path: Any, monkeypatch: Any) -> None:
    import asyncio

    from cairn.settings import get_settings

    home = tmp_path / ".cairn"
    monkeypatch.setenv("CAIRN_HOME", str(home))
    get_settings.cache_clear()

    async def post() -> None:
        store = await Store.open(get_settings().store_url)
        try:
            application = create_app(store, Ingest(store, None), settings=get_settings())
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                         base_url="http://cairn.test",
                                         auth=admin(application.state.store)) as client:
                answer = await client.post("/v1/batch", json={"batch": [
                    {"type": "track", "userId": "c-1", "event": "ok"},
                    {"type": "track", "userId": "c-1", "messageId": "cli-bad"}]})
                assert answer.status_code == 200
        finally:
            await store.close()

    try:
        asyncio.run(post())
        shown = CliRunner().invoke(cli, ["rejected", "--json"])
    finally:
        get_settings.cache_clear()

    assert shown.exit_code == 0, shown.output
    [line] = shown.output.strip().splitlines()
    row = json.loads(line)
    assert (row["endpoint"], row["batch_index"], row["message_id"]) == ("/v1/batch", 1, "cli-bad")
    assert row["reason"] == "body.batch[1].event: Field required"


# --------------------------------------------------------------------------- bodies


def _track(message_id: str = "m-1") -> bytes:
    return json.dumps({"userId": "c-1", "event": "signup", "messageId": message_id}).encode()


@pytest.mark.parametrize(
    ("encoding", "squeeze"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda raw: zlib.compress(raw)[2:-4]),  # raw deflate, as some clients send
    ],
)
async def test_compressed_bodies_are_accepted(
    api: httpx.AsyncClient, store: Store, encoding: str, squeeze: Any
) -> None:
    response = await api.post("/v1/track", content=squeeze(_track()),
                              headers={"content-encoding": encoding,
                                       "content-type": "application/json"})

    assert response.status_code == 202, response.text
    assert [row.message_id for row in await events(store)] == ["m-1"]


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
async def test_a_json_body_is_read_whatever_its_content_type(
    api: httpx.AsyncClient, store: Store, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api.post("/v1/batch", content=json.dumps({"batch": [
        {"type": "track", "userId": "c-1", "event": "signup", "messageId": "t-1"}]}),
        headers=headers)

    assert response.status_code == 200, response.text
    assert [row.message_id for row in await events(store)] == ["t-1"]


async def test_a_gzip_bomb_is_refused_with_413_before_it_is_inflated(
    api: httpx.AsyncClient, store: Store
) -> None:
    bomb = gzip.compress(b"{" + b" " * (200 * 1024 * 1024) + b"}")  # 200 MB in about 200 KB
    assert len(bomb) < 500 * 1024

    response = await api.post("/v1/batch", content=bomb, headers={"content-encoding": "gzip"})

    assert response.status_code == 413
    assert "512000 bytes (CAIRN_MAX_BATCH_BYTES; send fewer calls" in response.json()["detail"]
    assert await events(store) == []


async def test_bodies_over_segments_limits_are_refused_whole_or_per_item(
    api: httpx.AsyncClient, store: Store
) -> None:
    big = "x" * (33 * 1024)
    call = await api.post("/v1/track", json={"userId": "c-1", "event": "e",
                                             "properties": {"blob": big}})
    huge_batch = await api.post("/v1/batch", json={"batch": [
        {"type": "track", "userId": "c-1", "event": "e", "properties": {"blob": "y" * 30_000}}
        for _ in range(20)]})
    one_big_item = await api.post("/v1/batch", json={"batch": [
        {"type": "track", "userId": "c-1", "event": "e", "properties": {"blob": big}},
        {"type": "track", "userId": "c-1", "event": "small", "messageId": "small"}]})

    assert call.status_code == 413
    assert "32768 bytes (CAIRN_MAX_CALL_BYTES; send less" in call.json()["detail"]
    assert huge_batch.status_code == 413
    assert one_big_item.status_code == 200
    refused, stored = one_big_item.json()
    assert "the limit per call is 32768 bytes" in refused["errors"][0]
    assert stored == {"messageId": "small", "duplicate": False}
    assert [row.message_id for row in await events(store)] == ["small"]


async def test_the_limits_are_settings(store: Store) -> None:
    settings = Settings(database_url=store.url, max_call_bytes=100, max_batch_bytes=300)
    application = create_app(store, Ingest(store, None), settings=settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                 base_url="http://cairn.test",
                                 auth=admin(application.state.store)) as client:
        small = await client.post("/v1/track", content=_track())
        large = await client.post("/v1/track", json={"userId": "c-1", "event": "e" * 120})

    assert (small.status_code, large.status_code) == (202, 413)


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"this is not gzip at all", {"content-encoding": "gzip"}, 400, "not valid gzip"),
        (gzip.compress(_track())[:-12], {"content-encoding": "gzip"}, 400, "ends early"),
        (_track(), {"content-encoding": "br"}, 415, "'br' is not supported"),
        (b'{"userId": "c-\xff", "event": "e"}', {}, 400, "not UTF-8 (byte 14 is 0xff)"),
        (b'{"userId": "c-\xff", "event": "e"}', {"content-type": "text/plain"}, 400, "UTF-8"),
    ],
)
async def test_unreadable_bodies_get_a_4xx_naming_why(
    api: httpx.AsyncClient, store: Store, body: bytes, headers: dict[str, str], status: int,
    says: str,
) -> None:
    response = await api.post("/v1/track", content=body, headers=headers)

    assert response.status_code == status
    assert says in response.json()["detail"]
    assert await events(store) == []


@pytest.mark.parametrize("path", ["/v1/contacts/c-1", "/v1/alias", "/v1/entries"])
async def test_non_utf8_bodies_elsewhere_are_a_4xx_not_a_500(
    api: httpx.AsyncClient, path: str
) -> None:
    method = api.patch if path.startswith("/v1/contacts") else api.post
    response = await method(path, content=b'{"a": "\xff\xfe"}',
                            headers={"content-type": "text/plain"})

    assert 400 <= response.status_code < 500, response.text


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"userId": "c-1", "event": "e", "properties": {"price": NaN}}',
         "properties.price: nan is not a number"),
        ('{"userId": "c-1", "event": "e", "properties": {"n": [1, -Infinity]}}',
         "properties.n[1]: -inf is not a number"),
        ('{"userId": "c-1", "event": "e", "properties": {"id": 99999999999999999999}}',
         "properties.id: integer 99999999999999999999 is beyond 64 bits"),
        ('{"userId": "c-\\ud800", "event": "e"}', "userId: character 2 is a lone surrogate"),
        ('{"userId": "c-1", "event": "e", "properties": {"\\udc00k": 1}}',
         "properties key: character 0 is a lone surrogate"),
        ('{"userId": "c-1", "event": "e", "timestamp": "0001-01-01T00:00:00Z"}',
         "timestamp: 0001-01-01T00:00:00+00:00 is outside the years"),
        ('{"userId": "c-1", "event": "e", "timestamp": "9999-12-31T23:59:59-05:00"}',
         "timestamp: 9999-12-31T23:59:59-05:00 is outside the years"),
        ('{"userId": "c-1", "event": "e", "properties": {"due": "0001-01-01T00:00:00+01:00"}}',
         "properties.due: '0001-01-01T00:00:00+01:00' is a date at the edge"),
        ('{"userId": "c-1", "event": "e", "properties": {"d": ["9999-12-31"]}}',
         "properties.d[0]: '9999-12-31' is a date at the edge"),
        ('{"userId": "c-1", "event": "e", "properties": {"a": ' + "[" * 40 + "]" * 40 + '}}',
         "nested more than 32 levels deep"),
    ],
)
async def test_values_that_cannot_be_stored_or_evaluated_are_refused_naming_the_field(
    api: httpx.AsyncClient, store: Store, raw: str, says: str
) -> None:
    alone = await api.post("/v1/track", content=raw)
    batched = await api.post("/v1/batch", content='{"batch": [' + raw[:-1]
                             + ', "type": "track"}]}')

    assert alone.status_code == 422, alone.text
    assert any(says in line for line in alone.json()["errors"]), alone.json()["errors"]
    assert batched.status_code == 200
    [refused] = batched.json()
    assert refused["rejected"] is True
    assert refused["errors"][0].startswith("body.batch[0]")
    assert any(says in line for line in refused["errors"]), refused["errors"]
    assert await events(store) == []
    assert len(await rejected(store)) == 1


@pytest.mark.parametrize("number", [2**40, 2**70])
async def test_too_large_ids_in_paths_are_a_422_not_a_500(
    api: httpx.AsyncClient, number: int
) -> None:
    completed = await api.post(f"/v1/tasks/{number}/complete", json={"outcome": "done"})
    read = await api.post(f"/v1/contacts/c-1/inbox/{number}/read")

    if number < 2**63:  # SQLite's integers hold it: there is simply no such row
        assert {completed.status_code, read.status_code} <= {404, 422}
    else:
        assert (completed.status_code, read.status_code) == (422, 422), completed.text
        assert "too large for the store" in completed.json()["errors"][0]


async def test_an_import_without_a_file_part_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/imports", files={"note": (None, "no file here")})

    assert response.status_code == 422, response.text
    assert "`file`" in response.json()["detail"]


@pytest.mark.parametrize("depth", [40, 900, 5000])
async def test_deeply_nested_values_are_refused_not_a_500(
    api: httpx.AsyncClient, store: Store, depth: int
) -> None:
    deep = "[" * depth + "]" * depth
    alone = await api.post("/v1/track", content='{"userId": "c-1", "event": "e", '
                                                f'"properties": {{"a": {deep}}}}}')
    await api.post("/v1/identify", json={"userId": "c-1"})
    patched = await api.patch("/v1/contacts/c-1", content=f'{{"attributes": {{"a": {deep}}}}}',
                              headers={"content-type": "application/json"})

    assert alone.status_code == 422, alone.text
    assert "nested" in alone.json()["errors"][0]
    assert patched.status_code in (200, 422), patched.text
    assert "e" not in [row.name for row in await events(store)]


async def test_every_endpoint_and_status_of_the_openapi_is_in_docs_api_md(
    api: httpx.AsyncClient,
) -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in docs.splitlines()
            if line.startswith("| `") and line.count("|") >= 4}
    spec = (await api.get("/openapi.json")).json()

    missing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            name = f"`{method.upper()} {path}`"
            row = rows.get(name)
            answers = row.rsplit("|", 2)[-2] if row else ""
            documented = {code.strip() for code in answers.split(",")}
            if row is None or documented != set(operation["responses"]):
                missing.append(f"{name}: OpenAPI {sorted(operation['responses'])}, "
                               f"docs {sorted(documented)}")
    assert missing == [], "docs/api.md's endpoint table disagrees with the OpenAPI"


async def test_a_deflate_body_that_is_neither_zlib_nor_raw_deflate_is_a_400(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/track", content=b"\xff" * 64,
                              headers={"content-encoding": "deflate"})

    assert response.status_code == 400
    assert "not valid deflate" in response.json()["detail"]


async def test_an_import_row_with_a_value_that_cannot_be_stored_is_a_bad_row(
    api: httpx.AsyncClient, store: Store
) -> None:
    csv_text = ("userId,birthday,visits,phone\n"
                "c-1,1990-04-01,3,+40700000000\n"
                "c-2,0001-01-01,3,\n"
                f"c-3,1990-04-01,{'9' * 400}.5,\n"  # read as a float: infinity
                f"c-4,1990-04-01,1,{'9' * 40}\n")
    response = await api.post("/v1/imports", content=csv_text,
                              headers={"content-type": "text/csv"})

    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["applied"] == 1
    assert [(e["line"], e["message"].split(":")[0]) for e in summary["errors"]] == [
        (3, "birthday"), (4, "visits"), (5, "phone")]
    assert await contact(store, "c-1") is not None
    assert await contact(store, "c-2") is None
