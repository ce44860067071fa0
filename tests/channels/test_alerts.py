"""Slack alerts, signed outgoing webhooks and HubSpot tasks against local stand-ins.

Each test asserts what the stand-in received or recorded and how a failure is classified
(retryable, outcome_unknown, the Retry-After seconds), since those drive exactly-once delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from cairn.channels.base import Alert, Notifier, OutgoingTask, ProviderError, TaskSink
from cairn.channels.hubspot import HubSpotSettings, HubSpotTaskSink, task_marker
from cairn.channels.slack import SlackNotifier, SlackSettings, build_payload
from cairn.channels.webhook import (
    MAX_REPLY_BYTES,
    WebhookCaller,
    WebhookSettings,
    sign,
    verify_signature,
)
from tests.standins.hooks import hooks_app
from tests.standins.hubspot import HubSpotState, hubspot_app
from tests.standins.server import Script, StandInServer, refused_url
from tests.standins.slack import slack_app

SLOW = 0.8
SHORT_TIMEOUT = 0.3

# --------------------------------------------------------------------------------------- Slack

SALES = "/services/T0001/B0001/s4l3sSECRET"
COLLECTIONS = "/services/T0001/B0002/c0llSECRET"
ARCHIVED = "/services/T0001/B0003/0ldSECRET"
GONE = "/services/T0001/B0004/g0neSECRET"


@pytest.fixture
def slack_script() -> Script:
    return Script()


@pytest.fixture
def slack_server(slack_script: Script) -> Iterator[StandInServer]:
    hooks = {SALES: "sales", COLLECTIONS: "collections", ARCHIVED: "old-alerts"}
    app = slack_app(slack_script, hooks, archived=frozenset({"old-alerts"}))
    with StandInServer(app) as server:
        yield server


def slack_settings(base: str, **extra: object) -> SlackSettings:
    hooks = {
        "sales": SecretStr(base + SALES),
        "#collections": SecretStr(base + COLLECTIONS),
        "old": SecretStr(base + ARCHIVED),
        "gone": SecretStr(base + GONE),
    }
    return SlackSettings(webhooks=hooks, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def slack(slack_server: StandInServer) -> AsyncIterator[SlackNotifier]:
    notifier = SlackNotifier(slack_settings(slack_server.url, timeout=SHORT_TIMEOUT))
    yield notifier
    await notifier.aclose()


def alert(destination: str = "sales", **extra: object) -> Alert:
    values: dict[str, object] = {
        "destination": destination, "text": "*Ada* upgraded to Pro", "idempotency_key": "k-1",
        "title": "New upgrade", "fields": {"Plan": "Pro", "MRR": "$49"},
    }
    values.update(extra)
    return Alert(**values)  # type: ignore[arg-type]


async def test_slack_posts_blocks_to_the_destination_hook(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    assert isinstance(slack, Notifier)
    receipt = await slack.notify(alert())
    assert receipt.provider == "slack"
    assert receipt.response == {"destination": "sales", "answer": "ok"}
    [got] = slack_script.accepted
    assert got["channel"] == "sales"
    assert slack_script.requests[0]["headers"]["content-type"] == "application/json"
    message = got["message"]
    assert message["text"] == "New upgrade: *Ada* upgraded to Pro"
    assert message["blocks"] == [
        {"type": "header", "text": {"type": "plain_text", "text": "New upgrade", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Ada* upgraded to Pro"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Plan*\nPro"},
                                       {"type": "mrkdwn", "text": "*MRR*\n$49"}]},
    ]


async def test_slack_hash_and_bare_names_find_the_same_hook(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    await slack.notify(alert("collections"))
    await slack.notify(alert("#sales"))
    assert [a["channel"] for a in slack_script.accepted] == ["collections", "sales"]


async def test_slack_unknown_destination_without_default_is_permanent(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert("#marketing"))
    error = caught.value
    assert not error.retryable and not error.outcome_unknown
    assert error.code == "unknown_destination"
    assert "'#marketing'" in str(error) and "CAIRN_SLACK_WEBHOOKS" in str(error)
    assert slack_script.requests == []


async def test_slack_unknown_destination_goes_to_the_default_hook(
    slack_server: StandInServer, slack_script: Script,
) -> None:
    settings = slack_settings(slack_server.url,
                              webhook_url=SecretStr(slack_server.url + COLLECTIONS))
    notifier = SlackNotifier(settings)
    try:
        await notifier.notify(alert("#marketing"))
    finally:
        await notifier.aclose()
    assert [a["channel"] for a in slack_script.accepted] == ["collections"]


async def test_slack_respects_block_kit_limits_and_escapes_fields(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    fields = {f"f{i}": f"v{i}" for i in range(14)}
    fields["who"] = "<!channel> & co"
    await slack.notify(alert(title="T" * 400, text="x" * 5000, fields=fields))
    [got] = slack_script.accepted  # the stand-in enforces the limits with invalid_blocks
    blocks = got["message"]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    assert len(blocks[1]["text"]["text"]) == 3000
    assert [len(b["fields"]) for b in blocks[2:]] == [10, 5]
    assert blocks[3]["fields"][-1]["text"] == "*who*\n&lt;!channel&gt; &amp; co"


def test_slack_payload_without_title_or_fields() -> None:
    payload = build_payload(Alert(destination="x", text="hello", idempotency_key="k"))
    assert payload == {"text": "hello", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]}


@pytest.mark.parametrize(("destination", "status", "code"), [
    ("gone", 404, "no_service"),
    ("old", 410, "channel_is_archived"),
])
async def test_slack_dead_hooks_are_permanent_and_name_the_setting(
    slack: SlackNotifier, slack_script: Script, destination: str, status: int, code: str,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert(destination))
    error = caught.value
    assert (error.status, error.code, error.retryable) == (status, code, False)
    assert "CAIRN_SLACK_WEBHOOKS" in str(error)
    assert slack_script.accepted == []


async def test_slack_action_prohibited_is_permanent(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    slack_script.fail(403, "action_prohibited")
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert())
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (
        403, "action_prohibited", False)
    assert "CAIRN_SLACK_WEBHOOKS" in str(caught.value)


async def test_slack_invalid_payload_is_permanent(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    slack_script.fail(400, "invalid_payload")
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert())
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (
        400, "invalid_payload", False)
    assert slack_script.accepted == []


async def test_slack_server_error_is_retryable(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    slack_script.fail(500, "rollup_error")
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert())
    assert caught.value.retryable and not caught.value.outcome_unknown
    assert caught.value.status == 500 and caught.value.code == "rollup_error"


async def test_slack_rate_limit_carries_retry_after(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    slack_script.fail(429, "rate_limited", retry_after="7")
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert())
    assert caught.value.retryable and caught.value.retry_after == 7.0
    assert slack_script.accepted == []


async def test_slack_slow_answer_is_outcome_unknown_after_posting(
    slack: SlackNotifier, slack_script: Script,
) -> None:
    assert slack.idempotent is False
    slack_script.slow(SLOW)
    with pytest.raises(ProviderError) as caught:
        await slack.notify(alert())
    assert caught.value.retryable and caught.value.outcome_unknown
    assert len(slack_script.accepted) == 1


async def test_slack_refused_connection_is_retryable_and_known() -> None:
    notifier = SlackNotifier(SlackSettings(webhook_url=SecretStr(refused_url() + SALES)))
    try:
        with pytest.raises(ProviderError) as caught:
            await notifier.notify(alert("anything"))
    finally:
        await notifier.aclose()
    assert caught.value.retryable and not caught.value.outcome_unknown


def test_slack_settings_read_webhooks_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_SLACK_WEBHOOKS", json.dumps({"sales": "https://h/1"}))
    monkeypatch.setenv("CAIRN_SLACK_TIMEOUT", "4")
    settings = SlackSettings()
    assert settings.webhooks["sales"].get_secret_value() == "https://h/1"
    assert settings.timeout == 4.0 and settings.webhook_url is None
    assert "https://h/1" not in repr(settings)


# ------------------------------------------------------------------------------------ Webhooks

SECRET = "whsec_test_0123456789"


@pytest.fixture
def hooks_script() -> Script:
    return Script()


@pytest.fixture
def hooks_server(hooks_script: Script) -> Iterator[StandInServer]:
    with StandInServer(hooks_app(hooks_script, SECRET)) as server:
        yield server


@pytest.fixture
async def caller() -> AsyncIterator[WebhookCaller]:
    webhooks = WebhookCaller(WebhookSettings(signing_secret=SecretStr(SECRET),
                                             timeout=SHORT_TIMEOUT))
    yield webhooks
    await webhooks.aclose()


def test_signature_verification() -> None:
    body = b'{"contact":"c-1"}'
    now = 1_700_000_000
    header = f"v1={sign(SECRET, now, body)}"
    assert verify_signature(SECRET, str(now), body, header, 300, now=now + 10)
    assert verify_signature(SECRET, now, body.decode(), header, 300, now=now - 10)
    # tampered body, wrong secret, old or future timestamp, missing or malformed headers
    assert not verify_signature(SECRET, now, b'{"contact":"c-2"}', header, 300, now=now)
    assert not verify_signature("other", now, body, header, 300, now=now)
    assert not verify_signature(SECRET, now, body, header, 300, now=now + 301)
    assert not verify_signature(SECRET, now, body, header, 300, now=now - 301)
    assert not verify_signature(SECRET, now + 1, body, header, 300, now=now)
    assert not verify_signature(SECRET, None, body, header, 300, now=now)
    assert not verify_signature(SECRET, "soon", body, header, 300, now=now)
    assert not verify_signature(SECRET, now, body, None, 300, now=now)
    assert not verify_signature(SECRET, now, body, sign(SECRET, now, body), 300, now=now)
    # while a secret rotates, either signature passes
    both = f"v1={sign('old-secret', now, body)}, {header}"
    assert verify_signature(SECRET, now, body, both, 300, now=now)


async def test_webhook_success_is_signed_and_keyed(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    body = json.dumps({"event": "trial_ending", "contact": "c-1"})
    reply = await caller.call("post", hooks_server.url + "/hooks/cairn?token=abc", body,
                              {"X-Tenant": "acme"}, "key-1")
    assert reply.status == 200
    assert reply.json == {"received": True, "id": "evt_0001"} and reply.text is None
    assert reply.headers["content-type"] == "application/json"
    [got] = hooks_script.accepted
    assert got["method"] == "POST" and got["path"] == "/hooks/cairn"
    assert got["key"] == "key-1" and got["body"] == {"event": "trial_ending", "contact": "c-1"}
    headers = got["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["x-tenant"] == "acme"
    assert headers["user-agent"].startswith("Cairn-Webhooks/")
    assert abs(int(headers["x-cairn-timestamp"]) - time.time()) < 5
    assert headers["x-cairn-signature"] == "v1=" + sign(
        SECRET, headers["x-cairn-timestamp"], body.encode())


async def test_webhook_step_headers_cannot_replace_key_or_signature(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    forged = {"idempotency-key": "other", "X-Cairn-Signature": "v1=00", "Content-Type":
              "application/vnd.acme+json"}
    await caller.call("PUT", hooks_server.url + "/h", b"{}", forged, "key-2")
    [got] = hooks_script.accepted
    assert got["key"] == "key-2" and got["method"] == "PUT"
    assert got["headers"]["content-type"] == "application/vnd.acme+json"


async def test_webhook_plain_body_gets_no_json_content_type(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    reply = await caller.call("POST", hooks_server.url + "/text", "name=Ada", {}, "key-3")
    assert reply.text == "thanks" and reply.json is None and not reply.truncated
    [got] = hooks_script.accepted
    assert got["body"] == "name=Ada"
    assert "application/json" not in got["headers"].get("content-type", "")


async def test_webhook_empty_reply_and_empty_body(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    reply = await caller.call("DELETE", hooks_server.url + "/empty", None, {}, "key-4")
    assert (reply.status, reply.json, reply.text) == (204, None, None)
    assert hooks_script.accepted[0]["body"] == ""


async def test_webhook_reply_is_capped(
    caller: WebhookCaller, hooks_server: StandInServer,
) -> None:
    reply = await caller.call("POST", hooks_server.url + "/large", "{}", {}, "key-5")
    assert reply.truncated and reply.json is None
    assert reply.text is not None and len(reply.text) == MAX_REPLY_BYTES


async def test_webhook_redirect_is_not_followed(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await caller.call("POST", hooks_server.url + "/moved", "{}", {}, "key-6")
    error = caught.value
    assert (error.status, error.code, error.retryable) == (302, "redirect", False)
    assert "/elsewhere" in str(error)
    assert [r["path"] for r in hooks_script.requests] == ["/moved"]


async def test_webhook_client_error_is_permanent(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    hooks_script.fail(422, {"error": "unknown event"})
    with pytest.raises(ProviderError) as caught:
        await caller.call("POST", hooks_server.url + "/h", "{}", {}, "key-7")
    assert caught.value.status == 422 and not caught.value.retryable
    assert "unknown event" in str(caught.value)


async def test_webhook_wrong_secret_is_refused_by_the_receiver(
    hooks_server: StandInServer, hooks_script: Script,
) -> None:
    wrong = WebhookCaller(WebhookSettings(signing_secret=SecretStr("not-the-secret")))
    try:
        with pytest.raises(ProviderError) as caught:
            await wrong.call("POST", hooks_server.url + "/h", "{}", {}, "key-8")
    finally:
        await wrong.aclose()
    assert caught.value.status == 401 and not caught.value.retryable
    assert hooks_script.accepted == []


@pytest.mark.parametrize(("status", "retry_after"), [
    (408, None), (425, "2"), (429, "9"), (500, None), (503, "30"),
])
async def test_webhook_retryable_statuses(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
    status: int, retry_after: str | None,
) -> None:
    hooks_script.fail(status, retry_after=retry_after)
    with pytest.raises(ProviderError) as caught:
        await caller.call("POST", hooks_server.url + "/h", "{}", {}, f"key-{status}")
    error = caught.value
    assert error.status == status and error.retryable and not error.outcome_unknown
    assert error.retry_after == (float(retry_after) if retry_after else None)
    assert hooks_script.accepted == []


async def test_webhook_retry_after_slow_answer_is_delivered_once(
    caller: WebhookCaller, hooks_server: StandInServer, hooks_script: Script,
) -> None:
    assert caller.idempotent is True
    hooks_script.slow(SLOW)
    body = json.dumps({"event": "paid"})
    with pytest.raises(ProviderError) as caught:
        await caller.call("POST", hooks_server.url + "/h", body, {}, "key-slow")
    assert caught.value.retryable and caught.value.outcome_unknown
    assert len(hooks_script.accepted) == 1

    reply = await caller.call("POST", hooks_server.url + "/h", body, {}, "key-slow")
    assert reply.json == {"received": True, "id": "evt_0001"}  # the first delivery's answer
    assert len(hooks_script.accepted) == 1
    assert [r["headers"]["idempotency-key"] for r in hooks_script.requests] == [
        "key-slow", "key-slow"]


async def test_webhook_refused_connection_is_retryable_and_known(
    caller: WebhookCaller,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await caller.call("POST", refused_url() + "/h", "{}", {}, "key-9")
    assert caught.value.retryable and not caught.value.outcome_unknown


async def test_webhook_without_secret_or_with_bad_url_is_permanent() -> None:
    unsigned = WebhookCaller(WebhookSettings())
    signed = WebhookCaller(WebhookSettings(signing_secret=SecretStr(SECRET)))
    try:
        with pytest.raises(ProviderError) as no_secret:
            await unsigned.call("POST", "https://example.com/h", "{}", {}, "k")
        with pytest.raises(ProviderError) as bad_url:
            await signed.call("POST", "ftp://example.com/h", "{}", {}, "k")
    finally:
        await unsigned.aclose()
        await signed.aclose()
    assert not no_secret.value.retryable and "CAIRN_WEBHOOK_SIGNING_SECRET" in str(no_secret.value)
    assert not bad_url.value.retryable and bad_url.value.code == "bad_url"


# ------------------------------------------------------------------------------------- HubSpot

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


@pytest.fixture
def hubspot_script() -> Script:
    return Script()


@pytest.fixture
def account() -> HubSpotState:
    return HubSpotState(token=TOKEN, contacts={
        "501": {"email": "ada@example.com", "firstname": "Ada"},
        "502": {"email": "grace@example.com", "firstname": "Grace"},
    }, owners=frozenset({"77"}))


@pytest.fixture
def hubspot_server(hubspot_script: Script, account: HubSpotState) -> Iterator[StandInServer]:
    with StandInServer(hubspot_app(hubspot_script, account,
                                   plan_ops=frozenset({"tasks.create"}))) as server:
        yield server


def hubspot_settings(base: str, **extra: object) -> HubSpotSettings:
    values: dict[str, object] = {"access_token": SecretStr(TOKEN), "base_url": base,
                                 "owner_id": "77", "timeout": SHORT_TIMEOUT}
    values.update(extra)
    return HubSpotSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def hubspot(hubspot_server: StandInServer) -> AsyncIterator[HubSpotTaskSink]:
    sink = HubSpotTaskSink(hubspot_settings(hubspot_server.url))
    yield sink
    await sink.aclose()


def task(key: str = "task-key-1", **extra: object) -> OutgoingTask:
    values: dict[str, object] = {
        "title": "Call Ada about renewal", "idempotency_key": key, "contact_id": "c-1",
        "note": "Card expired twice.", "contact_email": "Ada@Example.com",
        "due_at": datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC), "queue": "collections",
    }
    values.update(extra)
    return OutgoingTask(**values)  # type: ignore[arg-type]


async def test_hubspot_creates_a_task_associated_with_the_contact(
    hubspot: HubSpotTaskSink, hubspot_script: Script, account: HubSpotState,
) -> None:
    assert isinstance(hubspot, TaskSink)
    receipt = await hubspot.create_task(task())
    ops = [r["op"] for r in hubspot_script.requests]
    assert ops == ["tasks.search", "contacts.search", "tasks.create"]
    assert all(r["headers"]["authorization"] == f"Bearer {TOKEN}"
               for r in hubspot_script.requests)
    contact_filter = hubspot_script.requests[1]["json"]["filterGroups"][0]["filters"][0]
    assert contact_filter == {"propertyName": "email", "operator": "EQ",
                              "value": "ada@example.com"}
    [created] = hubspot_script.accepted
    properties = created["request"]["properties"]
    marker = task_marker("task-key-1")
    assert properties == {
        "hs_timestamp": "2030-05-06T07:08:09.000Z",
        "hs_task_subject": "Call Ada about renewal",
        "hs_task_body": f"Card expired twice.\n\nQueue: collections\n\n{marker}",
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "MEDIUM",
        "hs_task_type": "TODO",
        "hubspot_owner_id": "77",
    }
    assert created["request"]["associations"] == [{
        "to": {"id": "501"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
    }]
    assert account.associations == [{"task": created["id"], "contact": "501", "typeId": 204}]
    assert receipt.provider == "hubspot" and receipt.provider_message_id == created["id"]
    assert receipt.response["deduplicated"] is False
    assert receipt.response["hubspot_contact_id"] == "501"


async def test_hubspot_unknown_contact_or_no_email_creates_an_unassociated_task(
    hubspot: HubSpotTaskSink, hubspot_script: Script, account: HubSpotState,
) -> None:
    await hubspot.create_task(task("k-a", contact_email="nobody@example.com"))
    await hubspot.create_task(task("k-b", contact_email=None, due_at=None))
    assert [r["op"] for r in hubspot_script.requests] == [
        "tasks.search", "contacts.search", "tasks.create", "tasks.search", "tasks.create"]
    assert all("associations" not in c["request"] for c in hubspot_script.accepted)
    assert account.associations == []
    stamp = hubspot_script.accepted[1]["request"]["properties"]["hs_timestamp"]
    due = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((due - datetime.now(UTC)).total_seconds()) < 5


async def test_hubspot_second_create_with_the_same_key_finds_the_first(
    hubspot: HubSpotTaskSink, hubspot_script: Script, account: HubSpotState,
) -> None:
    first = await hubspot.create_task(task("same-key"))
    second = await hubspot.create_task(task("same-key"))
    other = await hubspot.create_task(task("other-key"))
    assert second.provider_message_id == first.provider_message_id
    assert second.response["deduplicated"] is True
    assert other.provider_message_id != first.provider_message_id
    assert len(account.tasks) == 2 and len(hubspot_script.accepted) == 2


async def test_hubspot_retry_after_slow_create_finds_the_task(
    hubspot: HubSpotTaskSink, hubspot_script: Script, account: HubSpotState,
) -> None:
    assert hubspot.idempotent is True
    hubspot_script.slow(SLOW)
    with pytest.raises(ProviderError) as caught:
        await hubspot.create_task(task("slow-key"))
    assert caught.value.retryable and caught.value.outcome_unknown
    assert len(account.tasks) == 1

    receipt = await hubspot.create_task(task("slow-key"))
    assert receipt.response["deduplicated"] is True
    assert receipt.provider_message_id == next(iter(account.tasks))
    assert len(account.tasks) == 1


async def test_hubspot_slow_search_is_retryable_and_known(
    hubspot_script: Script, account: HubSpotState,
) -> None:
    app = hubspot_app(hubspot_script, account, plan_ops=frozenset({"tasks.search"}))
    hubspot_script.slow(SLOW)
    with StandInServer(app) as server:
        sink = HubSpotTaskSink(hubspot_settings(server.url))
        try:
            with pytest.raises(ProviderError) as caught:
                await sink.create_task(task())
        finally:
            await sink.aclose()
    assert caught.value.retryable and not caught.value.outcome_unknown
    assert account.tasks == {}


async def test_hubspot_bad_token_is_permanent_and_names_the_setting(
    hubspot_server: StandInServer, account: HubSpotState,
) -> None:
    sink = HubSpotTaskSink(hubspot_settings(hubspot_server.url,
                                            access_token=SecretStr("pat-wrong")))
    try:
        with pytest.raises(ProviderError) as caught:
            await sink.create_task(task())
    finally:
        await sink.aclose()
    error = caught.value
    assert (error.status, error.retryable, error.code) == (401, False, "INVALID_AUTHENTICATION")
    assert "CAIRN_HUBSPOT_ACCESS_TOKEN" in str(error)
    assert account.tasks == {}


async def test_hubspot_without_token_sends_nothing(hubspot_script: Script) -> None:
    sink = HubSpotTaskSink(HubSpotSettings(base_url="http://127.0.0.1:9"))
    try:
        with pytest.raises(ProviderError) as caught:
            await sink.create_task(task())
    finally:
        await sink.aclose()
    assert not caught.value.retryable and "CAIRN_HUBSPOT_ACCESS_TOKEN" in str(caught.value)


async def test_hubspot_validation_error_is_permanent(
    hubspot_server: StandInServer, account: HubSpotState,
) -> None:
    sink = HubSpotTaskSink(hubspot_settings(hubspot_server.url, owner_id="999"))
    try:
        with pytest.raises(ProviderError) as caught:
            await sink.create_task(task())
    finally:
        await sink.aclose()
    error = caught.value
    assert (error.status, error.retryable, error.code) == (400, False, "VALIDATION_ERROR")
    assert "'999' is not a valid owner id" in str(error)
    assert account.tasks == {}


async def test_hubspot_missing_scope_is_permanent(
    hubspot: HubSpotTaskSink, hubspot_script: Script,
) -> None:
    hubspot_script.fail(403, {"status": "error", "category": "MISSING_SCOPES",
                              "message": "This app hasn't been granted all required scopes"})
    with pytest.raises(ProviderError) as caught:
        await hubspot.create_task(task())
    assert caught.value.status == 403 and not caught.value.retryable
    assert caught.value.code == "MISSING_SCOPES"
    assert "crm.objects.contacts.write" in str(caught.value)


async def test_hubspot_rate_limit_carries_retry_after(
    hubspot: HubSpotTaskSink, hubspot_script: Script, account: HubSpotState,
) -> None:
    hubspot_script.fail(429, retry_after="3")
    with pytest.raises(ProviderError) as caught:
        await hubspot.create_task(task())
    error = caught.value
    assert error.retryable and error.retry_after == 3.0 and error.code == "RATE_LIMITS"
    assert account.tasks == {}


async def test_hubspot_server_error_is_retryable(
    hubspot: HubSpotTaskSink, hubspot_script: Script, account: HubSpotState,
) -> None:
    hubspot_script.fail(502)
    with pytest.raises(ProviderError) as caught:
        await hubspot.create_task(task())
    assert caught.value.status == 502 and caught.value.retryable
    assert not caught.value.outcome_unknown
    assert account.tasks == {}


async def test_hubspot_refused_connection_is_retryable_and_known() -> None:
    sink = HubSpotTaskSink(hubspot_settings(refused_url()))
    try:
        with pytest.raises(ProviderError) as caught:
            await sink.create_task(task())
    finally:
        await sink.aclose()
    assert caught.value.retryable and not caught.value.outcome_unknown


async def test_hubspot_stand_in_rejects_a_task_without_a_timestamp(
    hubspot_server: StandInServer,
) -> None:
    async with httpx.AsyncClient(base_url=hubspot_server.url, timeout=2) as client:
        response = await client.post(
            "/crm/v3/objects/tasks", json={"properties": {"hs_task_subject": "x"}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"
    assert "hs_timestamp" in response.json()["message"]
