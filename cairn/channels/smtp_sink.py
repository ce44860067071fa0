"""A local SMTP server that keeps every message as a file: email for `cairn dev`, no account needed.

`cairn dev` points the SMTP provider at this sink by default, so a journey's emails go through
the real provider code (MIME, headers, Message-ID, SMTP conversation) and land in a directory
instead of an inbox. `read_sink` reads them back for `cairn outbox`, and any mail client opens
the `.eml` files as they are.

Each file is named `<UTC timestamp>-<hash of the Message-ID>.eml`, so `ls` sorts by arrival and
the name says which message it is. A file is written under a temporary name and renamed, so a
reader never sees half a message. The envelope, which the message itself does not carry, goes
in front as `Return-Path` and one `Delivered-To` per recipient, as a mail server delivering to
a mailbox would write it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from cairn.log import get_logger

__all__ = ["SinkMessage", "SmtpSink", "read_sink"]

log = get_logger(__name__)

_STAMP = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class SinkMessage:
    """One message the sink received. `sender` is the From header; `to` the envelope recipients."""

    message_id: str | None
    sender: str
    to: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    received_at: datetime
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)


def _file_name(received_at: datetime, message_id: str, content: bytes) -> str:
    key = message_id or hashlib.sha256(content).hexdigest()
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{received_at.strftime(_STAMP)}-{digest}.eml"


class _StoreHandler:
    """aiosmtpd handler: accepts every recipient and writes each message to the directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        received_at = datetime.now(UTC)
        parsed = BytesParser(policy=policy.default).parsebytes(content, headersonly=True)
        message_id = str(parsed.get("Message-ID", "")).strip()
        trace = [f"Return-Path: <{envelope.mail_from or ''}>"]
        trace += [f"Delivered-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        data = ("\r\n".join(trace) + "\r\n").encode("utf-8") + content
        name = _file_name(received_at, message_id, content)
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / name)
        log.info("smtp_sink.received", file=name, message_id=message_id,
                 recipients=len(envelope.rcpt_tos))
        return "250 2.0.0 Message stored"


class SmtpSink:
    """The dev SMTP server: `start()` listens on host:port, `stop()` closes it.

    aiosmtpd's Controller runs the server on its own thread and event loop, so the sink works
    the same under `cairn dev`'s synchronous CLI and inside async code.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> None:
        if self._controller is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_port_free()
        # aiosmtpd logs every connection at INFO, its own readiness probe included: noise in the
        # `cairn dev` console, where the sink's own events are logged instead.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        controller = Controller(
            _StoreHandler(self.directory), hostname=self.host, port=self.port,
            server_hostname="cairn-dev-sink", ident="Cairn dev SMTP sink",
        )
        try:
            controller.start()
        except OSError as error:
            raise self._port_error(error) from error
        self._controller = controller
        log.info("smtp_sink.started", host=self.host, port=self.port, directory=str(self.directory))

    def _check_port_free(self) -> None:
        """Fail at once on a taken port: the Controller only reports it after its ready timeout."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as error:
                raise self._port_error(error) from error

    def _port_error(self, error: OSError) -> RuntimeError:
        return RuntimeError(
            f"the dev SMTP sink cannot listen on {self.host}:{self.port} ({error}); another "
            "mail catcher (Mailpit?) may hold the port: stop it, or set CAIRN_SMTP_PORT to a "
            "free port"
        )

    def stop(self) -> None:
        if self._controller is None:
            return
        self._controller.stop()
        self._controller = None
        log.info("smtp_sink.stopped", host=self.host, port=self.port)

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    # Base64 and quoted-printable bodies carry MIME's canonical CRLF inside the encoding.
    return cast(str, cast(Any, part).get_content()).replace("\r\n", "\n")


def _read_one(path: Path) -> SinkMessage:
    # Files keep the wire's CRLF; parsed with Python's newlines so bodies read as plain text.
    data = path.read_bytes().replace(b"\r\n", b"\n")
    message = cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(data))
    headers: dict[str, str] = {}
    for name, value in message.items():
        headers.setdefault(name, str(value))
    recipients = [str(v) for v in message.get_all("Delivered-To", [])]
    if not recipients:
        recipients = [str(v) for v in message.get_all("To", [])]
    metadata = {
        name[len("X-Cairn-"):]: value for name, value in headers.items()
        if name.lower().startswith("x-cairn-")
    }
    stamp = path.name.split("-", 1)[0]
    try:
        received_at = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        received_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    message_id = message.get("Message-ID")
    return SinkMessage(
        message_id=str(message_id).strip() if message_id else None,
        sender=str(message.get("From", "")),
        to=recipients,
        subject=str(message.get("Subject", "")),
        text=_body(message, "plain"),
        html=_body(message, "html"),
        headers=headers,
        received_at=received_at,
        path=path,
        metadata=metadata,
    )


def read_sink(directory: Path, limit: int | None = None) -> list[SinkMessage]:
    """The messages in a sink directory, oldest first; with `limit`, only the latest that many.

    A directory that does not exist yet holds no mail; a file that cannot be parsed is skipped
    with a warning rather than hiding every other message.
    """
    if not directory.is_dir():
        return []
    paths = sorted(p for p in directory.glob("*.eml") if p.is_file())
    if limit is not None:
        paths = paths[-limit:] if limit > 0 else []
    messages: list[SinkMessage] = []
    for path in paths:
        try:
            messages.append(_read_one(path))
        except (OSError, ValueError, LookupError) as error:
            log.warning("smtp_sink.unreadable", file=str(path), error=repr(error))
    return messages
