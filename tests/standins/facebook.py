"""A Facebook Graph API stand-in for Custom Audience membership: `POST` (add) and `DELETE`
(remove) on `/{version}/{audience_id}/users`, keeping each audience as a set of hashed rows.

It reads parameters the way the Graph API does (query string, form body or JSON body), checks
the access token (missing: code 104, wrong: code 190), the audience id (unknown: code 100,
subcode 33), and the payload: a known `schema`, `data` rows with as many values as the schema has
fields, every value a lower-case 64-hex SHA-256 or empty, at most `max_batch` rows. A `session`
must number its batches from 1 without gaps, keep one `estimated_num_total` and one method, and
take no batch after the one flagged `last_batch_flag`; re-sending a batch already seen (a retry)
is accepted. Rows with no value at all count as `num_invalid_entries`, like Meta reports them.

Errors use Graph's `{error: {message, type, code, error_subcode, fbtrace_id}}`. Scripted plans
apply after the token check. For a rate-limit body (codes 4, 17, 32, 613, 80003) a plan's
`retry_after` is sent the way Meta signals the wait, as `estimated_time_to_regain_access`
(minutes) in `X-Business-Use-Case-Usage`; for any other failure as a `Retry-After` header.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standins.server import Script, apply_plan

TOKEN = "fb-test-system-user-token"
API_VERSION = "v21.0"
MAX_BATCH = 10_000
SCHEMA_KEYS = frozenset({
    "EMAIL", "PHONE", "FN", "LN", "FI", "COUNTRY", "ZIP", "ST", "CT", "DOBY", "DOBM", "DOBD",
    "GEN", "MADID", "EXTERN_ID",
})
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80003})
_HASH = re.compile(r"^[0-9a-f]{64}$")

Row = frozenset[tuple[str, str]]
"""One member as the audience keeps it: the (schema key, hash) pairs that are not empty."""


@dataclass
class UploadSession:
    method: str
    seen: set[int] = field(default_factory=set)
    last_seq: int | None = None
    estimated_num_total: int | None = None


@dataclass
class GraphState:
    """The custom audiences the token may edit (id to member rows) and the sessions seen."""

    audiences: dict[str, set[Row]] = field(default_factory=dict)
    token: str = TOKEN
    api_version: str = API_VERSION
    max_batch: int = MAX_BATCH
    sessions: dict[tuple[str, int], UploadSession] = field(default_factory=dict)


class GraphError(Exception):
    def __init__(self, code: int, message: str, *, status: int = 400,
                 subcode: int | None = None, kind: str = "OAuthException") -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.subcode, self.kind = (
            code, message, status, subcode, kind)

    def response(self) -> JSONResponse:
        return graph_error(self.status, self.code, self.message, subcode=self.subcode,
                           kind=self.kind)


def graph_error(status: int, code: int, message: str, *, subcode: int | None = None,
                kind: str = "OAuthException", transient: bool = False,
                headers: dict[str, str] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": kind, "code": code,
                             "is_transient": transient, "fbtrace_id": secrets.token_urlsafe(8)}
    if subcode is not None:
        error["error_subcode"] = subcode
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def default_failure(status: int) -> dict[str, Any]:
    """What Graph answers for an outage of this kind, when a plan gives no body."""
    if status == 429:
        code, message, transient = 17, "(#17) User request limit reached", True
    elif status == 503:
        code, message, transient = 2, "An unexpected error has occurred. Please retry your " \
                                      "request later.", True
    elif status >= 500:
        code, message, transient = 1, "An unknown error occurred", True
    else:
        code, message, transient = 100, "(#100) Invalid parameter", False
    return {"error": {"message": message, "type": "OAuthException", "code": code,
                      "is_transient": transient, "fbtrace_id": secrets.token_urlsafe(8)}}


async def _params(request: Request) -> dict[str, str]:
    """Graph merges the query string with a form or JSON body; the body wins."""
    params = dict(request.query_params)
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if raw and "application/json" in content_type:
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise GraphError(100, "(#100) The request body is not valid JSON") from error
        if not isinstance(body, dict):
            raise GraphError(100, "(#100) The JSON body must be an object")
        params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
    elif raw:
        params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    return params


def _token(request: Request, params: dict[str, str]) -> str | None:
    if params.get("access_token"):
        return params["access_token"]
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() in ("oauth", "bearer") and value.strip() else None


def _json_param(params: dict[str, str], name: str, *, required: bool) -> Any:
    raw = params.get(name)
    if raw is None:
        if required:
            raise GraphError(100, f"(#100) The parameter {name} is required")
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise GraphError(100, f"(#100) param {name} must be JSON") from error


def parse_payload(payload: Any, max_batch: int) -> tuple[list[str], list[list[str]]]:
    if not isinstance(payload, dict):
        raise GraphError(100, "(#100) param payload must be an object with schema and data")
    schema = payload.get("schema")
    single = isinstance(schema, str)
    keys = [schema] if isinstance(schema, str) else schema
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise GraphError(100, "(#100) payload.schema must name at least one field")
    unknown = [k for k in keys if k not in SCHEMA_KEYS]
    if unknown:
        raise GraphError(100, f"(#100) Invalid schema field(s): {', '.join(unknown)}")
    if len(set(keys)) != len(keys):
        raise GraphError(100, "(#100) payload.schema names a field twice")
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise GraphError(100, "(#100) payload.data must be a non-empty list of rows")
    if len(data) > max_batch:
        raise GraphError(100, f"(#100) Too many entries: at most {max_batch} rows per request, "
                              f"got {len(data)}")
    rows: list[list[str]] = []
    for index, entry in enumerate(data):
        row = [entry] if single and isinstance(entry, str) else entry
        if not isinstance(row, list) or len(row) != len(keys):
            raise GraphError(100, f"(#100) Row {index} does not have {len(keys)} values, one for "
                                  "each schema field")
        for key, value in zip(keys, row, strict=True):
            if not isinstance(value, str) or (value and not _HASH.match(value)):
                raise GraphError(100, f"(#100) Row {index}, field {key}: the value is not a "
                                      "SHA-256 hash; normalise and hash identifiers first")
        rows.append(row)
    return keys, rows


def check_session(state: GraphState, audience_id: str, method: str, session: Any) -> None:
    if session is None:
        return
    if not isinstance(session, dict):
        raise GraphError(100, "(#100) param session must be an object")
    session_id, seq = session.get("session_id"), session.get("batch_seq")
    last, total = session.get("last_batch_flag"), session.get("estimated_num_total")
    if not isinstance(session_id, int) or isinstance(session_id, bool) or session_id <= 0:
        raise GraphError(100, "(#100) session.session_id must be a positive 64-bit integer")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise GraphError(100, "(#100) session.batch_seq must be an integer starting at 1")
    if not isinstance(last, bool):
        raise GraphError(100, "(#100) session.last_batch_flag must be true or false")
    if total is not None and (not isinstance(total, int) or total < 0):
        raise GraphError(100, "(#100) session.estimated_num_total must be a count")
    record = state.sessions.get((audience_id, session_id))
    if record is None:
        if seq != 1:
            raise GraphError(100, f"(#100) session {session_id} starts at batch_seq {seq}, "
                                  "not 1")
        record = state.sessions[(audience_id, session_id)] = UploadSession(
            method=method, estimated_num_total=total)
    if record.method != method:
        raise GraphError(100, f"(#100) session {session_id} was opened by {record.method}; it "
                              f"cannot continue with {method}")
    if seq > max(record.seen, default=0) + 1:
        raise GraphError(100, f"(#100) session {session_id} skipped from batch "
                              f"{max(record.seen, default=0)} to {seq}")
    if record.last_seq is not None and seq > record.last_seq:
        raise GraphError(100, f"(#100) session {session_id} already ended at batch "
                              f"{record.last_seq}")
    if record.estimated_num_total is not None and total != record.estimated_num_total:
        raise GraphError(100, f"(#100) session {session_id} changed estimated_num_total")
    if last:
        if record.last_seq is not None and record.last_seq != seq:
            raise GraphError(100, f"(#100) session {session_id} flagged two last batches")
        record.last_seq = seq
    record.seen.add(seq)


def facebook_app(script: Script, state: GraphState) -> Starlette:
    async def users(request: Request) -> JSONResponse:
        version = request.path_params["version"]
        audience_id = request.path_params["audience_id"]
        record: dict[str, Any] = {"method": request.method, "path": request.url.path,
                                  "query": request.url.query, "headers": dict(request.headers),
                                  "params": {}}
        script.requests.append(record)
        try:
            params = await _params(request)
            record["params"] = params
            token = _token(request, params)
            if not token:
                raise GraphError(104, "An access token is required to request this resource.")
            if token != state.token:
                raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
            if version != state.api_version:
                raise GraphError(2500, f"Unknown path components: /{version}")

            plan = script.next_plan()
            if plan is not None and plan.status is not None:
                failure = plan.body if plan.body is not None else default_failure(plan.status)
                code = failure.get("error", {}).get("code") if isinstance(failure, dict) else None
                headers: dict[str, str] = {}
                if plan.retry_after and code in RATE_LIMIT_CODES:
                    headers["X-Business-Use-Case-Usage"] = json.dumps({"1234567890": [{
                        "type": "custom_audience", "call_count": 100, "total_cputime": 10,
                        "total_time": 10,
                        "estimated_time_to_regain_access": int(plan.retry_after)}]})
                elif plan.retry_after:
                    headers["Retry-After"] = plan.retry_after
                return JSONResponse(failure, status_code=plan.status, headers=headers)
            if plan is not None and plan.delay and not plan.accept:
                await asyncio.sleep(plan.delay)
                return graph_error(503, 2, "Service temporarily unavailable", transient=True)

            if audience_id not in state.audiences:
                raise GraphError(100, f"Unsupported post request. Object with ID "
                                      f"'{audience_id}' does not exist, cannot be loaded due to "
                                      "missing permissions, or does not support this operation",
                                 subcode=33, kind="GraphMethodException")
            schema, rows = parse_payload(_json_param(params, "payload", required=True),
                                         state.max_batch)
            session = _json_param(params, "session", required=False)
            check_session(state, audience_id, request.method, session)
        except GraphError as error:
            return error.response()

        members = state.audiences[audience_id]
        invalid = 0
        for row in rows:
            member: Row = frozenset((k, v) for k, v in zip(schema, row, strict=True) if v)
            if not member:
                invalid += 1
            elif request.method == "POST":
                members.add(member)
            else:
                members.discard(member)
        script.accepted.append({"method": request.method, "audience_id": audience_id,
                                "schema": schema, "data": rows, "session": session})
        await apply_plan(plan)
        session_id = session.get("session_id") if isinstance(session, dict) else None
        return JSONResponse({
            "audience_id": audience_id,
            "session_id": str(session_id) if session_id is not None else None,
            "num_received": len(rows),
            "num_invalid_entries": invalid,
            "invalid_entry_samples": {},
        })

    return Starlette(routes=[
        Route("/{version}/{audience_id}/users", users, methods=["POST", "DELETE"]),
    ])
