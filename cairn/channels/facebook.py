"""Facebook Custom Audiences: adding and removing hashed members through the Marketing API.

`POST /{version}/{audience_id}/users` adds, `DELETE` on the same edge removes. Each request
carries a `payload` (`schema`, the identifier columns in use, and `data`, one row of SHA-256
hashes per member, empty where a member lacks that identifier) and a `session`: one sync is one
upload session whose id is derived from the idempotency key, numbered batches of at most 10,000
rows, the last flagged. A retried activity re-sends the same session, and since adding (or
removing) a member twice leaves the audience the same, the syncer is idempotent.

The parameters travel as a form body, the access token among them (the Graph API reads it
there for every method): a token or a thousand hashes in a query string end up in proxy logs.

The Graph API answers errors as `{error: {message, type, code, error_subcode, fbtrace_id}}` and
mostly with HTTP 400 whatever the cause, so the code decides: 190/102/104 the token (permanent),
100 an invalid parameter (permanent), 4/17/32/613/80003 rate limits (retryable, waiting as long
as the `X-Business-Use-Case-Usage` header says), 1/2 or `is_transient` temporary (retryable).
"""

from __future__ import annotations

import json
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
    stable_int64,
)
from cairn.channels.base import (
    AudienceMember,
    HttpClientHolder,
    ProviderError,
    Receipt,
    error_from_transport,
    retry_after_seconds,
)
from cairn.log import get_logger

log = get_logger(__name__)

PROVIDER = "facebook"
MAX_BATCH = 10_000
"""Meta's limit on rows per `/users` request."""

TOKEN_CODES = frozenset({102, 104, 190})
"""Session/token errors: an expired, revoked or missing access token."""
PERMISSION_CODES = frozenset({10, 200, 294})
"""The token lacks `ads_management` or access to the ad account owning the audience."""
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80003})
"""Application, user, page, call-rate and custom-audience (business use case) throttling."""
TRANSIENT_CODES = frozenset({1, 2})
"""Unknown error / service temporarily unavailable: the same call may succeed later."""
INVALID_PARAMETER = 100
MISSING_OBJECT_SUBCODE = 33
"""With code 100: the audience id does not exist or this token cannot see it."""

SCHEMA_FIELDS: tuple[tuple[str, str], ...] = (
    ("EMAIL", "email"), ("PHONE", "phone"), ("FN", "first_name"), ("LN", "last_name"),
    ("COUNTRY", "country"), ("ZIP", "zip"),
)
"""Meta's schema keys, in the order columns are sent, and the member field each hashes."""


class FacebookSettings(BaseSettings):
    """`CAIRN_FACEBOOK_*`. `audiences` maps Cairn audience names to custom audience ids, as a
    JSON object: `CAIRN_FACEBOOK_AUDIENCES='{"trial_users": "23851234567890123"}'`."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_FACEBOOK_", extra="ignore")

    access_token: SecretStr | None = None
    api_version: str = "v21.0"
    base_url: str = "https://graph.facebook.com"
    audiences: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)
    timeout: float = 30.0


def schema_for(members: list[AudienceMember]) -> list[str]:
    """The columns at least one member fills: an all-empty column only costs bytes."""
    return [key for key, field in SCHEMA_FIELDS if any(getattr(m, field) for m in members)]


def hashed_row(member: AudienceMember, schema: list[str]) -> list[str]:
    fields = dict(SCHEMA_FIELDS)
    row = []
    for key in schema:
        value = getattr(member, fields[key])
        row.append(sha256_hex(value) if value else "")
    return row


def session_id_for(idempotency_key: str, audience_id: str, action: str) -> int:
    """Stable across retries of one sync, distinct for another audience or action."""
    return stable_int64(idempotency_key, audience_id, action)


class FacebookAudienceSyncer(HttpClientHolder):
    """Adds members to, or removes them from, Custom Audiences of one ad account."""

    name = PROVIDER
    idempotent = True

    def __init__(
        self, settings: FacebookSettings, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._hold_client(client)
        self._timeout = httpx.Timeout(settings.timeout)

    def _token(self) -> str:
        token = self.settings.access_token.get_secret_value() if self.settings.access_token else ""
        if not token:
            raise ProviderError(
                PROVIDER, "no access token: set CAIRN_FACEBOOK_ACCESS_TOKEN to a system-user "
                "token with ads_management on the ad account that owns the audiences",
                retryable=False, code="config",
            )
        return token

    async def sync(
        self, audience: str, action: str, members: list[AudienceMember], idempotency_key: str,
    ) -> Receipt:
        require_action(PROVIDER, action)
        audience_id = configured_audience(
            PROVIDER, self.settings.audiences, audience, "CAIRN_FACEBOOK_AUDIENCES")
        token = self._token()
        prepared = prepare(members, "facebook")
        session_id = session_id_for(idempotency_key, audience_id, action)
        summary: dict[str, Any] = {
            "audience": audience, "audience_id": audience_id, "action": action,
            "session_id": str(session_id), "members": len(prepared.members),
            "dropped": prepared.dropped, "num_received": 0, "num_invalid_entries": 0,
            "batches": 0, "schema": [],
        }
        if not prepared.members:
            log.info("facebook.audience_nothing_to_sync", audience=audience, action=action,
                     dropped=prepared.dropped, key=idempotency_key)
            return Receipt(PROVIDER, None, summary)
        schema = schema_for(prepared.members)
        summary["schema"] = schema
        rows = [hashed_row(member, schema) for member in prepared.members]
        chunks = batches(rows, self.settings.batch_size)
        for seq, chunk in enumerate(chunks, start=1):
            session = {
                "session_id": session_id, "batch_seq": seq,
                "last_batch_flag": seq == len(chunks), "estimated_num_total": len(rows),
            }
            answer = await self._send(
                action, audience, audience_id, token, {"schema": schema, "data": chunk}, session,
                idempotency_key,
            )
            summary["num_received"] += _int(answer.get("num_received"), len(chunk))
            summary["num_invalid_entries"] += _int(answer.get("num_invalid_entries"), 0)
            summary["batches"] = seq
        log.info("facebook.audience_synced", audience=audience, action=action,
                 members=len(rows), dropped=prepared.dropped, batches=len(chunks),
                 invalid=summary["num_invalid_entries"], key=idempotency_key)
        return Receipt(PROVIDER, str(session_id), summary)

    async def _send(
        self, action: str, audience: str, audience_id: str, token: str,
        payload: dict[str, Any], session: dict[str, Any], idempotency_key: str,
    ) -> dict[str, Any]:
        base = self.settings.base_url.rstrip("/")
        url = f"{base}/{self.settings.api_version}/{audience_id}/users"
        form = {
            "payload": json.dumps(payload, separators=(",", ":")),
            "session": json.dumps(session, separators=(",", ":")),
            "access_token": token,
        }
        method = "POST" if action == "add" else "DELETE"
        try:
            response = await self._client.request(
                method, url, data=form, timeout=self._timeout,
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as error:
            failure = error_from_transport(PROVIDER, error)
            log.warning("facebook.audience_failed", audience=audience, key=idempotency_key,
                        batch=session["batch_seq"], outcome_unknown=failure.outcome_unknown,
                        error=str(failure))
            raise failure from error
        answer = _json(response)
        if response.is_success and "error" not in answer:
            return answer
        failure = classify_error(response, answer, audience=audience, audience_id=audience_id)
        log.warning("facebook.audience_rejected", audience=audience, key=idempotency_key,
                    batch=session["batch_seq"], status=response.status_code, code=failure.code,
                    retryable=failure.retryable)
        raise failure


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def usage_wait_seconds(header: str | None) -> float | None:
    """The longest `estimated_time_to_regain_access` (minutes) in `X-Business-Use-Case-Usage`:
    Meta says there how long a throttled business use case stays blocked."""
    if not header:
        return None
    try:
        usage = json.loads(header)
    except ValueError:
        return None
    minutes: list[float] = []
    if isinstance(usage, dict):
        for entries in usage.values():
            for entry in entries if isinstance(entries, list) else []:
                value = entry.get("estimated_time_to_regain_access") if isinstance(
                    entry, dict) else None
                if isinstance(value, int | float) and value > 0:
                    minutes.append(float(value))
    return max(minutes) * 60 if minutes else None


def classify_error(
    response: httpx.Response, answer: dict[str, Any], *, audience: str, audience_id: str,
) -> ProviderError:
    """The Graph error code decides: the HTTP status is 400 for nearly everything."""
    status = response.status_code
    raw_error = answer.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode")
    text = str(error.get("error_user_msg") or error.get("message") or response.text[:300]
               or response.reason_phrase)
    trace = error.get("fbtrace_id")
    retry_after = retry_after_seconds(response.headers.get("retry-after")) or usage_wait_seconds(
        response.headers.get("x-business-use-case-usage"))
    retryable = status in (408, 429) or status >= 500
    if code in TOKEN_CODES or status == 401:
        retryable = False
        text = (f"Facebook rejected the access token ({text}): set CAIRN_FACEBOOK_ACCESS_TOKEN "
                "to a valid system-user token with ads_management permission")
    elif code in PERMISSION_CODES:
        retryable = False
        text = (f"the access token may not edit audience {audience!r} ({audience_id}): {text}. "
                "Give the token's system user ads_management on the ad account owning it")
    elif code in RATE_LIMIT_CODES or code in TRANSIENT_CODES or error.get("is_transient") is True:
        retryable = True
    elif code == INVALID_PARAMETER:
        retryable = False
        if subcode == MISSING_OBJECT_SUBCODE:
            text = (f"custom audience {audience_id} (Cairn audience {audience!r}) does not exist "
                    f"or this token cannot see it ({text}): check CAIRN_FACEBOOK_AUDIENCES")
    detail = "no error code"
    if code is not None:
        detail = f"code {code}" + (f"/{subcode}" if subcode else "")
    suffix = f" [fbtrace_id {trace}]" if trace else ""
    return ProviderError(
        PROVIDER, f"HTTP {status}, {detail}: {text}{suffix}", retryable=retryable, status=status,
        retry_after=retry_after if retryable else None,
        code=str(code) if code is not None else None,
    )
