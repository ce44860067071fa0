"""Google's OAuth2 token endpoint and FCM's HTTP v1 `messages:send`, for tests.

The token endpoint checks the service-account assertion like Google: RS256 signature against the
account's PUBLIC key, the jwt-bearer grant type, the FCM scope, `aud` equal to the token URI, an
issuer that is the account, and an iat/exp pair no longer than an hour. It issues opaque tokens
with `expires_in`; `expire_tokens()` revokes them so the next send meets a 401.

`messages:send` checks the Bearer token and the `Message` shape (one target, string-only `data`,
no reserved data keys) and answers errors as `google.rpc.Status` JSON with an `FcmError` detail,
like the real API: tokens in `unregistered` get 404 UNREGISTERED, tokens in `malformed` get 400
INVALID_ARGUMENT naming `message.token`, tokens in `other_sender` get 403 SENDER_ID_MISMATCH.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standins.server import Script

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_PATH = "/token"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                503: "UNAVAILABLE"}
FCM_CODES = {400: "INVALID_ARGUMENT", 404: "UNREGISTERED", 429: "QUOTA_EXCEEDED",
             500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class ServiceAccountKey:
    """A generated service account: `info(token_uri)` is the JSON a Firebase console hands out."""

    client_email: str
    project_id: str
    private_key: rsa.RSAPrivateKey
    private_key_id: str = field(default_factory=lambda: secrets.token_hex(20))

    @classmethod
    def generate(cls, project_id: str = "cairn-test") -> ServiceAccountKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(f"cairn-push@{project_id}.iam.gserviceaccount.com", project_id, key)

    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def info(self, token_uri: str) -> dict[str, str]:
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_pem(),
            "client_email": self.client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }


@dataclass
class FcmState:
    """What the stand-in knows and saw. `token_requests` holds each exchange's claims."""

    account: ServiceAccountKey
    script: Script = field(default_factory=Script)
    expires_in: int = 3599
    tokens: dict[str, float] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    rejected_assertions: list[str] = field(default_factory=list)
    unregistered: set[str] = field(default_factory=set)
    malformed: set[str] = field(default_factory=set)
    other_sender: set[str] = field(default_factory=set)

    def expire_tokens(self) -> None:
        """Revoke every issued token, as Google does when a key is rotated or a token expires."""
        self.tokens.clear()

    def reset(self) -> None:
        self.script = Script()
        self.expires_in = 3599
        self.tokens.clear()
        self.token_requests.clear()
        self.rejected_assertions.clear()
        self.unregistered.clear()
        self.malformed.clear()
        self.other_sender.clear()


def rpc_error(status: int, message: str, fcm_code: str | None = None,
              violations: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A google.rpc.Status body as FCM v1 sends it."""
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR, "errorCode": fcm_code})
    if violations:
        details.append({"@type": BAD_REQUEST, "fieldViolations": violations})
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _violation(field_name: str, description: str) -> JSONResponse:
    body = rpc_error(400, description, "INVALID_ARGUMENT",
                     [{"field": field_name, "description": description}])
    return JSONResponse(body, status_code=400)


def _check_message(body: Any) -> JSONResponse | None:
    """The parts of Message validation a sender can get wrong; None when the shape is right."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return _violation("message", "Invalid JSON payload received. 'message' is required.")
    message = body["message"]
    unknown = set(message) - {"token", "topic", "condition", "notification", "data", "android",
                              "apns", "webpush", "fcm_options", "name"}
    if unknown:
        return _violation("message", f"Invalid JSON payload received. Unknown name {unknown}")
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return _violation("message", "Recipient of the message is not set."
                          if not targets else "Exactly one of token, topic, condition")
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or any(
        not isinstance(v, str) for v in notification.values()
    ):
        return _violation("message.notification", "notification fields must be strings")
    data = message.get("data", {})
    if not isinstance(data, dict):
        return _violation("message.data", "data must be a map of strings")
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            return _violation(f"message.data[{index}].value",
                              f"Invalid value at 'message.data[{index}].value' (TYPE_STRING)")
        if key in RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
            return _violation(f"message.data[{index}].key", f"Invalid data key: {key}")
    return None


def build_fcm_app(state: FcmState) -> Starlette:
    """Token endpoint at `/token` and `POST /v1/projects/{project}/messages:send`."""
    public_key = state.account.private_key.public_key()

    async def token(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _oauth_error("invalid_request", "Content-Type must be form-urlencoded")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type",
                                f"Invalid grant_type: {form.get('grant_type')}")
        assertion = str(form.get("assertion") or "")
        try:
            claims = jwt.decode(
                assertion, public_key, algorithms=["RS256"], audience=str(request.url),
                issuer=state.account.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidTokenError as error:
            state.rejected_assertions.append(f"{type(error).__name__}: {error}")
            return _oauth_error("invalid_grant", f"Invalid JWT: {error}")
        if SCOPE not in str(claims["scope"]).split():
            state.rejected_assertions.append(f"scope {claims['scope']}")
            return _oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience.")
        if claims["exp"] - claims["iat"] > 3600 or claims["iat"] > time.time() + 60:
            state.rejected_assertions.append("lifetime")
            return _oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived "
                                "token (60 minutes) and in a reasonable timeframe.")
        state.token_requests.append({"claims": claims,
                                     "kid": jwt.get_unverified_header(assertion).get("kid")})
        access = f"ya29.{secrets.token_urlsafe(24)}"
        state.tokens[access] = time.time() + state.expires_in
        return JSONResponse({"access_token": access, "expires_in": state.expires_in,
                             "token_type": "Bearer"})

    async def send(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        auth = request.headers.get("authorization", "")
        state.script.requests.append({"path": request.url.path, "authorization": auth,
                                      "body": body})
        bearer = auth[7:] if auth.startswith("Bearer ") else ""
        if not bearer or state.tokens.get(bearer, 0.0) < time.time():
            return JSONResponse(rpc_error(
                401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential."), 401)
        if request.path_params["project"] != state.account.project_id:
            return JSONResponse(rpc_error(
                403, "Permission 'cloudmessaging.messages.create' denied on resource."), 403)
        invalid = _check_message(body)
        if invalid is not None:
            return invalid
        message = body["message"]
        target = message.get("token")
        if target in state.unregistered:
            return JSONResponse(rpc_error(404, "Requested entity was not found.",
                                          "UNREGISTERED"), 404)
        if target in state.malformed:
            return _violation("message.token",
                              "The registration token is not a valid FCM registration token")
        if target in state.other_sender:
            return JSONResponse(rpc_error(403, "SenderId mismatch", "SENDER_ID_MISMATCH"), 403)
        plan = state.script.next_plan()
        if plan is not None and plan.status is not None:
            error_body = plan.body if plan.body is not None else rpc_error(
                plan.status, "The service is currently unavailable."
                if plan.status >= 500 else "Quota exceeded.", FCM_CODES.get(plan.status))
            headers = {"Retry-After": plan.retry_after} if plan.retry_after else None
            return JSONResponse(error_body, plan.status, headers=headers)
        name = f"projects/{state.account.project_id}/messages/0:{secrets.token_hex(8)}"
        if plan is not None and plan.delay:
            if plan.accept:
                state.script.accepted.append({"name": name, "message": message})
            await asyncio.sleep(plan.delay)
            if not plan.accept:
                return JSONResponse(rpc_error(503, "The service is currently unavailable.",
                                              "UNAVAILABLE"), 503)
            return JSONResponse({"name": name})
        state.script.accepted.append({"name": name, "message": message})
        return JSONResponse({"name": name})

    return Starlette(routes=[
        Route(TOKEN_PATH, token, methods=["POST"]),
        Route("/v1/projects/{project}/messages:send", send, methods=["POST"]),
    ])
