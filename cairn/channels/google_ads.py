"""Google Ads Customer Match: adding and removing hashed members of a CRM user list over REST.

One sync is one OfflineUserDataJob: `offlineUserDataJobs:create` (type
CUSTOMER_MATCH_USER_LIST, naming the user list), then `:addOperations` in batches (a `create` or
`remove` operation per member, each carrying its identifiers: `hashedEmail`,
`hashedPhoneNumber`, `addressInfo`), then `:run`. Nothing reaches the list until `:run`, which
shapes the failure handling: a create or addOperations that times out leaves at most a pending
job that never runs (Google discards it), so the outcome is known (the list is unchanged) and a
retry is free; only a lost `:run` answer leaves the outcome unknown. A retry then builds and runs
a new job with the same members, which changes nothing more: the syncer is idempotent.

Addresses go as `addressInfo` with hashed first and last names but the country code and postal
code in clear text, as Google requires, and only with all four parts (Google rejects a partial
address).

Auth is an OAuth refresh token exchanged for an access token, cached until shortly before it
expires. A cached token the API refuses (revoked early) is exchanged once more before the call is
declared unauthenticated. Errors arrive as `google.rpc.Status` JSON with `GoogleAdsFailure`
details; `RESOURCE_EXHAUSTED` carries the wait in `quotaErrorDetails.retryDelay`.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.audiences import (
    batches,
    configured_audience,
    prepare,
    require_action,
    sha256_hex,
)
from cairn.channels.base import (
    AudienceMember,
    HttpClientHolder,
    ProviderError,
    Receipt,
    retry_after_seconds,
)
from cairn.log import get_logger

log = get_logger(__name__)

PROVIDER = "google_ads"
MAX_BATCH = 100_000
"""Google's limit on user identifiers per addOperations request."""
TOKEN_MARGIN_S = 60.0
"""Refresh this long before the access token expires (at most half its lifetime), so it never
expires mid-sync."""

RETRYABLE_STATUSES = frozenset({
    "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED",
})
RETRYABLE_ERROR_CODES = frozenset({"CONCURRENT_MODIFICATION", "RESOURCE_TEMPORARILY_EXHAUSTED"})
"""Another job is editing the same list, or a quota refills: both pass with time."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GoogleAdsSettings(BaseSettings):
    """`CAIRN_GOOGLE_ADS_*`. `audiences` maps Cairn audience names to user lists, as a JSON
    object of user list ids or resource names:
    `CAIRN_GOOGLE_ADS_AUDIENCES='{"trial_users": "customers/1234567890/userLists/987"}'`."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_GOOGLE_ADS_", extra="ignore")

    developer_token: SecretStr | None = None
    customer_id: str | None = None
    login_customer_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_uri: str = "https://oauth2.googleapis.com/token"
    base_url: str = "https://googleads.googleapis.com"
    api_version: str = "v18"
    audiences: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=10_000, ge=1, le=MAX_BATCH)
    timeout: float = 30.0


def customer_digits(value: str) -> str:
    """Google shows customer ids as `123-456-7890`; the API wants the ten digits."""
    return value.replace("-", "").strip()


def user_identifiers(member: AudienceMember) -> list[dict[str, Any]]:
    identifiers: list[dict[str, Any]] = []
    if member.email:
        identifiers.append({"hashedEmail": sha256_hex(member.email)})
    if member.phone:
        identifiers.append({"hashedPhoneNumber": sha256_hex(member.phone)})
    first, last, country, postal = (
        member.first_name, member.last_name, member.country, member.zip)
    if first and last and country and postal:
        identifiers.append({"addressInfo": {
            "hashedFirstName": sha256_hex(first),
            "hashedLastName": sha256_hex(last),
            "countryCode": country.upper(),
            "postalCode": postal,
        }})
    return identifiers


class GoogleAdsAudienceSyncer(HttpClientHolder):
    """Adds members to, or removes them from, Customer Match user lists of one customer."""

    name = PROVIDER
    idempotent = True

    def __init__(
        self, settings: GoogleAdsSettings, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._hold_client(client)
        self._timeout = httpx.Timeout(settings.timeout)
        self._access_token: str | None = None
        self._refresh_at = 0.0
        self._token_lock = asyncio.Lock()

    # ----------------------------------------------------------------------- configuration

    def _customer_id(self) -> str:
        if not self.settings.customer_id:
            raise _config("no customer: set CAIRN_GOOGLE_ADS_CUSTOMER_ID to the Google Ads "
                          "account that owns the user lists (123-456-7890)")
        return customer_digits(self.settings.customer_id)

    def _user_list(self, audience: str, customer_id: str) -> str:
        configured = configured_audience(
            PROVIDER, self.settings.audiences, audience, "CAIRN_GOOGLE_ADS_AUDIENCES")
        if configured.isdigit():
            return f"customers/{customer_id}/userLists/{configured}"
        return configured

    def _developer_token(self) -> str:
        token = self.settings.developer_token
        if token is None or not token.get_secret_value():
            raise _config("no developer token: set CAIRN_GOOGLE_ADS_DEVELOPER_TOKEN to the token "
                          "shown in the API Center of your Google Ads manager account")
        return token.get_secret_value()

    # ----------------------------------------------------------------------- OAuth

    async def _token(self) -> tuple[str, bool]:
        """An access token and whether it was minted just now (a fresh token the API refuses
        is a configuration problem, a cached one may merely have been revoked)."""
        async with self._token_lock:
            if self._access_token and time.monotonic() < self._refresh_at:
                return self._access_token, False
            self._access_token, self._refresh_at = await self._refresh()
            return self._access_token, True

    def _forget_token(self) -> None:
        self._access_token = None
        self._refresh_at = 0.0

    async def _refresh(self) -> tuple[str, float]:
        settings = self.settings
        secret = settings.client_secret.get_secret_value() if settings.client_secret else ""
        refresh = settings.refresh_token.get_secret_value() if settings.refresh_token else ""
        if not (settings.client_id and secret and refresh):
            raise _config("OAuth is not configured: set CAIRN_GOOGLE_ADS_CLIENT_ID, "
                          "CAIRN_GOOGLE_ADS_CLIENT_SECRET and CAIRN_GOOGLE_ADS_REFRESH_TOKEN "
                          "(a refresh token granted the https://www.googleapis.com/auth/adwords "
                          "scope)")
        form = {"grant_type": "refresh_token", "client_id": settings.client_id,
                "client_secret": secret, "refresh_token": refresh}
        try:
            response = await self._client.post(
                settings.token_uri, data=form, timeout=self._timeout,
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as error:
            # Nothing touches the list before the token arrives: retry freely.
            raise ProviderError(PROVIDER, f"token endpoint unreachable: {error!r}",
                                retryable=True, code="oauth") from error
        answer = _json(response)
        token = answer.get("access_token")
        if response.is_success and isinstance(token, str) and token:
            lifetime = answer.get("expires_in")
            seconds = float(lifetime) if isinstance(lifetime, int | float) else 3600.0
            log.info("google_ads.token_refreshed", expires_in=seconds)
            # A short-lived token is still reused for the first half of its life.
            return token, time.monotonic() + seconds - min(TOKEN_MARGIN_S, seconds / 2)
        raise classify_token_error(response, answer)

    # ----------------------------------------------------------------------- sync

    async def sync(
        self, audience: str, action: str, members: list[AudienceMember], idempotency_key: str,
    ) -> Receipt:
        require_action(PROVIDER, action)
        customer_id = self._customer_id()
        user_list = self._user_list(audience, customer_id)
        self._developer_token()
        prepared = prepare(members, "google")
        summary: dict[str, Any] = {
            "audience": audience, "user_list": user_list, "action": action,
            "members": len(prepared.members), "dropped": prepared.dropped, "batches": 0,
            "job": None, "operation": None,
        }
        if not prepared.members:
            log.info("google_ads.audience_nothing_to_sync", audience=audience, action=action,
                     dropped=prepared.dropped, key=idempotency_key)
            return Receipt(PROVIDER, None, summary)
        verb = "create" if action == "add" else "remove"
        operations = [{verb: {"userIdentifiers": user_identifiers(member)}}
                      for member in prepared.members]
        prefix = f"{self.settings.api_version}/customers/{customer_id}"
        created = await self._call(f"{prefix}/offlineUserDataJobs:create", {"job": {
            "type": "CUSTOMER_MATCH_USER_LIST",
            "customerMatchUserListMetadata": {"userList": user_list},
        }}, step="create", key=idempotency_key)
        job = created.get("resourceName")
        if not isinstance(job, str) or not job.startswith(f"customers/{customer_id}/"):
            raise ProviderError(PROVIDER, f"offlineUserDataJobs:create answered without a job "
                                f"resource name: {created!r}", retryable=True, code="protocol")
        summary["job"] = job
        for chunk in batches(operations, self.settings.batch_size):
            await self._call(f"{self.settings.api_version}/{job}:addOperations",
                             {"operations": chunk}, step="addOperations", key=idempotency_key)
            summary["batches"] += 1
        ran = await self._call(f"{self.settings.api_version}/{job}:run", {},
                               step="run", key=idempotency_key)
        summary["operation"] = ran.get("name")
        log.info("google_ads.audience_synced", audience=audience, action=action, job=job,
                 members=len(operations), dropped=prepared.dropped, batches=summary["batches"],
                 key=idempotency_key)
        return Receipt(PROVIDER, job, summary)

    async def _call(self, path: str, body: dict[str, Any], *, step: str,
                    key: str) -> dict[str, Any]:
        url = f"{self.settings.base_url.rstrip('/')}/{path}"
        developer_token = self._developer_token()
        for _ in range(2):
            token, fresh = await self._token()
            headers = {
                "Authorization": f"Bearer {token}",
                "developer-token": developer_token,
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
            if self.settings.login_customer_id:
                headers["login-customer-id"] = customer_digits(self.settings.login_customer_id)
            try:
                response = await self._client.post(
                    url, json=body, headers=headers, timeout=self._timeout)
            except httpx.TransportError as error:
                failure = transport_failure(step, error)
                log.warning("google_ads.audience_failed", step=step, key=key,
                            outcome_unknown=failure.outcome_unknown, error=str(failure))
                raise failure from error
            answer = _json(response)
            if response.is_success:
                return answer
            if response.status_code == 401 and not fresh:
                log.info("google_ads.token_refused", step=step, key=key)
                self._forget_token()
                continue
            failure = classify_error(response, answer)
            log.warning("google_ads.audience_rejected", step=step, key=key,
                        status=response.status_code, code=failure.code,
                        retryable=failure.retryable)
            raise failure
        raise AssertionError("unreachable: a fresh token either succeeds or raises")


def _config(message: str) -> ProviderError:
    return ProviderError(PROVIDER, message, retryable=False, code="config")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def transport_failure(step: str, error: httpx.TransportError) -> ProviderError:
    """Before `:run` nothing reaches the list, so only a lost `:run` leaves the outcome unknown."""
    connect = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if connect or step != "run":
        what = "connection failed" if connect else "no answer (the job never ran)"
        return ProviderError(PROVIDER, f"{step}: {what}: {error!r}", retryable=True)
    return ProviderError(PROVIDER, f"{step}: no answer, the job may be running: {error!r}",
                         retryable=True, outcome_unknown=True)


def classify_token_error(response: httpx.Response, answer: dict[str, Any]) -> ProviderError:
    status = response.status_code
    kind = str(answer.get("error") or "")
    text = str(answer.get("error_description") or kind or response.text[:300]
               or response.reason_phrase)
    if status == 429 or status >= 500:
        return ProviderError(
            PROVIDER, f"token endpoint HTTP {status}: {text}", retryable=True, status=status,
            retry_after=retry_after_seconds(response.headers.get("retry-after")), code="oauth",
        )
    if kind == "invalid_grant":
        hint = ("the refresh token is expired or revoked: grant a new one for the adwords scope "
                "and set CAIRN_GOOGLE_ADS_REFRESH_TOKEN")
    elif kind in ("invalid_client", "unauthorized_client"):
        hint = ("the OAuth client was refused: check CAIRN_GOOGLE_ADS_CLIENT_ID and "
                "CAIRN_GOOGLE_ADS_CLIENT_SECRET (the client the refresh token was granted to)")
    else:
        hint = ("check CAIRN_GOOGLE_ADS_CLIENT_ID, CAIRN_GOOGLE_ADS_CLIENT_SECRET and "
                "CAIRN_GOOGLE_ADS_REFRESH_TOKEN")
    return ProviderError(PROVIDER, f"OAuth token refresh failed (HTTP {status}, {text}): {hint}",
                         retryable=False, status=status, code=kind or "oauth")


def _error_codes(details: list[Any]) -> tuple[list[str], list[str], float | None]:
    """`GoogleAdsFailure` error codes (`authenticationError.OAUTH_TOKEN_INVALID`), their
    messages, and the longest retry delay any detail names."""
    codes: list[str] = []
    messages: list[str] = []
    delays: list[float] = []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        delays.extend(_seconds(detail.get("retryDelay")))  # google.rpc.RetryInfo
        for error in detail.get("errors") or []:
            if not isinstance(error, dict):
                continue
            for family, value in (error.get("errorCode") or {}).items():
                codes.append(f"{family}.{value}")
            if error.get("message"):
                messages.append(str(error["message"]))
            quota = (error.get("details") or {}).get("quotaErrorDetails") or {}
            delays.extend(_seconds(quota.get("retryDelay")))
    return codes, messages, max(delays) if delays else None


def _seconds(value: Any) -> list[float]:
    """A protobuf Duration in JSON (`"30s"`)."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    return [float(match.group(1))] if match else []


def classify_error(response: httpx.Response, answer: dict[str, Any]) -> ProviderError:
    """`google.rpc.Status.status` decides, refined by the Google Ads error codes."""
    http_status = response.status_code
    raw_error = answer.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    status = str(error.get("status") or "")
    details = error.get("details")
    codes, messages, delay = _error_codes(details if isinstance(details, list) else [])
    text = "; ".join(messages) or str(error.get("message") or response.text[:300]
                                      or response.reason_phrase)
    names = " ".join(codes)
    retryable = (status in RETRYABLE_STATUSES or http_status in (408, 429) or http_status >= 500
                 or any(code.rsplit(".", 1)[-1] in RETRYABLE_ERROR_CODES for code in codes))
    if status == "UNAUTHENTICATED" or http_status == 401:
        retryable = False
        if "DEVELOPER_TOKEN" in names:
            text += ": set CAIRN_GOOGLE_ADS_DEVELOPER_TOKEN to the token in your API Center"
        else:
            text += (": the OAuth credentials do not reach Google Ads; check "
                     "CAIRN_GOOGLE_ADS_REFRESH_TOKEN (granted for the adwords scope by a user of "
                     "the account), CAIRN_GOOGLE_ADS_CLIENT_ID and CAIRN_GOOGLE_ADS_CLIENT_SECRET")
    elif status == "PERMISSION_DENIED" or http_status == 403:
        retryable = False
        if "DEVELOPER_TOKEN" in names:
            text += (": the developer token is not approved for this account "
                     "(CAIRN_GOOGLE_ADS_DEVELOPER_TOKEN needs Basic or Standard access)")
        else:
            text += (": the OAuth user cannot manage this customer; when access goes through a "
                     "manager account, set CAIRN_GOOGLE_ADS_LOGIN_CUSTOMER_ID to its id")
    elif "INVALID_USER_LIST" in names or status == "NOT_FOUND":
        retryable = False
        text += ": check the user list in CAIRN_GOOGLE_ADS_AUDIENCES (a CRM-based Customer "
        text += "Match list of CAIRN_GOOGLE_ADS_CUSTOMER_ID)"
    label = status or f"HTTP_{http_status}"
    return ProviderError(
        PROVIDER, f"HTTP {http_status} {label} [{names or 'no error code'}]: {text}",
        retryable=retryable, status=http_status,
        retry_after=(delay or retry_after_seconds(response.headers.get("retry-after")))
        if retryable else None,
        code=status or None,
    )
