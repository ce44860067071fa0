"""Internal alerts (`notify` steps) posted to Slack through incoming webhooks.

An incoming webhook is bound to one channel when it is created, so a destination such as
"sales" or "#collections" maps to its own webhook URL (`CAIRN_SLACK_WEBHOOKS`), with
`CAIRN_SLACK_WEBHOOK_URL` as the catch-all. The URL is the credential: it is kept as a secret
and never logged.

Slack answers in plain text, not JSON: `ok` on success; `invalid_payload`, `no_text` or
`invalid_blocks` (400), `action_prohibited` or `invalid_token` (403), `no_service` or
`channel_not_found` (404), `channel_is_archived` (410) for requests that will never work;
429 with Retry-After when a webhook posts more than about one message a second; 5xx for
trouble on Slack's side. Incoming webhooks do not de-duplicate, so `idempotent` is False: an
alert whose answer never came is not posted twice.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import (
    Alert,
    HttpClientHolder,
    ProviderError,
    Receipt,
    error_from_response,
    error_from_transport,
)
from cairn.log import get_logger

log = get_logger(__name__)

NAME = "slack"
# Block Kit limits: past them Slack rejects the whole message with `invalid_blocks`.
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FIELDS_PER_SECTION = 10
FALLBACK_TEXT_MAX = 4000
# Errors that name a webhook Slack no longer honours: the fix is a new URL in the settings.
_DEAD_HOOK = frozenset({"no_service", "invalid_token", "channel_not_found",
                        "channel_is_archived", "action_prohibited", "no_team", "team_disabled"})


class SlackSettings(BaseSettings):
    """`CAIRN_SLACK_*`. `CAIRN_SLACK_WEBHOOKS` is JSON: `{"sales": "https://hooks.slack.com/..."}`."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_SLACK_", extra="ignore")

    webhook_url: SecretStr | None = None
    webhooks: dict[str, SecretStr] = {}
    timeout: float = 10.0


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Slack's three control characters: field values are data (a contact's name, a plan), and
    an unescaped `<!channel>` in one would page a whole channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_payload(alert: Alert) -> dict[str, Any]:
    """`text` is the notification and screen-reader fallback; `blocks` is what people see.

    The alert's text is already mrkdwn (written by the journey author), so it is passed as is;
    fields are escaped and split into sections of ten, Slack's limit per section.
    """
    blocks: list[dict[str, Any]] = []
    if alert.title:
        blocks.append({
            "type": "header",
            "text": {"type": "plain_text", "text": _truncate(alert.title, HEADER_MAX),
                     "emoji": True},
        })
    if alert.text:
        blocks.append({
            "type": "section",
            "text": {"type": "mrkdwn", "text": _truncate(alert.text, SECTION_TEXT_MAX)},
        })
    items = [
        {"type": "mrkdwn",
         "text": _truncate(f"*{_escape(key)}*\n{_escape(value)}", FIELD_TEXT_MAX)}
        for key, value in alert.fields.items()
    ]
    for start in range(0, len(items), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": items[start:start + FIELDS_PER_SECTION]})
    fallback = f"{alert.title}: {alert.text}" if alert.title else alert.text
    return {"text": _truncate(fallback, FALLBACK_TEXT_MAX), "blocks": blocks}


class SlackNotifier(HttpClientHolder):
    """Posts `Alert`s to the incoming webhook of their destination."""

    name = NAME
    idempotent = False

    def __init__(
        self, settings: SlackSettings | None = None, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings or SlackSettings()
        self._hold_client(client, timeout=httpx.Timeout(self.settings.timeout))

    def resolve(self, destination: str) -> tuple[str, str]:
        """The webhook URL for a destination and the setting it came from.

        "#sales" and "sales" name the same channel, so either spelling finds either key.
        """
        hooks = self.settings.webhooks
        bare = destination.strip().lstrip("#")
        for key in (destination, bare, f"#{bare}"):
            if key in hooks:
                return hooks[key].get_secret_value(), "CAIRN_SLACK_WEBHOOKS"
        if self.settings.webhook_url is not None:
            return self.settings.webhook_url.get_secret_value(), "CAIRN_SLACK_WEBHOOK_URL"
        known = ", ".join(sorted(hooks)) or "none"
        raise ProviderError(
            NAME,
            f"no Slack webhook for destination {destination!r} (configured: {known}): add it "
            f"to CAIRN_SLACK_WEBHOOKS as JSON, e.g. '{{\"{bare}\": \"https://hooks.slack.com/"
            "services/...\"}', or set CAIRN_SLACK_WEBHOOK_URL as the default",
            retryable=False, code="unknown_destination",
        )

    async def notify(self, alert: Alert) -> Receipt:
        url, setting = self.resolve(alert.destination)
        try:
            response = await self._client.post(
                url, json=build_payload(alert), timeout=httpx.Timeout(self.settings.timeout),
            )
        except httpx.TransportError as error:
            failure = error_from_transport(NAME, error)
            log.warning("slack.transport_error", destination=alert.destination,
                        outcome_unknown=failure.outcome_unknown, error=type(error).__name__)
            raise failure from error
        body = response.text.strip()
        if response.status_code == 200:
            log.info("slack.posted", destination=alert.destination, key=alert.idempotency_key)
            return Receipt(NAME, None, {"destination": alert.destination, "answer": body})
        raise self._error(response, body, alert.destination, setting)

    @staticmethod
    def _error(
        response: httpx.Response, body: str, destination: str, setting: str,
    ) -> ProviderError:
        code = body.split()[0] if body and len(body) <= 100 else None
        status = response.status_code
        if code in _DEAD_HOOK or status in (403, 404, 410):
            detail = (
                f"{body or 'webhook refused'}: the incoming webhook for {destination!r} is "
                f"disabled, revoked, or its channel is gone; create a new incoming webhook in "
                f"Slack and update {setting}"
            )
        elif status == 400:
            detail = f"{body or 'bad request'}: Slack rejected the message for {destination!r}"
        else:
            detail = body[:300] or response.reason_phrase
        error = error_from_response(NAME, response, detail, code=code)
        log.warning("slack.rejected", destination=destination, status=status, code=code,
                    retryable=error.retryable)
        return error
