"""The SMTP provider against a real relay (aiosmtpd on loopback), and the dev sink.

Every failure test asserts the classification the delivery activity relies on for
exactly-once: what failed before the content went out is definite, a reply is definite, and
only silence after the content is `outcome_unknown`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.send import DeliveryActivities
from cairn.channels.base import OutgoingMessage, Provider, ProviderError
from cairn.channels.registry import ChannelSet, local_channels
from cairn.channels.smtp import SmtpProvider, SmtpSettings, message_id_for
from cairn.channels.smtp_sink import SmtpSink, read_sink
from cairn.contact import ContactSnapshot
from cairn.contracts import PROVIDER_UNAVAILABLE, SendRequest, StepContext
from cairn.delivery_policy import DeliveryPolicy
from cairn.journey import Send
from cairn.store import contacts, deliveries
from cairn.store.db import Store
from tests.standins.server import free_port
from tests.standins.smtp import SmtpScript, SmtpStandIn, self_signed_certificate

UNSUBSCRIBE = "<https://cairn.example/u/abc123>, <mailto:unsubscribe@example.com?subject=abc123>"


def email(key: str = "delivery-1", to: str = "ana@example.com", **parts: str) -> OutgoingMessage:
    return OutgoingMessage(
        channel="email", to=to,
        parts=parts or {"subject": "Welcome, Ana", "body": "Hello Ana.\n.\nBye",
                        "html": "<html><body><p>Hello <b>Ana</b></p></body></html>",
                        "preheader": "Your account is ready"},
        category="marketing", idempotency_key=key, contact_id="c-1",
        headers={"List-Unsubscribe": UNSUBSCRIBE,
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        metadata={"delivery_id": "d-42", "journey": "onboarding"},
    )


def settings(port: int, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1", "port": port, "timeout": 2.0, "helo_name": "worker.test",
        "from_address": "Cairn Team <team@mail.cairn.example>",
    }
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


async def failure(provider: SmtpProvider, message: OutgoingMessage) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.send(message)
    return caught.value


@pytest.fixture
def script() -> SmtpScript:
    return SmtpScript()


@pytest.fixture
def relay(script: SmtpScript) -> Iterator[SmtpStandIn]:
    with SmtpStandIn(script) as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


async def test_plain_send_delivers_a_multipart_message_with_stable_id(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    provider = SmtpProvider(settings(relay.port))
    assert isinstance(provider, Provider)
    receipt = await provider.send(email())
    again = await provider.send(email())
    other = await provider.send(email(key="delivery-2"))

    first, second, third = script.received
    assert first.mail_from == "team@mail.cairn.example"
    assert first.rcpt_tos == ["ana@example.com"]
    assert not first.tls and first.auth_user is None
    msg = first.message
    assert msg["Subject"] == "Welcome, Ana"
    assert msg["From"] == "Cairn Team <team@mail.cairn.example>"
    assert msg["To"] == "ana@example.com"
    assert msg["List-Unsubscribe"] == UNSUBSCRIBE
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Cairn-Delivery-Id"] == "d-42"
    assert msg["X-Cairn-Journey"] == "onboarding"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Hello Ana.\n.\nBye\n"  # the lone dot survived dot-stuffing
    html_text = html.get_content()
    assert "<p>Hello <b>Ana</b></p>" in html_text
    assert html_text.index("Your account is ready") < html_text.index("Hello")
    assert "display:none" in html_text

    expected_id = message_id_for("delivery-1", "mail.cairn.example")
    assert msg["Message-ID"] == second.message["Message-ID"] == expected_id
    assert third.message["Message-ID"] == message_id_for("delivery-2", "mail.cairn.example")
    assert third.message["Message-ID"] != expected_id
    assert receipt.provider == "smtp"
    assert receipt.provider_message_id == expected_id == again.provider_message_id
    assert other.provider_message_id != expected_id
    assert receipt.response["code"] == 250
    assert "queued as STANDIN1" in receipt.response["message"]


async def test_text_only_non_ascii_message_stays_seven_bit(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    provider = SmtpProvider(settings(relay.port, reply_to="help@cairn.example"))
    await provider.send(email(subject="Grüße, Zoë", body="Ça va? 🚀"))

    (got,) = script.received
    assert got.content.isascii()  # no 8BITMIME needed from the relay
    assert got.message.get_content_type() == "text/plain"
    assert got.message["Subject"] == "Grüße, Zoë"
    assert "Content-Transfer-Encoding: base64" in got.content.decode()
    assert got.message.get_content() == "Ça va? 🚀\r\n"  # MIME's canonical line break
    assert got.message["Reply-To"] == "help@cairn.example"
    assert "BODY=8BITMIME" not in got.mail_options


async def test_starttls_with_auth_reaches_the_relay_encrypted(
    script: SmtpScript, certificate: tuple[Path, Path],
) -> None:
    with SmtpStandIn(script, security="starttls", certificate=certificate,
                     credentials=("cairn", "s3cret")) as relay:
        provider = SmtpProvider(settings(
            relay.port, security="starttls", username="cairn", password="s3cret",
            cert_bundle=certificate[0],
        ))
        receipt = await provider.send(email())

    (got,) = script.received
    assert got.tls and got.auth_user == "cairn"
    assert script.auth_attempts[-1][1:] == ("cairn", "s3cret")
    assert receipt.provider_message_id == got.message["Message-ID"]


async def test_starttls_without_certificate_checks_and_wrong_password_is_permanent(
    script: SmtpScript, certificate: tuple[Path, Path],
) -> None:
    with SmtpStandIn(script, security="starttls", certificate=certificate,
                     credentials=("cairn", "s3cret")) as relay:
        provider = SmtpProvider(settings(
            relay.port, security="starttls", username="cairn", password="wrong",
            validate_certs=False,
        ))
        error = await failure(provider, email())

    assert (error.retryable, error.outcome_unknown, error.invalid_recipient) == (
        False, False, False)
    assert error.status == 535
    assert script.auth_attempts and all(a[2] == "wrong" for a in script.auth_attempts)
    assert script.received == [] and "MAIL" not in script.commands


async def test_untrusted_certificate_is_a_permanent_configuration_error(
    script: SmtpScript, certificate: tuple[Path, Path],
) -> None:
    with SmtpStandIn(script, security="starttls", certificate=certificate) as relay:
        error = await failure(SmtpProvider(settings(relay.port, security="starttls")), email())

    assert not error.retryable and not error.outcome_unknown
    assert error.code == "tls_certificate"
    assert "CAIRN_SMTP_CERT_BUNDLE" in str(error)
    assert script.received == []


async def test_starttls_demanded_from_a_relay_without_it_is_permanent(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    error = await failure(SmtpProvider(settings(relay.port, security="starttls")), email())

    assert not error.retryable and error.code == "starttls_unsupported"
    assert "CAIRN_SMTP_SECURITY" in str(error)
    assert script.received == []


async def test_implicit_tls_with_auth(script: SmtpScript, certificate: tuple[Path, Path]) -> None:
    with SmtpStandIn(script, security="tls", certificate=certificate,
                     credentials=("cairn", "s3cret")) as relay:
        provider = SmtpProvider(settings(
            relay.port, security="tls", username="cairn", password="s3cret",
            cert_bundle=certificate[0],
        ))
        await provider.send(email())

    (got,) = script.received
    assert got.tls and got.auth_user == "cairn"
    assert got.message["Subject"] == "Welcome, Ana"


async def test_451_on_rcpt_is_retryable_and_nothing_was_sent(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.rcpt_reply("451 4.3.0 Mailbox temporarily unavailable")
    error = await failure(SmtpProvider(settings(relay.port)), email())

    assert (error.retryable, error.outcome_unknown, error.invalid_recipient) == (
        True, False, False)
    assert (error.status, error.code) == (451, "4.3.0")
    assert script.received == [] and "DATA" not in script.commands


async def test_550_on_rcpt_is_permanent_and_marks_the_recipient_invalid(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.rcpt_reply("550 5.1.1 <nobody@example.com>: Recipient address rejected")
    error = await failure(SmtpProvider(settings(relay.port)), email(to="nobody@example.com"))

    assert (error.retryable, error.outcome_unknown, error.invalid_recipient) == (
        False, False, True)
    assert (error.status, error.code) == (550, "5.1.1")
    assert script.received == []


async def test_550_policy_block_on_rcpt_is_permanent_but_not_a_dead_address(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.rcpt_reply("550 5.7.1 Relaying denied")
    error = await failure(SmtpProvider(settings(relay.port)), email())

    assert not error.retryable and not error.invalid_recipient
    assert error.code == "5.7.1"


async def test_554_on_data_is_permanent(relay: SmtpStandIn, script: SmtpScript) -> None:
    script.data_reply("554 5.6.0 Message content rejected")
    error = await failure(SmtpProvider(settings(relay.port)), email())

    assert (error.retryable, error.outcome_unknown, error.invalid_recipient) == (
        False, False, False)
    assert error.status == 554
    assert len(script.rejected) == 1 and script.received == []


async def test_451_after_data_is_retryable_and_definite(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.data_reply("451 4.7.1 Greylisted, try again")
    error = await failure(SmtpProvider(settings(relay.port)), email())

    assert error.retryable and not error.outcome_unknown
    assert error.status == 451


async def test_late_final_reply_is_outcome_unknown_and_the_relay_has_the_message(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.slow_data(1.0)
    error = await failure(SmtpProvider(settings(relay.port, timeout=0.3)), email())

    assert error.retryable and error.outcome_unknown and not error.invalid_recipient
    assert len(script.received) == 1
    assert script.received[0].message["Message-ID"] == message_id_for(
        "delivery-1", "mail.cairn.example")


async def test_timeout_before_the_content_is_retryable_and_definite(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.slow_rcpt(1.0)
    error = await failure(SmtpProvider(settings(relay.port, timeout=0.3)), email())

    assert (error.retryable, error.outcome_unknown) == (True, False)
    assert error.code == "rcpt_failed"
    assert script.received == [] and "DATA" not in script.commands


async def test_connection_dropped_after_content_is_outcome_unknown(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    script.drop_after_data()
    error = await failure(SmtpProvider(settings(relay.port)), email())

    assert error.retryable and error.outcome_unknown
    assert len(script.received) == 1


async def test_refused_connection_is_retryable_and_definite() -> None:
    error = await failure(SmtpProvider(settings(free_port())), email())

    assert (error.retryable, error.outcome_unknown, error.invalid_recipient) == (
        True, False, False)
    assert error.code == "connect_failed"


async def test_bad_addresses_and_reserved_headers_fail_before_connecting(
    relay: SmtpStandIn, script: SmtpScript,
) -> None:
    provider = SmtpProvider(settings(relay.port))
    bad_to = await failure(provider, email(to="not an address"))
    assert not bad_to.retryable and bad_to.invalid_recipient

    hijack = OutgoingMessage(
        channel="email", to="ana@example.com", parts={"subject": "x", "body": "y"},
        category="transactional", idempotency_key="k", contact_id="c",
        headers={"Bcc": "spy@example.com"},
    )
    reserved = await failure(provider, hijack)
    assert not reserved.retryable and reserved.code == "invalid_header"

    injected = OutgoingMessage(
        channel="email", to="ana@example.com", parts={"subject": "x", "body": "y"},
        category="transactional", idempotency_key="k", contact_id="c",
        headers={"List-Unsubscribe": "<https://x>\r\nBcc: spy@example.com"},
    )
    assert (await failure(provider, injected)).code == "invalid_header"
    assert script.commands == []


async def test_sink_stores_what_the_provider_sends(tmp_path: Path) -> None:
    port = free_port()
    with SmtpSink(tmp_path / "mail", "127.0.0.1", port):
        provider = SmtpProvider(settings(port))
        await provider.send(email())
        await provider.send(email(key="delivery-2", to="bo@example.com", subject="Second",
                                  body="Only text"))

    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 2 and files[0].name < files[1].name
    first, second = read_sink(tmp_path / "mail")
    assert first.subject == "Welcome, Ana"
    assert first.message_id == message_id_for("delivery-1", "mail.cairn.example")
    assert first.sender == "Cairn Team <team@mail.cairn.example>"
    assert first.to == ["ana@example.com"]
    assert first.text == "Hello Ana.\n.\nBye\n"
    assert first.html is not None and "<p>Hello <b>Ana</b></p>" in first.html
    assert first.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first.metadata == {"Delivery-Id": "d-42", "Journey": "onboarding"}
    assert first.received_at <= second.received_at
    assert (second.subject, second.to, second.html) == ("Second", ["bo@example.com"], None)
    assert second.text == "Only text\n"
    assert [m.subject for m in read_sink(tmp_path / "mail", limit=1)] == ["Second"]
    assert read_sink(tmp_path / "nowhere") == []


async def test_sink_on_a_taken_port_says_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    with SmtpSink(tmp_path, "127.0.0.1", port), pytest.raises(RuntimeError, match="SMTP_PORT"):
        SmtpSink(tmp_path, "127.0.0.1", port).start()


# --------------------------------------------------------------------------- unconfirmed sends

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def _delivery(store: Store, relay: SmtpStandIn, on_unconfirmed: str,
                    ) -> tuple[DeliveryActivities, SendRequest]:
    snapshot = ContactSnapshot.model_validate({
        "id": "c-1", "timezone": "UTC", "email": "ana@example.com",
        "consent": {"marketing": True}, "attributes": {"first_name": "Ana"},
    })
    async with store.session() as s, s.begin():
        await contacts.create_contact(s, snapshot, NOW)
    providers = dict(local_channels(store).providers)
    providers["email"] = SmtpProvider(settings(relay.port))
    policy = DeliveryPolicy.model_validate({"unconfirmed": {"email": on_unconfirmed}})
    activities = DeliveryActivities(store, ChannelSet(providers=providers), policy)
    send = Send.model_validate({"channel": "email", "template": "receipt",
                                "category": "transactional"})
    request = SendRequest(
        context=StepContext(workflow_id="journey/orders/c-1", journey_key="orders",
                            contact_id="c-1", step="receipt", now=NOW),
        send=send, channel="email",
        template={"email": {"subject": "Your receipt", "body": "Thanks, {{ contact.first_name }}"}},
    )
    return activities, request


async def _row(store: Store) -> deliveries.Delivery:
    async with store.session() as s:
        [row] = await deliveries.deliveries_for(s, workflow_id="journey/orders/c-1")
    return row


async def test_interrupted_smtp_session_is_unconfirmed_and_kept_under_keep(
    sqlite_store: Store, relay: SmtpStandIn, script: SmtpScript,
) -> None:
    activities, request = await _delivery(sqlite_store, relay, "keep")
    script.drop_after_data()

    outcome = await ActivityEnvironment().run(activities.deliver_message, request)
    retried = await ActivityEnvironment().run(activities.deliver_message, request)

    assert outcome.status == retried.status == "unconfirmed"
    assert len(script.received) == 1
    row = await _row(sqlite_store)
    assert (row.status, row.planned_at, row.sent_at, row.accepted_at) == (
        "unconfirmed", NOW, NOW, None)
    assert row.reason is not None and "outcome unknown" in row.reason


async def test_interrupted_smtp_session_is_delivered_again_under_resend(
    sqlite_store: Store, relay: SmtpStandIn, script: SmtpScript,
) -> None:
    activities, request = await _delivery(sqlite_store, relay, "resend")
    script.drop_after_data()

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.deliver_message, request)
    assert raised.value.type == PROVIDER_UNAVAILABLE  # Temporal retries: the retry resends
    assert (await _row(sqlite_store)).status == "unconfirmed"
    outcome = await ActivityEnvironment().run(activities.deliver_message, request)

    assert outcome.status == "sent"
    first, second = script.received
    assert first.message["Message-ID"] == second.message["Message-ID"]  # the same message
    row = await _row(sqlite_store)
    assert row.status == "sent" and row.accepted_at is not None and row.planned_at == NOW
    assert row.response is not None and row.response["resends"] == 1
