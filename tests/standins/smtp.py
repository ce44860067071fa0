"""A scriptable SMTP relay: aiosmtpd on loopback, answering like Postfix or a provider's relay.

Tests queue what the next RCPT or DATA meets (`rcpt_reply("451 4.3.0 ...")`, `slow_rcpt(seconds)`,
`data_reply("554 ...")`, `slow_data(seconds)` which stores the message and answers late,
`drop_after_data()` which stores it and hangs up) and read what the relay took
(`script.received`, with the envelope, the parsed message, whether it came over TLS and who
authenticated). `self_signed_certificate` makes a certificate for 127.0.0.1/localhost so
STARTTLS and implicit TLS run for real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections import deque
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.standins.server import free_port


@dataclass
class Received:
    """One message the relay accepted (or rejected at the final reply, in `script.rejected`)."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    message: EmailMessage
    tls: bool
    auth_user: str | None


@dataclass
class DataPlan:
    reply: str | None = None  # the final reply instead of 250
    delay: float = 0.0  # stored first, then answered this late
    drop: bool = False  # stored, then the connection is cut without a reply


@dataclass
class SmtpScript:
    rcpt_replies: deque[str] = field(default_factory=deque)
    rcpt_delays: deque[float] = field(default_factory=deque)
    data_plans: deque[DataPlan] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    rejected: list[Received] = field(default_factory=list)
    auth_attempts: list[tuple[str, str, str]] = field(default_factory=list)  # mech, user, pass
    commands: list[str] = field(default_factory=list)

    def rcpt_reply(self, reply: str) -> None:
        self.rcpt_replies.append(reply)

    def slow_rcpt(self, seconds: float) -> None:
        """The next RCPT is answered (250) this late: a relay stalling before any content."""
        self.rcpt_delays.append(seconds)

    def data_reply(self, reply: str) -> None:
        self.data_plans.append(DataPlan(reply=reply))

    def slow_data(self, seconds: float) -> None:
        self.data_plans.append(DataPlan(delay=seconds))

    def drop_after_data(self) -> None:
        self.data_plans.append(DataPlan(drop=True))


class _Handler:
    def __init__(self, script: SmtpScript) -> None:
        self.script = script

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        self.script.commands.append("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        self.script.commands.append("RCPT")
        if self.script.rcpt_delays:
            await asyncio.sleep(self.script.rcpt_delays.popleft())
        if self.script.rcpt_replies:
            return self.script.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.script.commands.append("DATA")
        content = envelope.original_content or b""
        transport = server.transport
        auth = session.auth_data
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            content=content,
            message=cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(
                content.replace(b"\r\n", b"\n"))),
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            auth_user=auth.login.decode() if isinstance(auth, LoginPassword) else None,
        )
        plan = self.script.data_plans.popleft() if self.script.data_plans else DataPlan()
        if plan.reply is not None and not plan.reply.startswith("2"):
            self.script.rejected.append(received)
            return plan.reply
        self.script.received.append(received)
        if plan.drop and transport is not None:
            cast(asyncio.Transport, transport).abort()
            return "250 2.0.0 never seen"
        if plan.delay:
            await asyncio.sleep(plan.delay)
        return plan.reply or "250 2.0.0 Ok: queued as STANDIN1"


class _Authenticator:
    def __init__(self, script: SmtpScript, username: str, password: str) -> None:
        self.script = script
        self.username = username
        self.password = password

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.script.auth_attempts.append((mechanism, user, password))
        ok = (user, password) == (self.username, self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 and localhost; the certificate is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cairn-standin")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


class SmtpStandIn:
    """Runs the scripted relay on 127.0.0.1 on its own thread; `port` is where it listens.

    `security` "starttls" offers STARTTLS (AUTH only after it, like real relays); "tls" speaks
    TLS from the first byte. With `credentials`, MAIL is refused until AUTH succeeds.
    """

    def __init__(
        self, script: SmtpScript, *, security: Literal["none", "starttls", "tls"] = "none",
        certificate: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.script = script
        self.port = free_port()
        kwargs: dict[str, Any] = {"server_hostname": "relay.standin.test"}
        if security != "none":
            if certificate is None:
                raise ValueError("a TLS stand-in needs a certificate")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            kwargs["ssl_context" if security == "tls" else "tls_context"] = context
            kwargs["require_starttls"] = security == "starttls"
        if credentials is not None:
            kwargs["authenticator"] = _Authenticator(script, *credentials)
            # aiosmtpd only counts STARTTLS as TLS, so over implicit TLS it must be told to
            # offer AUTH anyway (and then does not insist on it; tests check `auth_user`).
            kwargs["auth_require_tls"] = security != "tls"
            kwargs["auth_required"] = security != "tls"
        self.controller = Controller(_Handler(script), hostname="127.0.0.1", port=self.port,
                                     **kwargs)

    def __enter__(self) -> SmtpStandIn:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
