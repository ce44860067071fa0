"""HubSpot's CRM v3 API, the part task creation uses: contact search, task search, task create.

Requests need `Authorization: Bearer <token>` (401 `INVALID_AUTHENTICATION` otherwise). Search
bodies are checked like HubSpot checks them (at most 5 filter groups of at most 6 filters, known
operators, a limit of at most 200); `EQ` compares case-insensitively and `CONTAINS_TOKEN`
matches whitespace-separated words, `*` as a wildcard. Creating a task needs `hs_timestamp`,
valid status/priority/type values, and associations to contacts that exist with type 204.
Errors come back in HubSpot's JSON shape (`status`, `message`, `correlationId`, `category`).

`plan_ops` says which operations consume the `Script`'s plans, so a test can slow down the
create without the searches before it eating the plan.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standins.server import Script, apply_plan

ALL_OPS = frozenset({"contacts.search", "tasks.search", "tasks.create"})
OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
                       "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
                       "NOT_CONTAINS_TOKEN"})
SUPPORTED = frozenset({"EQ", "NEQ", "HAS_PROPERTY", "CONTAINS_TOKEN"})
TASK_STATUSES = frozenset({"NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"})
PRIORITIES = frozenset({"LOW", "MEDIUM", "HIGH", "NONE"})
TASK_TYPES = frozenset({"TODO", "CALL", "EMAIL", "LINKED_IN", "MEETING"})
CATEGORIES = frozenset({"HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"})


@dataclass
class HubSpotState:
    """The account: its token, its contacts (id -> properties) and the tasks made so far."""

    token: str
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)
    owners: frozenset[str] = frozenset()
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    associations: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 9_000_000_001


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, message: str, category: str, **extra: Any) -> JSONResponse:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category, **extra}
    return JSONResponse(body, status)


def _validation(message: str) -> JSONResponse:
    return _error(400, message, "VALIDATION_ERROR")


def _planned(status: int, body: Any, retry_after: str | None) -> JSONResponse:
    headers = {"Retry-After": retry_after} if retry_after else None
    if body is None and status == 429:
        body = {"status": "error", "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                "policyName": "SECONDLY", "category": "RATE_LIMITS"}
    elif body is None:
        body = {"status": "error", "message": "internal error",
                "correlationId": str(uuid.uuid4())}
    return JSONResponse(body, status, headers=headers)


def _matches(properties: dict[str, Any], flt: dict[str, Any]) -> bool:
    value = properties.get(flt["propertyName"])
    wanted = str(flt.get("value", ""))
    operator = flt["operator"]
    if operator == "HAS_PROPERTY":
        return value not in (None, "")
    if value is None:
        return operator == "NEQ"
    if operator == "EQ":
        return str(value).lower() == wanted.lower()
    if operator == "NEQ":
        return str(value).lower() != wanted.lower()
    pattern = wanted.lower()
    return any(fnmatch.fnmatchcase(word, pattern) for word in str(value).lower().split())


def _search_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid input JSON on line 1"
    groups = body.get("filterGroups", [])
    if not isinstance(groups, list) or len(groups) > 5:
        return "filterGroups: at most 5 filter groups"
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or len(filters) > 6:
            return "each filter group needs filters, at most 6"
        for flt in filters:
            if not isinstance(flt, dict) or not flt.get("propertyName"):
                return "filters[].propertyName is required"
            if flt.get("operator") not in OPERATORS:
                return f"Unknown operator {flt.get('operator')!r}"
            if flt["operator"] not in SUPPORTED:
                return f"operator {flt['operator']} is not supported by this stand-in"
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or not 0 < limit <= 200:
        return "limit must be between 1 and 200"
    return None


def _found(record_id: str, properties: dict[str, Any], wanted: list[str],
           created: str) -> dict[str, Any]:
    shown = {name: properties.get(name) for name in wanted}
    shown["hs_object_id"] = record_id
    shown["hs_createdate"] = created
    shown["hs_lastmodifieddate"] = created
    return {"id": record_id, "properties": shown, "createdAt": created, "updatedAt": created,
            "archived": False}


def _timestamp_ok(value: Any) -> bool:
    text = str(value)
    if text.isdigit():
        return True
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def hubspot_app(script: Script, state: HubSpotState,
                plan_ops: frozenset[str] = ALL_OPS) -> Starlette:
    async def begin(request: Request, op: str) -> tuple[Any, JSONResponse | None]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        script.requests.append({"op": op, "path": request.url.path,
                                "headers": dict(request.headers), "json": body})
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {state.token}":
            return body, _error(
                401, "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return body, _error(415, "Content type is not supported", "VALIDATION_ERROR")
        return body, None

    async def search(request: Request, op: str,
                     records: dict[str, dict[str, Any]]) -> JSONResponse:
        body, refused = await begin(request, op)
        if refused is not None:
            return refused
        plan = script.next_plan() if op in plan_ops else None
        if plan is not None and plan.status is not None:
            return _planned(plan.status, plan.body, plan.retry_after)
        problem = _search_problem(body)
        if problem is not None:
            return _validation(problem)
        groups = body.get("filterGroups") or [{"filters": []}]
        hits = [
            (record_id, record) for record_id, record in records.items()
            if any(all(_matches(record["properties"], f) for f in g["filters"]) for g in groups)
        ]
        wanted = body.get("properties") or ["createdate", "email", "firstname", "lastname"]
        limit = body.get("limit", 10)
        results = [_found(record_id, record["properties"], wanted, record["createdAt"])
                   for record_id, record in hits[:limit]]
        if plan is not None:
            await apply_plan(plan)
        answer: dict[str, Any] = {"total": len(hits), "results": results}
        if len(hits) > limit:
            answer["paging"] = {"next": {"after": str(limit), "link": f"?after={limit}"}}
        return JSONResponse(answer)

    async def contacts_search(request: Request) -> JSONResponse:
        records = {cid: {"properties": props, "createdAt": "2024-01-02T03:04:05.000Z"}
                   for cid, props in state.contacts.items()}
        return await search(request, "contacts.search", records)

    async def tasks_search(request: Request) -> JSONResponse:
        return await search(request, "tasks.search", state.tasks)

    async def create_task(request: Request) -> JSONResponse:
        body, refused = await begin(request, "tasks.create")
        if refused is not None:
            return refused
        plan = script.next_plan() if "tasks.create" in plan_ops else None
        if plan is not None and plan.status is not None:
            return _planned(plan.status, plan.body, plan.retry_after)
        if plan is not None and not plan.accept:
            await apply_plan(plan)
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            return _validation("Invalid input JSON: properties is required")
        problem = _task_problem(properties, state)
        if problem is None:
            problem = _associations_problem(body.get("associations", []), state)
        if problem is not None:
            return _validation(problem)
        task_id = str(state.next_id)
        state.next_id += 1
        created = _now()
        stored = {**{k: str(v) for k, v in properties.items()}, "hs_object_id": task_id,
                  "hs_createdate": created, "hs_lastmodifieddate": created}
        state.tasks[task_id] = {"properties": stored, "createdAt": created}
        for association in body.get("associations", []):
            for kind in association["types"]:
                state.associations.append({"task": task_id, "contact": association["to"]["id"],
                                           "typeId": kind["associationTypeId"]})
        script.accepted.append({"id": task_id, "request": body})
        if plan is not None and plan.accept:
            await apply_plan(plan)
        return JSONResponse({"id": task_id, "properties": stored, "createdAt": created,
                             "updatedAt": created, "archived": False}, 201)

    return Starlette(routes=[
        Route("/crm/v3/objects/contacts/search", contacts_search, methods=["POST"]),
        Route("/crm/v3/objects/tasks/search", tasks_search, methods=["POST"]),
        Route("/crm/v3/objects/tasks", create_task, methods=["POST"]),
    ])


def _task_problem(properties: dict[str, Any], state: HubSpotState) -> str | None:
    if "hs_timestamp" not in properties:
        return ("Property values were not valid: [{\"isValid\":false,\"message\":"
                "\"hs_timestamp is required\",\"name\":\"hs_timestamp\"}]")
    if not _timestamp_ok(properties["hs_timestamp"]):
        return f"hs_timestamp {properties['hs_timestamp']!r} is not a valid date"
    checks = (("hs_task_status", TASK_STATUSES), ("hs_task_priority", PRIORITIES),
              ("hs_task_type", TASK_TYPES))
    for name, allowed in checks:
        if name in properties and properties[name] not in allowed:
            return f"{properties[name]!r} was not one of the allowed options for {name}"
    owner = properties.get("hubspot_owner_id")
    if owner is not None and state.owners and str(owner) not in state.owners:
        return f"{owner!r} is not a valid owner id"
    return None


def _associations_problem(associations: Any, state: HubSpotState) -> str | None:
    if not isinstance(associations, list):
        return "associations must be a list"
    for association in associations:
        to = association.get("to") if isinstance(association, dict) else None
        if not isinstance(to, dict) or str(to.get("id")) not in state.contacts:
            return f"One or more associations are invalid: no contact {to!r}"
        types = association.get("types")
        if not isinstance(types, list) or not types:
            return "associations[].types is required"
        for kind in types:
            if kind.get("associationCategory") not in CATEGORIES:
                return f"invalid associationCategory {kind.get('associationCategory')!r}"
            if kind.get("associationCategory") == "HUBSPOT_DEFINED" and \
                    kind.get("associationTypeId") != 204:
                return (f"associationTypeId {kind.get('associationTypeId')!r} is not valid "
                        "from task to contact")
    return None
