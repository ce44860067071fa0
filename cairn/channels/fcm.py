"""Mobile push through Firebase Cloud Messaging's HTTP v1 API.

FCM v1 takes a short-lived OAuth2 access token, not a static key. The token comes from Google's
service-account flow (a JWT signed with the account's RSA key, exchanged at the token URI), which
is done here by hand with PyJWT so the only credential Cairn needs is the service-account JSON.
The token lives about an hour; it is cached and refreshed a minute early, behind one lock so a
burst of concurrent sends triggers one exchange, not one each. A 401 on send means the token was
revoked or expired early: it is refreshed once and the same request sent again in the same call
(nothing went out on a 401, so resending is safe).

FCM errors are `google.rpc.Status` JSON; `details[].errorCode` (type `FcmError`) decides the
outcome, because the HTTP status alone does not: 400 is both "this token is garbage" (drop it) and
"our payload is wrong" (our bug). FCM has no idempotency key, so the provider is not idempotent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import (
    HttpClientHolder,
    OutgoingMessage,
    ProviderError,
    Receipt,
    error_from_transport,
    retry_after_seconds,
)
from cairn.log import get_logger

log = get_logger(__name__)

PROVIDER = "fcm"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME = 3600
"""Google refuses assertions that live longer than an hour."""
REFRESH_EARLY = 60.0
"""Seconds before expiry at which a cached token is replaced, so no request carries a token that
expires in flight."""

INVALID_RECIPIENT_CODES = frozenset({"UNREGISTERED"})
RETRYABLE_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


class FcmSettings(BaseSettings):
    """Firebase service account and endpoints (`CAIRN_FCM_*`).

    Set one of `service_account_file` (path to the JSON downloaded from the Firebase console) or
    `service_account_json` (its content, for secret stores that inject values, not files).
    """

    model_config = SettingsConfigDict(env_prefix="CAIRN_FCM_", extra="ignore")

    service_account_file: Path | None = None
    service_account_json: SecretStr | None = None
    project_id: str | None = None
    base_url: str = "https://fcm.googleapis.com"
    token_uri: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a Google service-account key that the token exchange needs."""

    client_email: str
    private_key: RSAPrivateKey
    private_key_id: str | None
    token_uri: str
    project_id: str


def _config_error(message: str) -> ProviderError:
    return ProviderError(PROVIDER, message, retryable=False, code="config")


def load_service_account(settings: FcmSettings) -> ServiceAccount:
    """Reads and checks the service-account JSON; every failure names the setting to fix."""
    if settings.service_account_json is not None:
        raw = settings.service_account_json.get_secret_value()
        source = "CAIRN_FCM_SERVICE_ACCOUNT_JSON"
    elif settings.service_account_file is not None:
        source = f"CAIRN_FCM_SERVICE_ACCOUNT_FILE ({settings.service_account_file})"
        try:
            raw = settings.service_account_file.read_text(encoding="utf-8")
        except OSError as error:
            raise _config_error(f"cannot read {source}: {error}") from error
    else:
        raise _config_error(
            "no service account: set CAIRN_FCM_SERVICE_ACCOUNT_FILE to the JSON key from Firebase "
            "console > Project settings > Service accounts (or CAIRN_FCM_SERVICE_ACCOUNT_JSON)"
        )
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise _config_error(f"{source} is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise _config_error(f"{source} is not a JSON object")
    missing = [k for k in ("client_email", "private_key") if not data.get(k)]
    if missing:
        raise _config_error(
            f"{source} lacks {', '.join(missing)}: use a service-account key "
            "(\"type\": \"service_account\"), not an API key or a google-services.json"
        )
    try:
        key = load_pem_private_key(str(data["private_key"]).encode(), password=None)
    except (ValueError, TypeError) as error:
        raise _config_error(f"{source} private_key is not a PEM private key: {error}") from error
    if not isinstance(key, RSAPrivateKey):
        raise _config_error(f"{source} private_key is not an RSA key")
    project = settings.project_id or data.get("project_id")
    if not project:
        raise _config_error(
            f"no Firebase project: {source} has no project_id; set CAIRN_FCM_PROJECT_ID"
        )
    return ServiceAccount(
        client_email=str(data["client_email"]),
        private_key=key,
        private_key_id=str(data["private_key_id"]) if data.get("private_key_id") else None,
        token_uri=settings.token_uri or str(data.get("token_uri") or GOOGLE_TOKEN_URI),
        project_id=str(project),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    """The answer as a dict; a proxy in front of Google may answer with HTML or nothing."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class FcmProvider(HttpClientHolder):
    """Sends one notification per message with `POST /v1/projects/{project}/messages:send`.

    `clock` is monotonic seconds: token lifetimes are relative (`expires_in`), so a wall-clock
    jump must not make a fresh token look stale or a stale one fresh. Tests inject it.
    """

    name = PROVIDER
    channels: tuple[str, ...] = ("push",)
    idempotent = False

    def __init__(
        self,
        settings: FcmSettings,
        client: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._hold_client(client)
        self._timeout = httpx.Timeout(settings.timeout)
        self._clock = clock
        self._account: ServiceAccount | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def account(self) -> ServiceAccount:
        """Loaded on first use, like every provider's credentials: a process that never sends
        push need not have a Firebase key."""
        if self._account is None:
            self._account = load_service_account(self.settings)
        return self._account

    # ------------------------------------------------------------------ access token

    def assertion(self) -> str:
        """The signed JWT Google exchanges for an access token (wall-clock iat/exp)."""
        account = self.account
        now = int(time.time())
        claims = {
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)

    def _cached(self) -> str | None:
        if self._token and self._clock() < self._token_expires - REFRESH_EARLY:
            return self._token
        return None

    async def access_token(self, stale: str | None = None) -> str:
        """A valid token; `stale` is one the API just refused, which must not be handed back.

        Waiters on the lock re-check the cache, so concurrent callers share the first caller's
        exchange, and a 401 seen by many sends at once leads to one refresh.
        """
        token = self._cached()
        if token and token != stale:
            return token
        async with self._lock:
            token = self._cached()
            if token and token != stale:
                return token
            return await self._exchange()

    async def _exchange(self) -> str:
        account = self.account
        form = {"grant_type": JWT_BEARER, "assertion": self.assertion()}
        started = self._clock()
        try:
            response = await self._client.post(
                account.token_uri, data=form, timeout=self._timeout,
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as error:
            # No message went out whatever happened to the token request: safe to retry.
            raise ProviderError(
                PROVIDER, f"token endpoint {account.token_uri} unreachable: {error!r}",
                retryable=True, code="token_unavailable",
            ) from error
        answer = _json(response)
        token = answer.get("access_token")
        if not response.is_success or not isinstance(token, str) or not token:
            raise _token_error(response, answer, account)
        lifetime = answer.get("expires_in", ASSERTION_LIFETIME)
        lifetime = float(lifetime) if isinstance(lifetime, int | float) else ASSERTION_LIFETIME
        self._token = token
        self._token_expires = started + lifetime
        log.info("fcm.token_refreshed", account=account.client_email, expires_in=lifetime)
        return token

    # ------------------------------------------------------------------ send

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The v1 `Message`. `data` values must all be strings (FCM rejects anything else);
        metadata keys get a `cairn_` prefix so they can never hit FCM's reserved keys."""
        title = message.parts.get("title", "")
        body = message.parts.get("body", "")
        if not title and not body:
            raise ProviderError(
                PROVIDER, "the push has no text: the template must render a `title` or a `body` "
                "part for the push channel", retryable=False, code="empty_body",
            )
        notification = {"title": title, "body": body}
        if message.parts.get("image"):
            notification["image"] = message.parts["image"]
        data = {f"cairn_{k}": str(v) for k, v in message.metadata.items()}
        if message.parts.get("url"):
            data["url"] = message.parts["url"]
        fcm_message: dict[str, Any] = {"token": message.to, "notification": notification}
        if data:
            fcm_message["data"] = data
        return {"message": fcm_message}

    async def send(self, message: OutgoingMessage) -> Receipt:
        body = self.payload(message)
        account = self.account
        url = (f"{self.settings.base_url.rstrip('/')}/v1/projects/"
               f"{account.project_id}/messages:send")
        token = await self.access_token()
        response = await self._post(url, body, token, message)
        if response.status_code == 401 and _fcm_code(_json(response)) != "THIRD_PARTY_AUTH_ERROR":
            log.info("fcm.token_rejected", key=message.idempotency_key)
            token = await self.access_token(stale=token)
            response = await self._post(url, body, token, message)
        answer = _json(response)
        if response.is_success:
            name = answer.get("name")
            log.info("fcm.sent", key=message.idempotency_key, name=name)
            return Receipt(PROVIDER, str(name) if name else None, answer)
        failure = classify_error(response, answer)
        log.warning("fcm.rejected", key=message.idempotency_key, status=response.status_code,
                    code=failure.code, retryable=failure.retryable,
                    invalid_recipient=failure.invalid_recipient)
        raise failure

    async def _post(
        self, url: str, body: dict[str, Any], token: str, message: OutgoingMessage,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            return await self._client.post(url, json=body, headers=headers, timeout=self._timeout)
        except httpx.TransportError as error:
            failure = error_from_transport(PROVIDER, error)
            log.warning("fcm.send_failed", key=message.idempotency_key,
                        outcome_unknown=failure.outcome_unknown, error=str(failure))
            raise failure from error


def _token_error(
    response: httpx.Response, answer: dict[str, Any], account: ServiceAccount,
) -> ProviderError:
    """OAuth errors (`{error, error_description}`): a refused grant is a key problem that no
    retry fixes; Google's own outages and rate limits retry."""
    status = response.status_code
    error = answer.get("error") or "no access_token"
    description = answer.get("error_description") or response.text[:300]
    retryable = status in (408, 429) or status >= 500
    hint = "" if retryable else (
        f": check that the key of {account.client_email} is current (not deleted in the Google "
        "Cloud console) and that this machine's clock is right"
    )
    return ProviderError(
        PROVIDER, f"token exchange failed, HTTP {status} {error}: {description}{hint}",
        retryable=retryable, status=status,
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        code="auth_failed" if not retryable else "token_unavailable",
    )


def _fcm_code(answer: dict[str, Any]) -> str | None:
    """`errorCode` of the `FcmError` detail, the one FCM-specific part of a google.rpc.Status."""
    error = answer.get("error")
    if not isinstance(error, dict):
        return None
    for detail in error.get("details") or []:
        if (isinstance(detail, dict) and str(detail.get("@type", "")).endswith("FcmError")
                and detail.get("errorCode")):
            return str(detail["errorCode"])
    return None


def _about_token(error: dict[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT names the registration token rather than our payload."""
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        for violation in detail.get("fieldViolations") or []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", "")).lower()


def classify_error(response: httpx.Response, answer: dict[str, Any]) -> ProviderError:
    """The FcmError code decides; the HTTP status is the fallback.

    Only an explicit `UNREGISTERED` drops the token: a bare 404 from a proxy or a wrong
    `CAIRN_FCM_BASE_URL` must not make every token in the database look dead.
    """
    status = response.status_code
    raw_error = answer.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    fcm_code = _fcm_code(answer)
    code = fcm_code or error.get("status") or None
    text = str(error.get("message") or response.text[:300] or response.reason_phrase)
    retryable = status in (408, 429) or status >= 500 or fcm_code in RETRYABLE_CODES
    invalid_recipient = False
    if fcm_code in INVALID_RECIPIENT_CODES:
        invalid_recipient, retryable = True, False
    elif fcm_code == "INVALID_ARGUMENT" or (status == 400 and code == "INVALID_ARGUMENT"):
        invalid_recipient = _about_token(error)
    elif fcm_code == "SENDER_ID_MISMATCH":
        text = (f"{text}: the token belongs to another Firebase project; check "
                "CAIRN_FCM_PROJECT_ID and the app's google-services.json")
    elif fcm_code == "THIRD_PARTY_AUTH_ERROR":
        text = (f"{text}: FCM could not use the APNs certificate or web push credentials "
                "uploaded to the Firebase project; renew them in the Firebase console")
    elif status in (401, 403):
        text = (f"{text}: the service account needs the Firebase Cloud Messaging API Admin "
                "role on the project, and the API must be enabled")
    elif status == 404:
        text = f"{text}: check CAIRN_FCM_BASE_URL and the project id"
    return ProviderError(
        PROVIDER, f"HTTP {status} {code}: {text}", retryable=retryable, status=status,
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        invalid_recipient=invalid_recipient, code=str(code) if code else None,
    )
