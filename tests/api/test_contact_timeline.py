"""`GET /v1/contacts/{id}/timeline`: what a contact did and what Cairn did to it, newest first,
with why a message did not go; the console's contact page reads the same service function."""

from __future__ import annotations

import httpx

from cairn.contact_timeline import WHY_NOT_SENT, why_not_sent
from cairn.store.db import Store
from tests.api_support import bearer, new_key
from tests.console.seed import seed


async def test_the_timeline_lists_entries_exits_messages_feedback_and_tasks_newest_first(
    api: httpx.AsyncClient, store: Store,
) -> None:
    await seed(store)
    answer = await api.get("/v1/contacts/flo/timeline")
    assert answer.status_code == 200
    body = answer.json()
    items = body["items"]
    assert body["contact_id"] == "flo" and body["truncated"] is False
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    # The reminder went at the moment the run completed: equal times keep entry order.
    assert [(i["kind"], i["title"], i["status"]) for i in items] == [
        ("exit", "left cart-abandonment: completed", "completed"),
        ("message", "email cart-reminder-similar", "sent"),
        ("step", "reached email_reminder", "next"),
        ("step", "reached push_or_email", "else"),
        ("step", "reached still_in_cart", "then"),
        ("step", "reached wait_2h", "next"),
        ("entry", "entered cart-abandonment", "completed"),
    ]
    # Each step with how it was left (the route, what it means, where to) and when.
    steps = {i["step"]: i for i in items if i["kind"] == "step"}
    assert steps["push_or_email"]["reason"] == (
        "left by else (the condition did not hold) to email_reminder")
    assert steps["email_reminder"]["reason"] == "left by next to the end"
    assert steps["wait_2h"]["detail"]["left_at"] == steps["still_in_cart"]["at"]
    assert steps["wait_2h"]["workflow_id"] == "journey/cart-abandonment/flo"
    message = next(i for i in items if i["kind"] == "message")
    assert message["feedback"] == ["delivered", "opened"]
    assert message["reason"] is None and message["step"] == "email_reminder"
    assert message["workflow_id"] == "journey/cart-abandonment/flo"

    hal = (await api.get("/v1/contacts/hal/timeline")).json()["items"]
    skipped = next(i for i in hal if i["kind"] == "message")
    assert skipped["status"] == "skipped:consent"
    assert skipped["reason"].startswith("no consent for this category of message")

    ana = (await api.get("/v1/contacts/ana/timeline")).json()["items"]
    assert {(i["kind"], i["status"]) for i in ana} >= {("task", "open"),
                                                        ("exit", "converted")}
    [caught] = [i for i in ana if i["kind"] == "step"]
    assert (caught["step"], caught["status"], caught["reason"]) == (
        "wait_2h", "exit:converted", "caught here by the exit goal converted")
    ida = (await api.get("/v1/contacts/ida/timeline")).json()["items"]
    [waiting] = [i for i in ida if i["kind"] == "step"]
    assert waiting["status"] == "here" and waiting["reason"].startswith("reached, not left yet")
    assert (await api.get("/v1/contacts/ana/timeline?limit=1")).json()["truncated"] is True


async def test_an_unknown_contact_is_a_404_and_a_write_key_is_refused(
    api: httpx.AsyncClient, store: Store,
) -> None:
    missing = await api.get("/v1/contacts/nobody/timeline")
    assert missing.status_code == 404 and "no contact 'nobody'" in missing.json()["detail"]
    write = await new_key(store, "write")
    refused = await api.get("/v1/contacts/flo/timeline", headers=bearer(write))
    assert refused.status_code == 403


def test_every_skip_reason_a_send_writes_has_a_why() -> None:
    from cairn.reports import SKIP_REASONS

    for reason in SKIP_REASONS:
        assert f"skipped:{reason}" in WHY_NOT_SENT
    assert why_not_sent("sent", None) is None
    assert why_not_sent("skipped:geo", None) == "skipped: geo"
    assert why_not_sent("failed", "422 invalid address") == (
        "the provider refused it, or the template did not render (422 invalid address)")
