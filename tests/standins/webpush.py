"""A push service (RFC 8030) with the browser behind it, for tests.

As a push service it checks what a real one checks: a `TTL` header, `Content-Encoding:
aes128gcm`, a body of at most 4096 bytes, valid `Topic`/`Urgency` values, and VAPID (RFC 8292):
the JWT in `t=` verifies with the key in `k=`, `aud` is this service's origin, `exp` is in the
future and at most 24 hours away, `sub` is a contact URI, and `k` is the key the subscription was
made with (403 otherwise). Unknown subscriptions get 404, unsubscribed ones 410.

As the browser it DECRYPTS the body with the subscription's private key and auth secret, using
its own RFC 8291 code (not `http_ece`, which the provider uses), so a test sees the payload that
would reach the service worker and an encoding mistake on either side cannot cancel out.

A message carrying a `Topic` replaces a pending one with the same topic (`pending`), which is
what makes a resend with the same topic harmless while the browser is offline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.standins.server import Script

TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
URGENCIES = frozenset({"very-low", "low", "normal", "high"})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """What a browser keeps for one subscription: the ECDH key pair and the auth secret."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: bytes | None = None

    @property
    def p256dh(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint)

    def keys(self) -> dict[str, str]:
        """`PushSubscription.toJSON().keys`."""
        return {"p256dh": b64url(self.p256dh), "auth": b64url(self.auth)}


class DecryptError(ValueError):
    pass


def decrypt(body: bytes, subscription: BrowserSubscription) -> bytes:
    """RFC 8291 decryption as a user agent does it: one aes128gcm record."""
    if len(body) < 21:
        raise DecryptError("body shorter than the aes128gcm header")
    salt, (record_size,), id_length = body[:16], struct.unpack("!L", body[16:20]), body[20]
    sender_key = body[21:21 + id_length]
    ciphertext = body[21 + id_length:]
    if id_length != 65:
        raise DecryptError(f"keyid must be the 65-byte sender key, got {id_length} bytes")
    if len(ciphertext) > record_size:
        raise DecryptError("RFC 8291 allows one record; the body holds more")
    sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_key)
    shared = subscription.private_key.exchange(ec.ECDH(), sender)
    key_info = b"WebPush: info\x00" + subscription.p256dh + sender_key
    ikm = HKDF(hashes.SHA256(), 32, subscription.auth, key_info).derive(shared)
    cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
    try:
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except InvalidTag as error:
        raise DecryptError("authentication tag mismatch: wrong keys or corrupted body") from error
    unpadded = padded.rstrip(b"\x00")
    if not unpadded.endswith(b"\x02"):
        raise DecryptError("the last record lacks the 0x02 delimiter")
    return unpadded[:-1]


@dataclass
class PushServiceState:
    """Subscriptions, what arrived (`script.accepted`: decrypted payloads) and what is pending."""

    script: Script = field(default_factory=Script)
    subscriptions: dict[str, BrowserSubscription] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)

    def subscribe(self, application_server_key: bytes | None = None) -> BrowserSubscription:
        """A new subscription, like `pushManager.subscribe({applicationServerKey})`."""
        sub = BrowserSubscription(
            id=secrets.token_urlsafe(12), private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16), application_server_key=application_server_key,
        )
        self.subscriptions[sub.id] = sub
        return sub

    def unsubscribe(self, sub: BrowserSubscription) -> None:
        self.gone.add(sub.id)

    def reset(self) -> None:
        self.script = Script()
        self.subscriptions.clear()
        self.gone.clear()
        self.pending.clear()
        self.rejected.clear()


def _vapid_problem(
    header: str, audience: str, subscription: BrowserSubscription,
) -> tuple[int, str] | None:
    """(status, reason) when the VAPID Authorization fails; None when it holds."""
    if not header.startswith("vapid "):
        return 401, "Authorization must use the vapid scheme"
    params = dict(
        part.strip().split("=", 1) for part in header[6:].split(",") if "=" in part
    )
    token, key = params.get("t", ""), params.get("k", "")
    if not token or not key:
        return 401, "vapid Authorization needs t= and k="
    try:
        raw_key = b64url_decode(key)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)
        claims = jwt.decode(token, public, algorithms=["ES256"], audience=audience,
                            options={"require": ["aud", "exp", "sub"]})
    except (ValueError, jwt.InvalidTokenError) as error:
        return 401, f"invalid VAPID token: {error}"
    if claims["exp"] > time.time() + 24 * 3600:
        return 401, "VAPID exp is more than 24 hours away"
    if not str(claims["sub"]).startswith(("mailto:", "https:")):
        return 401, "VAPID sub must be a mailto: or https: URI"
    expected = subscription.application_server_key
    if expected is not None and raw_key != expected:
        return 403, "VAPID key does not match the subscription's applicationServerKey"
    return None


def build_push_service_app(state: PushServiceState) -> Starlette:
    """`POST /push/{id}` is a subscription endpoint; `Location` names `/message/{id}`."""

    async def push(request: Request) -> Response:
        sub_id = request.path_params["sub"]
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        state.script.requests.append({"subscription": sub_id, "headers": headers,
                                      "size": len(body)})

        def refuse(status: int, reason: str) -> Response:
            state.rejected.append(reason)
            return Response(reason, status_code=status, media_type="text/plain")

        if sub_id in state.gone:
            return refuse(410, "push subscription has unsubscribed or expired")
        subscription = state.subscriptions.get(sub_id)
        if subscription is None:
            return refuse(404, "no such subscription")
        audience = f"{request.url.scheme}://{request.url.netloc}"
        problem = _vapid_problem(headers.get("authorization", ""), audience, subscription)
        if problem is not None:
            response = refuse(*problem)
            if problem[0] == 401:
                response.headers["WWW-Authenticate"] = "vapid"
            return response
        ttl = headers.get("ttl", "")
        if not ttl.isdigit():
            return refuse(400, "TTL header is required")
        if headers.get("content-encoding") != "aes128gcm":
            return refuse(415, "Content-Encoding must be aes128gcm")
        if len(body) > 4096:
            return refuse(413, "payload exceeds 4096 bytes")
        topic = headers.get("topic")
        if topic is not None and not TOPIC.match(topic):
            return refuse(400, "Topic must be at most 32 base64url characters")
        urgency = headers.get("urgency", "normal")
        if urgency not in URGENCIES:
            return refuse(400, f"Urgency {urgency!r} is not valid")
        plan = state.script.next_plan()
        if plan is not None and plan.status is not None:
            extra = {"Retry-After": plan.retry_after} if plan.retry_after else None
            content = plan.body if isinstance(plan.body, str) else "push service error"
            return Response(content, plan.status, headers=extra, media_type="text/plain")
        try:
            plaintext = decrypt(body, subscription)
        except (DecryptError, ValueError) as error:
            return refuse(400, f"stand-in browser could not decrypt: {error}")
        message_id = secrets.token_urlsafe(16)
        delivered = {
            "subscription": sub_id, "id": message_id, "topic": topic, "urgency": urgency,
            "ttl": int(ttl), "payload": json.loads(plaintext),
        }
        if plan is None or not plan.delay or plan.accept:
            state.script.accepted.append(delivered)
            if topic is not None:
                state.pending.setdefault(sub_id, {})[topic] = delivered
        if plan is not None and plan.delay:
            await asyncio.sleep(plan.delay)
            if not plan.accept:
                return Response("push service overloaded", 503, media_type="text/plain")
        location = f"{audience}/message/{message_id}"
        return Response(status_code=201, headers={"Location": location, "TTL": ttl})

    return Starlette(routes=[Route("/push/{sub}", push, methods=["POST"])])
