"""Activity failures reach Temporal histories without personal data (`activities.failures`).

A real SMTP relay (the stand-in) refuses the contact's address quoting it, its phone number and
its name, as relays do; the journey runs on the simulator's workers, and the run's history (the
failure message, the path the run notes) must hold none of them, while the worker's log keeps
the scrubbed detail.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError

from activities.failures import scrubbed_failure
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.smtp import SmtpProvider, SmtpSettings
from cairn.log import configure
from cairn.privacy.scrub import EMAIL_MARK, PHONE_MARK, VALUE_MARK, known_values, scrub
from cairn.store.db import Store
from starter.testing import Simulator, as_journey, parse_scenario
from tests.engine.test_history_privacy import leaks
from tests.standins.smtp import SmtpScript, SmtpStandIn

ADDRESS = "ana.smtp@example.com"
REPLY = f"550 5.1.1 <{ADDRESS}>: no mailbox of Ana Ionescu, call +40 722 123 456"


def test_scrub_takes_out_known_values_addresses_and_numbers() -> None:
    known = known_values("ana@example.com", {"last_name": "Ionescu", "plan": "pro",
                                             "full": "Ana Ionescu"})
    assert known == ["ana@example.com", "Ana Ionescu", "Ionescu"]
    text = ("550 <ANA@example.com> rejected; Ana Ionescu / ionescu; other <bo.b@mail.example.ro>"
            " +1 (415) 555-0100 or 0722 000 111, order 2026-03-02 #42, 3 retries in 120 s")
    assert scrub(text, known) == (
        f"550 <{VALUE_MARK}> rejected; {VALUE_MARK} / {VALUE_MARK}; other <{EMAIL_MARK}>"
        f" {PHONE_MARK} or {PHONE_MARK}, order 2026-03-02 #42, 3 retries in 120 s")


def test_a_scrubbed_failure_keeps_type_retry_decision_and_details() -> None:
    original = ApplicationError("refused ana@example.com", "email", type="ProviderRejected",
                                non_retryable=True, next_retry_delay=timedelta(seconds=3))
    failure = scrubbed_failure(original, [])
    assert (failure.message, failure.type, failure.non_retryable, failure.details,
            failure.next_retry_delay) == (
        f"refused {EMAIL_MARK}", "ProviderRejected", True, ("email",), timedelta(seconds=3))
    plain = scrubbed_failure(KeyError("Ionescu"), ["Ionescu"])
    assert (plain.message, plain.type, plain.non_retryable) == (
        f"'{VALUE_MARK}'", "KeyError", False)


async def test_a_relay_refusing_the_address_leaves_no_address_in_the_history(
    simulator: Simulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO")  # structlog to stderr, wherever earlier tests left it
    script = SmtpScript()
    script.rcpt_reply(REPLY)
    journey = as_journey({
        "key": "welcome", "name": "Welcome", "trigger": {"event": "signed_up"},
        "start": "hello",
        "steps": {"hello": {"send": {"channel": "email", "template": "hi"}, "next": "end"}},
        "templates": {"hi": {"email": {"subject": "Hi", "body": "Hello"}}},
    })
    with SmtpStandIn(script) as relay:
        def channels(store: Store) -> ChannelSet:
            providers = dict(local_channels(store).providers)
            providers["email"] = SmtpProvider(SmtpSettings(
                host="127.0.0.1", port=relay.port, timeout=2.0,
                from_address="team@mail.cairn.example"))
            return ChannelSet(providers=providers)

        report = await simulator.run(
            journey,
            parse_scenario({
                "now": "2026-03-02T09:00:00Z",
                "contact": {"id": "c-7", "email": ADDRESS, "phone": "+40722123456",
                            "consent": {"marketing": True},
                            "attributes": {"first_name": "Ana", "last_name": "Ionescu"}},
                "events": [{"at": "+0s", "event": "signed_up"}]}),
            keep_histories=True, channels=channels,
        )
    assert [(s.channel, s.status) for s in report.sends] == [("email", "failed")]
    assert "550" in report.sends[0].reason  # the store keeps the relay's answer
    failures = [event.activity_task_failed_event_attributes.failure.message
                for runs in report.histories.values() for history in runs
                for event in history.events
                if event.HasField("activity_task_failed_event_attributes")]
    assert failures, "the refusal reached the history as an activity failure"
    assert any("550 5.1.1" in message and VALUE_MARK in message for message in failures)
    found = leaks(report.histories, {ADDRESS, "Ionescu", "722 123 456"})
    assert not found, "\n".join(found)
    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "activity.failed" in logged and ADDRESS not in logged
