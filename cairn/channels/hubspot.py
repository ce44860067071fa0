"""Tasks for people (a sales call, a collections call) created in HubSpot through the CRM v3 API.

HubSpot has no idempotency keys, so the task body carries a marker, `cairn:<hash of the key>`,
and every attempt first searches tasks for it. A retry after an unknown outcome (the create
went out, the answer never came back) finds the task the first attempt made and returns it
instead of creating a second one; that is why `idempotent` is True.

One limit to know: HubSpot's search index trails writes by a few seconds, so an attempt made
within seconds of a create that did land may not see it yet. Temporal's retry backoff normally
leaves that gap; the marker stays in the body either way, so a duplicate is findable by hand.

Auth is a private app token (`Authorization: Bearer`) with the `crm.objects.contacts.read` and
`crm.objects.contacts.write` scopes (tasks are written under the contacts scopes).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cairn.channels.base import (
    HttpClientHolder,
    OutgoingTask,
    ProviderError,
    Receipt,
    error_from_response,
    error_from_transport,
)
from cairn.log import get_logger

log = get_logger(__name__)

NAME = "hubspot"
TASK_TO_CONTACT = 204  # HUBSPOT_DEFINED association type "task to contact"
_TASK_PROPERTIES = ["hs_task_subject", "hs_task_body", "hs_task_status", "hs_timestamp",
                    "hubspot_owner_id"]


class HubSpotSettings(BaseSettings):
    """`CAIRN_HUBSPOT_*`: the private app's access token, and who owns the tasks it creates."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_HUBSPOT_", extra="ignore")

    access_token: SecretStr | None = None
    base_url: str = "https://api.hubapi.com"
    owner_id: str | None = None
    priority: Literal["LOW", "MEDIUM", "HIGH"] = "MEDIUM"
    task_type: Literal["TODO", "CALL", "EMAIL"] = "TODO"
    timeout: float = 10.0


def task_marker(idempotency_key: str) -> str:
    """`cairn:<first 32 hex of sha256(key)>`: the key itself may carry ids nobody in the CRM
    needs to read, and a fixed-length hex token is a single word for HubSpot's search."""
    return f"cairn:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}"


def task_body(task: OutgoingTask) -> str:
    lines = [task.note] if task.note else []
    if task.queue:
        lines.append(f"Queue: {task.queue}")
    lines.append(task_marker(task.idempotency_key))
    return "\n\n".join(lines)


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubSpotTaskSink(HttpClientHolder):
    """Creates one HubSpot task per `OutgoingTask`, associated with the contact when found."""

    name = NAME
    idempotent = True

    def __init__(
        self, settings: HubSpotSettings | None = None, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings or HubSpotSettings()
        self._hold_client(client, timeout=httpx.Timeout(self.settings.timeout))

    async def create_task(self, task: OutgoingTask) -> Receipt:
        marker = task_marker(task.idempotency_key)
        existing = await self._find_task(marker)
        if existing is not None:
            log.info("hubspot.task_exists", task_id=existing["id"], key=task.idempotency_key)
            return Receipt(NAME, str(existing["id"]),
                           {"task": existing, "deduplicated": True, "marker": marker})
        contact_id = await self._find_contact(task.contact_email) if task.contact_email else None
        if task.contact_email and contact_id is None:
            log.warning("hubspot.contact_not_found", contact=task.contact_id,
                        key=task.idempotency_key)
        created = await self._post(
            "/crm/v3/objects/tasks", self._task_request(task, contact_id), side_effect=True,
        )
        log.info("hubspot.task_created", task_id=created.get("id"), hubspot_contact=contact_id,
                 key=task.idempotency_key)
        return Receipt(NAME, str(created["id"]), {
            "task": created, "deduplicated": False, "marker": marker,
            "hubspot_contact_id": contact_id,
        })

    def _task_request(self, task: OutgoingTask, contact_id: str | None) -> dict[str, Any]:
        properties = {
            "hs_timestamp": _iso(task.due_at or datetime.now(UTC)),
            "hs_task_subject": task.title,
            "hs_task_body": task_body(task),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": self.settings.priority,
            "hs_task_type": self.settings.task_type,
        }
        if self.settings.owner_id:
            properties["hubspot_owner_id"] = self.settings.owner_id
        request: dict[str, Any] = {"properties": properties}
        if contact_id is not None:
            request["associations"] = [{
                "to": {"id": contact_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED",
                           "associationTypeId": TASK_TO_CONTACT}],
            }]
        return request

    async def _find_task(self, marker: str) -> dict[str, Any] | None:
        """A task whose body carries the marker.

        Two filter groups (ORed): the whole marker, and its hex part alone, because whether
        HubSpot's tokenizer splits `cairn:` from the hex is not documented. The body is then
        checked for the full marker so a token match alone never counts.
        """
        digest = marker.split(":", 1)[1]
        answer = await self._post("/crm/v3/objects/tasks/search", {
            "filterGroups": [
                {"filters": [{"propertyName": "hs_task_body", "operator": "CONTAINS_TOKEN",
                              "value": marker}]},
                {"filters": [{"propertyName": "hs_task_body", "operator": "CONTAINS_TOKEN",
                              "value": digest}]},
            ],
            "properties": _TASK_PROPERTIES,
            "limit": 10,
        })
        for result in answer.get("results", []):
            body = (result.get("properties") or {}).get("hs_task_body") or ""
            if marker in body:
                return dict(result)
        return None

    async def _find_contact(self, email: str) -> str | None:
        answer = await self._post("/crm/v3/objects/contacts/search", {
            "filterGroups": [{"filters": [
                {"propertyName": "email", "operator": "EQ", "value": email.strip().lower()},
            ]}],
            "properties": ["email"],
            "limit": 1,
        })
        results = answer.get("results") or []
        return str(results[0]["id"]) if results else None

    async def _post(
        self, path: str, payload: dict[str, Any], *, side_effect: bool = False,
    ) -> dict[str, Any]:
        """POST and classify. A search that timed out changed nothing, so only the create
        carries `outcome_unknown` on a read timeout."""
        token = self._token()
        try:
            response = await self._client.post(
                self.settings.base_url.rstrip("/") + path, json=payload,
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(self.settings.timeout),
            )
        except httpx.TransportError as error:
            failure = error_from_transport(NAME, error)
            if not side_effect:
                failure.outcome_unknown = False
            log.warning("hubspot.transport_error", path=path, error=type(error).__name__,
                        outcome_unknown=failure.outcome_unknown)
            raise failure from error
        if response.status_code in (200, 201):
            answer: dict[str, Any] = response.json()
            return answer
        raise self._error(response, path)

    def _token(self) -> str:
        if self.settings.access_token is None:
            raise ProviderError(
                NAME, "no access token: set CAIRN_HUBSPOT_ACCESS_TOKEN to a private app token "
                "with the crm.objects.contacts.read and crm.objects.contacts.write scopes",
                retryable=False, code="not_configured",
            )
        return self.settings.access_token.get_secret_value()

    @staticmethod
    def _error(response: httpx.Response, path: str) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or response.text[:300] or response.reason_phrase)
        category = body.get("category")
        status = response.status_code
        if status == 401:
            message = (f"{message}: the token was refused; set CAIRN_HUBSPOT_ACCESS_TOKEN to a "
                       "valid private app token")
        elif status == 403:
            message = (f"{message}: the private app lacks a scope; grant "
                       "crm.objects.contacts.read and crm.objects.contacts.write")
        error = error_from_response(NAME, response, f"{path}: {message}", code=category)
        log.warning("hubspot.rejected", path=path, status=status, category=category,
                    retryable=error.retryable)
        return error
