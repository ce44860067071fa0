"""Email over SMTP: any relay (Postfix, SES/Postmark/Mailgun SMTP endpoints, Mailpit, the dev sink).

SMTP has no idempotency key, so exactly-once hangs on knowing *where* a send failed. The session
is driven one command at a time (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, content) and
the phase decides the classification:

- anything that fails before the message content is written is definite: nothing was sent, so
  4xx replies, refused connections, timeouts and drops are retryable and 5xx replies permanent;
- once the content is on the wire, a reply (250, 4xx, 5xx) is still definite, but a timeout or
  a dropped connection means the relay may have queued the message: `outcome_unknown`.

aiosmtplib's `data()` sends the DATA command and the content in one call, which would hide
whether a timeout came before or after the content went out; so DATA is sent as a command and
the content written to the connection's protocol, with the same dot-stuffing `data()` does.

The Message-ID is derived from the idempotency key, so every retry carries the same id: a
duplicate that slips through (a retry after an unknown outcome that a human forced) threads as
one message in most clients, and delivery webhooks that echo the Message-ID map back to one
delivery. One connection per send keeps failures isolated; SMTP relays answer in milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Literal

import aiosmtplib
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import OutgoingMessage, ProviderError, Receipt
from cairn.log import get_logger

__all__ = ["SmtpProvider", "SmtpSettings", "build_email", "message_id_for"]

log = get_logger(__name__)

NAME = "smtp"

# 5xx replies on RCPT that mean the mailbox itself is dead (RFC 5321 §4.2.2): unknown user,
# user not local, mailbox name not allowed. 550 is also used for policy blocks, which carry
# an enhanced status 5.7.x (RFC 3463) and are not the address's fault.
_DEAD_MAILBOX_CODES = frozenset({550, 551, 553})
_DEAD_MAILBOX_STATUSES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"})
_ENHANCED_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ':'

# Headers the provider writes itself; a template or step setting them would corrupt the MIME
# structure or the threading/dedup the Message-ID provides.
_RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "sender",
    "return-path", "content-type", "content-transfer-encoding", "content-disposition",
})

# Bodies are quoted-printable/base64 whenever they are not plain ASCII, so no relay needs
# 8BITMIME; headers are RFC 2047-encoded unless the envelope needs SMTPUTF8.
_POLICY_7BIT = SMTP.clone(cte_type="7bit")
_POLICY_UTF8 = SMTPUTF8.clone(cte_type="7bit")

Phase = Literal["connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "content"]


class SmtpSettings(BaseSettings):
    """Where and how to relay email. Defaults point at `cairn dev`'s sink (and Mailpit)."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_SMTP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 1025
    security: Literal["none", "starttls", "tls"] = Field(
        default="none",
        description="none: plain SMTP (local relays only); starttls: upgrade after connecting "
        "(port 587); tls: implicit TLS from the first byte (port 465)",
    )
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "Cairn <cairn@localhost>"
    reply_to: str | None = None
    bounce_address: str | None = Field(
        default=None,
        description="envelope sender (MAIL FROM, where bounces go); default: the From address",
    )
    helo_name: str | None = Field(
        default=None, description="name sent in EHLO; default: this machine's FQDN",
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds per SMTP command")
    validate_certs: bool = True
    cert_bundle: Path | None = Field(
        default=None, description="CA bundle (PEM) to trust, e.g. for a relay's private CA",
    )


def message_id_for(idempotency_key: str, domain: str) -> str:
    """A Message-ID that is the same for every retry of one send (RFC 5322 msg-id form)."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    return f"<{digest}@{domain}>"


def _permanent(message: str, *, code: str, invalid_recipient: bool = False) -> ProviderError:
    return ProviderError(NAME, message, retryable=False, code=code,
                         invalid_recipient=invalid_recipient)


def _mailbox(value: str, what: str) -> tuple[str, str]:
    """(display name, addr-spec) of one address, or a permanent error naming what is wrong."""
    if "\r" in value or "\n" in value:
        raise _permanent(f"{what} {value!r} contains a line break", code="invalid_address",
                         invalid_recipient=what == "recipient")
    name, addr = parseaddr(value)
    local, _, domain = addr.rpartition("@")
    if not local or not domain or any(c.isspace() for c in addr):
        raise _permanent(f"{what} {value!r} is not an email address", code="invalid_address",
                         invalid_recipient=what == "recipient")
    return name, addr


def _envelope_address(addr: str) -> tuple[str, bool]:
    """The address as MAIL/RCPT carry it, and whether it needs SMTPUTF8.

    A non-ASCII domain is IDNA-encoded so any relay accepts it; only a non-ASCII local part
    needs the relay's SMTPUTF8 extension (RFC 6531).
    """
    local, _, domain = addr.rpartition("@")
    with contextlib.suppress(UnicodeError):  # left as is; the relay judges it
        domain = domain.encode("idna").decode("ascii")
    ascii_addr = f"{local}@{domain}"
    return ascii_addr, not ascii_addr.isascii()


def _with_preheader(html_body: str, preheader: str) -> str:
    """Inbox preview text: a hidden block first in the body, where clients read the preview."""
    block = (
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all;'
        f'font-size:1px;line-height:1px;color:transparent">{html.escape(preheader)}</div>'
    )
    match = re.search(r"<body\b[^>]*>", html_body, flags=re.IGNORECASE)
    if match is None:
        return block + html_body
    return html_body[: match.end()] + block + html_body[match.end():]


def _header_key(key: str) -> str:
    """`delivery_id` -> `Delivery-Id`, so metadata reads as ordinary header names."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", key) if w]
    return "-".join(w[:1].upper() + w[1:] for w in words)


def _one_line(value: str) -> str:
    return " ".join(value.splitlines()).strip()


def build_email(
    message: OutgoingMessage, settings: SmtpSettings, *, utf8: bool = False,
) -> EmailMessage:
    """The MIME message for one send: text, html or multipart/alternative, with our headers.

    Raises a permanent `ProviderError` for what no retry can fix: no body at all, a header
    that is malformed or would override one this provider owns.
    """
    subject = message.parts.get("subject", "")
    text = message.parts.get("body")
    html_body = message.parts.get("html")
    if not text and not html_body:
        raise _permanent("email has neither a `body` nor an `html` part; add one to the template",
                         code="empty_message")
    preheader = message.parts.get("preheader")
    if html_body and preheader:
        html_body = _with_preheader(html_body, preheader)

    _, from_addr = _mailbox(settings.from_address, "from address")
    _mailbox(message.to, "recipient")
    domain = from_addr.rpartition("@")[2]

    email = EmailMessage(policy=_POLICY_UTF8 if utf8 else _POLICY_7BIT)
    email["From"] = settings.from_address
    email["To"] = message.to
    email["Subject"] = _one_line(subject)
    email["Date"] = format_datetime(datetime.now(UTC))
    email["Message-ID"] = message_id_for(message.idempotency_key, domain)
    if settings.reply_to:
        email["Reply-To"] = settings.reply_to
    for name, value in message.headers.items():
        if not _HEADER_NAME.match(name):
            raise _permanent(f"header name {name!r} is not a valid RFC 5322 field name",
                             code="invalid_header")
        if name.lower() in _RESERVED_HEADERS:
            raise _permanent(f"header {name!r} is set by the SMTP provider itself; remove it "
                             "from the message headers", code="invalid_header")
        if "\r" in value or "\n" in value:
            raise _permanent(f"header {name!r} contains a line break", code="invalid_header")
        del email[name]  # a per-message Reply-To replaces the configured one
        email[name] = value
    for key, value in message.metadata.items():
        suffix = _header_key(key)
        if suffix:
            email[f"X-Cairn-{suffix}"] = _one_line(str(value))

    if text and html_body:
        email.set_content(text)
        email.add_alternative(html_body, subtype="html")
    elif html_body:
        email.set_content(html_body, subtype="html")
    else:
        email.set_content(text or "")
    return email


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA content as RFC 5321 §4.5.2 wants it: CRLF lines, leading dots doubled, `.`."""
    payload = re.sub(rb"\r\n|\r|\n", b"\r\n", payload)
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", payload) + b".\r\n"


def _enhanced_status(text: str) -> str | None:
    match = _ENHANCED_STATUS.match(text)
    return ".".join(match.groups()) if match else None


def _dead_mailbox(code: int, enhanced: str | None) -> bool:
    """Whether a 5xx RCPT reply says the address itself is dead, not that policy refused it.

    An enhanced status decides when it is specific (5.1.1 unknown user, 5.1.2 unknown domain,
    5.1.3 bad syntax, 5.1.10 null MX, 5.2.1 mailbox disabled vs 5.7.1 policy, 5.2.2 full);
    a generic 5.0.0 or none at all falls back to the reply code.
    """
    if enhanced and enhanced != "5.0.0":
        return enhanced in _DEAD_MAILBOX_STATUSES
    return code in _DEAD_MAILBOX_CODES


def _cause_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@dataclass
class _Session:
    """Where the conversation got to; read when something fails."""

    phase: Phase = "connect"


class SmtpProvider:
    """Sends email through an SMTP relay, one connection per message.

    Not idempotent: relays do not de-duplicate, so an unknown outcome is never retried blindly.
    """

    name = NAME
    channels: tuple[str, ...] = ("email",)
    idempotent = False

    def __init__(self, settings: SmtpSettings | None = None) -> None:
        self.settings = settings or SmtpSettings()

    async def aclose(self) -> None:
        """Nothing to release: each send opens and closes its own connection."""

    async def send(self, message: OutgoingMessage) -> Receipt:
        if message.channel != "email":
            raise _permanent(f"channel {message.channel!r} cannot be sent over SMTP",
                             code="wrong_channel")
        s = self.settings
        _, from_addr = _mailbox(s.from_address, "from address")
        _, to_addr = _mailbox(message.to, "recipient")
        _, bounce_addr = _mailbox(s.bounce_address, "bounce address") if s.bounce_address else (
            "", from_addr)
        sender, sender_utf8 = _envelope_address(bounce_addr)
        recipient, recipient_utf8 = _envelope_address(to_addr)
        utf8 = sender_utf8 or recipient_utf8
        email = build_email(message, s, utf8=utf8)
        message_id = str(email["Message-ID"])
        content = _dot_stuffed(email.as_bytes())

        client = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout, local_hostname=s.helo_name,
            use_tls=s.security == "tls", start_tls=False, validate_certs=s.validate_certs,
            cert_bundle=str(s.cert_bundle) if s.cert_bundle else None,
        )
        session = _Session()
        try:
            reply = await self._converse(client, session, sender, recipient, utf8, content)
        except ProviderError:
            await self._hang_up(client, session, polite=True)
            raise
        except Exception as error:
            # After a reply the conversation is still in step and QUIT is courteous; after a
            # timeout or a drop a late reply could be misread as QUIT's, so just hang up.
            in_step = isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 400
            await self._hang_up(client, session, polite=in_step)
            raise self._classify(error, session.phase) from error
        else:
            await self._hang_up(client, session, polite=True)
        finally:
            client.close()  # a no-op unless cancelled mid-conversation
        log.info("smtp.sent", message_id=message_id, to_domain=recipient.rpartition("@")[2],
                 reply=reply.code)
        return Receipt(
            provider=NAME, provider_message_id=message_id,
            response={"code": reply.code, "message": reply.message, "message_id": message_id,
                      "host": s.host, "port": s.port},
        )

    async def _converse(
        self, client: aiosmtplib.SMTP, session: _Session, sender: str, recipient: str,
        utf8: bool, content: bytes,
    ) -> aiosmtplib.SMTPResponse:
        s = self.settings
        session.phase = "connect"
        await client.connect()
        session.phase = "ehlo"
        await self._greet(client)
        if s.security == "starttls":
            session.phase = "starttls"
            if not client.supports_extension("starttls"):
                raise _permanent(
                    f"{s.host}:{s.port} does not offer STARTTLS; set CAIRN_SMTP_SECURITY=tls "
                    "for an implicit-TLS port (465) or none for a plain local relay",
                    code="starttls_unsupported")
            await client.starttls()
            session.phase = "ehlo"
            await self._greet(client)
        if s.username:
            session.phase = "auth"
            if not client.supports_extension("auth"):
                raise _permanent(
                    f"{s.host}:{s.port} offers no AUTH on this connection; most relays only "
                    "offer it over TLS (CAIRN_SMTP_SECURITY=starttls or tls)",
                    code="auth_unsupported")
            password = s.password.get_secret_value() if s.password else ""
            await client.login(s.username, password)
        if utf8 and not client.supports_extension("smtputf8"):
            raise _permanent(
                f"the address needs SMTPUTF8 (a non-ASCII local part) and {s.host}:{s.port} "
                "does not support it", code="smtputf8_unsupported")
        options = ["SMTPUTF8"] if utf8 else []
        encoding = "utf-8" if utf8 else "ascii"
        session.phase = "mail"
        await client.mail(sender, options=options, encoding=encoding)
        session.phase = "rcpt"
        await client.rcpt(recipient, encoding=encoding)
        session.phase = "data"
        start = await client.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost after DATA")
        session.phase = "content"
        protocol.write(content)
        reply = await protocol.read_response(timeout=s.timeout)
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    @staticmethod
    async def _greet(client: aiosmtplib.SMTP) -> None:
        """EHLO, falling back to HELO for the rare relay without ESMTP."""
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()

    async def _hang_up(self, client: aiosmtplib.SMTP, session: _Session, *, polite: bool) -> None:
        """QUIT when the conversation is in step; otherwise just drop the line.

        The message's fate is settled by then, so nothing here may raise.
        """
        if not client.is_connected:
            return
        if not polite:
            client.close()
            return
        try:
            await client.quit(timeout=min(self.settings.timeout, 5.0))
        except Exception as error:  # the send already succeeded or failed on its own
            log.debug("smtp.quit_failed", error=repr(error), phase=session.phase)
            client.close()

    def _classify(self, error: Exception, phase: Phase) -> ProviderError:
        s = self.settings
        where = f"{s.host}:{s.port} during {phase.upper()}"
        if isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 400:
            return self._from_reply(error.code, error.message, phase, where)
        for cause in _cause_chain(error):
            if isinstance(cause, ssl.SSLCertVerificationError):
                return _permanent(
                    f"TLS certificate of {s.host} not trusted ({cause.verify_message}); set "
                    "CAIRN_SMTP_CERT_BUNDLE to its CA, or CAIRN_SMTP_VALIDATE_CERTS=false for a "
                    "local relay", code="tls_certificate")
        if phase == "content":
            # The content went out and no verdict came back: the relay may have queued it.
            return ProviderError(
                NAME, f"no reply from {where} after the message was sent ({error!r}); it may "
                "have been accepted", retryable=True, outcome_unknown=True, code="no_reply")
        if isinstance(error, aiosmtplib.SMTPNotSupported | ValueError):
            return _permanent(f"{where}: {error}", code="unsupported")
        if isinstance(error, aiosmtplib.SMTPException) and not isinstance(
            error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError
            | aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPResponseException,
        ):
            # aiosmtplib's own refusals (no AUTH method in common, already on TLS): config.
            return _permanent(f"{where}: {error}", code="smtp_client")
        return ProviderError(NAME, f"{where} failed before the message was sent: {error!r}",
                             retryable=True, code=f"{phase}_failed")

    @staticmethod
    def _from_reply(code: int, text: str, phase: Phase, where: str) -> ProviderError:
        """A reply is always definite: the relay told us whether it took the message."""
        enhanced = _enhanced_status(text)
        detail = f"{where}: {code} {_one_line(text)[:300]}"
        if 400 <= code < 500:
            return ProviderError(NAME, detail, retryable=True, status=code,
                                 code=enhanced or str(code))
        dead_mailbox = phase == "rcpt" and _dead_mailbox(code, enhanced)
        return ProviderError(NAME, detail, retryable=False, status=code,
                             code=enhanced or str(code), invalid_recipient=dead_mailbox)
