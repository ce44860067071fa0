"""A Google Ads API stand-in for Customer Match over REST, with Google's OAuth token endpoint.

`POST /token` exchanges a refresh token (`grant_type=refresh_token`, client id and secret) for
an access token that expires after `token_ttl` seconds; a wrong client answers 401
`invalid_client`, a wrong refresh token 400 `invalid_grant`. Token endpoint failures are
scripted on `state.token_script`.

The Ads routes check the `Authorization: Bearer` token (issued here and unexpired), the
`developer-token` header, the customer in the path and, when `login_customer_id` is set, the
`login-customer-id` header, then run the OfflineUserDataJob flow:
`customers/{cid}/offlineUserDataJobs:create` (a CUSTOMER_MATCH_USER_LIST job naming a known user
list of that customer), `.../offlineUserDataJobs/{id}:addOperations` (while the job is PENDING:
at most `max_operations` operations, each one `create`, `remove` or `removeAll`, each member 1-20
identifiers, hashed values lower-case 64-hex, addresses with hashed names, a two-letter upper-case
country code and a postal code), and `:run`, which applies the job to the list at once (Google
does it within hours) and answers a long-running operation name. Each user list is a set of
hashed rows, so tests read membership after add and remove.

Errors are `google.rpc.Status` JSON with `GoogleAdsFailure` details. Scripted plans on the main
`Script` apply to the Ads routes after the auth checks; a 429 plan answers RESOURCE_EXHAUSTED
with its `retry_after` as `quotaErrorDetails.retryDelay`, the way Google says how long to wait.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standins.server import Script, apply_plan

API_VERSION = "v18"
DEVELOPER_TOKEN = "ads-test-developer-token"
CUSTOMER_ID = "1234567890"
CLIENT_ID = "cairn-test.apps.googleusercontent.com"
CLIENT_SECRET = "ads-test-client-secret"
REFRESH_TOKEN = "1//ads-test-refresh-token"
MAX_IDENTIFIERS_PER_MEMBER = 20
_HASH = re.compile(r"^[0-9a-f]{64}$")
_IDENTIFIER_KEYS = frozenset({"hashedEmail", "hashedPhoneNumber", "addressInfo", "mobileId",
                              "thirdPartyUserId"})

Row = frozenset[tuple[str, str]]
"""One member as the list keeps it: (identifier kind, hashed value) pairs."""


@dataclass
class Job:
    resource_name: str
    user_list: str
    status: str = "PENDING"
    operations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AdsState:
    user_lists: dict[str, set[Row]] = field(default_factory=dict)
    """User list resource names (`customers/{cid}/userLists/{id}`) to their members."""
    customer_id: str = CUSTOMER_ID
    login_customer_id: str | None = None
    developer_token: str = DEVELOPER_TOKEN
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    refresh_token: str = REFRESH_TOKEN
    api_version: str = API_VERSION
    token_ttl: int = 3599
    max_operations: int = 100_000
    issued: dict[str, float] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    token_script: Script = field(default_factory=Script)
    jobs: dict[str, Job] = field(default_factory=dict)


class AdsError(Exception):
    """A `google.rpc.Status` answer, with `GoogleAdsFailure` errors when Google gives them."""

    def __init__(self, http: int, status: str, message: str,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.http, self.status, self.message, self.errors = http, status, message, errors

    def response(self, version: str = API_VERSION) -> JSONResponse:
        error: dict[str, Any] = {"code": self.http, "message": self.message,
                                 "status": self.status}
        if self.errors:
            error["details"] = [{
                "@type": f"type.googleapis.com/google.ads.googleads.{version}.errors."
                         "GoogleAdsFailure",
                "errors": self.errors,
                "requestId": secrets.token_urlsafe(12),
            }]
        return JSONResponse({"error": error}, status_code=self.http)


def ads_failure(family: str, value: str, message: str, *, at: list[tuple[str, int | None]]
                | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"errorCode": {family: value}, "message": message}
    if at:
        error["location"] = {"fieldPathElements": [
            {"fieldName": name, **({"index": index} if index is not None else {})}
            for name, index in at]}
    if details:
        error["details"] = details
    return error


def invalid(family: str, value: str, message: str,
            at: list[tuple[str, int | None]] | None = None) -> AdsError:
    return AdsError(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                    [ads_failure(family, value, message, at=at)])


def default_failure(status: int, retry_after: str | None) -> AdsError:
    """What Google answers for an outage of this kind, when a plan gives no body."""
    if status == 429:
        seconds = retry_after or "30"
        return AdsError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check "
                        "quota).", [ads_failure(
                            "quotaError", "RESOURCE_EXHAUSTED",
                            f"Too many requests. Retry in {seconds} seconds.",
                            details={"quotaErrorDetails": {
                                "rateScope": "DEVELOPER",
                                "rateName": "Number of operations for basic access",
                                "retryDelay": f"{seconds}s"}})])
    if status == 401:
        return AdsError(401, "UNAUTHENTICATED", "Request had invalid authentication "
                        "credentials.", [ads_failure("authenticationError", "OAUTH_TOKEN_INVALID",
                                                     "Oauth token is invalid.")])
    if status == 403:
        return AdsError(403, "PERMISSION_DENIED", "The caller does not have permission",
                        [ads_failure("authorizationError", "USER_PERMISSION_DENIED",
                                     "User doesn't have permission to access customer.")])
    if status == 503:
        return AdsError(503, "UNAVAILABLE", "The service is currently unavailable.")
    if status == 504:
        return AdsError(504, "DEADLINE_EXCEEDED", "Deadline exceeded.")
    if status >= 500:
        return AdsError(status, "INTERNAL", "Internal error encountered.",
                        [ads_failure("internalError", "INTERNAL_ERROR",
                                     "An internal error has occurred.")])
    return invalid("requestError", "INVALID_INPUT", "The request is not valid.")


async def _json_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as error:
        raise AdsError(400, "INVALID_ARGUMENT", "Invalid JSON payload received.") from error
    if not isinstance(body, dict):
        raise AdsError(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an "
                       "object.")
    for name in body:
        if name not in allowed:
            raise AdsError(400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown '
                           f'name "{name}": Cannot find field.')
    return body


def _check_auth(request: Request, state: AdsState, customer_id: str) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AdsError(401, "UNAUTHENTICATED", "Request is missing required authentication "
                       "credential. Expected OAuth 2 access token.")
    expiry = state.issued.get(token)
    if expiry is None or time.monotonic() >= expiry:
        value = "OAUTH_TOKEN_EXPIRED" if expiry is not None else "OAUTH_TOKEN_INVALID"
        raise AdsError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.",
                       [ads_failure("authenticationError", value, "Oauth token is not valid.")])
    if request.headers.get("developer-token") != state.developer_token:
        raise AdsError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.",
                       [ads_failure("authenticationError", "DEVELOPER_TOKEN_INVALID",
                                    "The developer token is not valid.")])
    login = request.headers.get("login-customer-id")
    if login is not None and not login.isdigit():
        raise invalid("headerError", "INVALID_LOGIN_CUSTOMER_ID",
                      "The login customer ID could not be validated.")
    if state.login_customer_id is not None and login != state.login_customer_id:
        raise AdsError(403, "PERMISSION_DENIED", "The caller does not have permission",
                       [ads_failure("authorizationError", "USER_PERMISSION_DENIED",
                                    "User doesn't have permission to access customer. Note: If "
                                    "you're accessing a client customer, the manager's customer "
                                    "id must be set in the 'login-customer-id' header.")])
    if customer_id != state.customer_id:
        raise AdsError(403, "PERMISSION_DENIED", "The caller does not have permission",
                       [ads_failure("authorizationError", "USER_PERMISSION_DENIED",
                                    "User doesn't have permission to access customer.")])


def _hash(value: Any, at: list[tuple[str, int | None]]) -> str:
    if not isinstance(value, str) or not _HASH.match(value):
        raise invalid("offlineUserDataJobError", "INVALID_SHA256_FORMAT",
                      "The SHA256 encoded value is malformed.", at)
    return value


def member_row(user_data: Any, at: list[tuple[str, int | None]]) -> Row:
    """Validates one UserData and returns it as the list keeps it."""
    if not isinstance(user_data, dict) or set(user_data) - {"userIdentifiers", "userAttribute",
                                                             "consent"}:
        raise invalid("fieldError", "INVALID_VALUE", "UserData has unknown fields.", at)
    identifiers = user_data.get("userIdentifiers")
    at = [*at, ("user_identifiers", None)]
    if not isinstance(identifiers, list) or not identifiers:
        raise invalid("offlineUserDataJobError", "MISSING_USER_IDENTIFIER",
                      "User identifier is required.", at)
    if len(identifiers) > MAX_IDENTIFIERS_PER_MEMBER:
        raise invalid("offlineUserDataJobError", "TOO_MANY_USER_IDENTIFIERS",
                      "Too many user identifiers in one UserData.", at)
    row: set[tuple[str, str]] = set()
    for index, identifier in enumerate(identifiers):
        here = [*at[:-1], ("user_identifiers", index)]
        if not isinstance(identifier, dict) or len(identifier) != 1 or not set(
                identifier) <= _IDENTIFIER_KEYS:
            raise invalid("fieldError", "INVALID_VALUE", "Each user identifier sets exactly one "
                          "of hashedEmail, hashedPhoneNumber, addressInfo, mobileId, "
                          "thirdPartyUserId.", here)
        (kind, value), = identifier.items()
        if kind in ("hashedEmail", "hashedPhoneNumber"):
            row.add((kind, _hash(value, here)))
        elif kind == "addressInfo":
            row.add((kind, _address(value, here)))
        else:
            raise invalid("offlineUserDataJobError", "INCOMPATIBLE_UPLOAD_KEY_TYPE",
                          "This user list takes contact info only.", here)
    return frozenset(row)


def _address(value: Any, at: list[tuple[str, int | None]]) -> str:
    if not isinstance(value, dict):
        raise invalid("fieldError", "INVALID_VALUE", "addressInfo must be an object.", at)
    first = _hash(value.get("hashedFirstName"), [*at, ("hashed_first_name", None)])
    last = _hash(value.get("hashedLastName"), [*at, ("hashed_last_name", None)])
    country = value.get("countryCode")
    if not isinstance(country, str) or not re.fullmatch(r"[A-Z]{2}", country):
        raise invalid("offlineUserDataJobError", "INVALID_COUNTRY_CODE",
                      "The country code is invalid.", [*at, ("country_code", None)])
    postal = value.get("postalCode")
    if not isinstance(postal, str) or not postal.strip():
        raise invalid("fieldError", "REQUIRED", "The required field was not present.",
                      [*at, ("postal_code", None)])
    return "|".join((first, last, country, postal))


def google_ads_app(script: Script, state: AdsState) -> Starlette:
    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        state.token_requests.append(form)
        plan = state.token_script.next_plan()
        if plan is not None and plan.status is not None:
            body = plan.body if plan.body is not None else {
                "error": "internal_failure", "error_description": "Backend error."}
            headers = {"Retry-After": plan.retry_after} if plan.retry_after else None
            return JSONResponse(body, status_code=plan.status, headers=headers)
        await apply_plan(plan)
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type",
                                 "error_description": f"Invalid grant_type: "
                                                      f"{form.get('grant_type')}"}, 400)
        if form.get("client_id") != state.client_id:
            return JSONResponse({"error": "invalid_client",
                                 "error_description": "The OAuth client was not found."}, 401)
        if form.get("client_secret") != state.client_secret:
            return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"},
                                401)
        if form.get("refresh_token") != state.refresh_token:
            return JSONResponse({"error": "invalid_grant",
                                 "error_description": "Token has been expired or revoked."}, 400)
        access = f"ya29.stand-in-{secrets.token_urlsafe(16)}"
        state.issued[access] = time.monotonic() + state.token_ttl
        return JSONResponse({"access_token": access, "expires_in": state.token_ttl,
                             "scope": "https://www.googleapis.com/auth/adwords",
                             "token_type": "Bearer"})

    async def handle(request: Request, step: str) -> JSONResponse:
        version = request.path_params["version"]
        customer_id = request.path_params["cid"]
        record: dict[str, Any] = {"step": step, "path": request.url.path,
                                  "headers": dict(request.headers), "body": None}
        script.requests.append(record)
        try:
            if version != state.api_version:
                raise AdsError(404, "NOT_FOUND", f"Version {version} is not served here.")
            _check_auth(request, state, customer_id)
            allowed = {
                "create": {"job", "validateOnly", "enableMatchRateRangePreview"},
                "addOperations": {"operations", "validateOnly", "enablePartialFailure",
                                  "enableWarnings"},
                "run": {"validateOnly"},
            }[step]
            body = await _json_body(request, allowed)
            record["body"] = body
            plan = script.next_plan()
            if plan is not None and plan.status is not None:
                if plan.body is not None:
                    headers = {"Retry-After": plan.retry_after} if plan.retry_after else None
                    return JSONResponse(plan.body, status_code=plan.status, headers=headers)
                return default_failure(plan.status, plan.retry_after).response(version)
            if plan is not None and plan.delay and not plan.accept:
                await asyncio.sleep(plan.delay)
                return AdsError(503, "UNAVAILABLE", "The service is currently unavailable."
                                ).response(version)
            if step == "create":
                answer = _create(state, customer_id, body)
            else:
                job = state.jobs.get(f"customers/{customer_id}/offlineUserDataJobs/"
                                     f"{request.path_params['job_id']}")
                if job is None:
                    raise AdsError(404, "NOT_FOUND", "Requested entity was not found.")
                if job.status != "PENDING":
                    raise invalid("offlineUserDataJobError", "JOB_ALREADY_STARTED",
                                  f"The job is {job.status}; only a PENDING job takes "
                                  "operations or runs.")
                if step == "addOperations":
                    operations = _operations(state, body)
                    job.operations.extend(operations)
                    script.accepted.append({"step": step, "job": job.resource_name,
                                            "operations": operations})
                    answer = {}
                else:
                    _run(state, job)
                    script.accepted.append({"step": step, "job": job.resource_name})
                    answer = {"name": f"customers/{customer_id}/operations/"
                                      f"{secrets.token_hex(8)}"}
        except AdsError as error:
            return error.response(version)
        await apply_plan(plan)
        return JSONResponse(answer)

    async def create(request: Request) -> JSONResponse:
        return await handle(request, "create")

    async def add_operations(request: Request) -> JSONResponse:
        return await handle(request, "addOperations")

    async def run(request: Request) -> JSONResponse:
        return await handle(request, "run")

    jobs = "/{version}/customers/{cid}/offlineUserDataJobs"
    return Starlette(routes=[
        Route("/token", token, methods=["POST"]),
        Route(f"{jobs}:create", create, methods=["POST"]),
        Route(jobs + "/{job_id}:addOperations", add_operations, methods=["POST"]),
        Route(jobs + "/{job_id}:run", run, methods=["POST"]),
    ])


def _create(state: AdsState, customer_id: str, body: dict[str, Any]) -> dict[str, Any]:
    job = body.get("job")
    if not isinstance(job, dict):
        raise invalid("fieldError", "REQUIRED", "The required field was not present.",
                      [("job", None)])
    if job.get("type") != "CUSTOMER_MATCH_USER_LIST":
        raise invalid("offlineUserDataJobError", "INVALID_USER_LIST_TYPE",
                      f"Job type {job.get('type')!r} is not CUSTOMER_MATCH_USER_LIST.",
                      [("job", None), ("type", None)])
    metadata = job.get("customerMatchUserListMetadata")
    user_list = metadata.get("userList") if isinstance(metadata, dict) else None
    if (not isinstance(user_list, str) or user_list not in state.user_lists
            or not user_list.startswith(f"customers/{customer_id}/userLists/")):
        raise invalid("offlineUserDataJobError", "INVALID_USER_LIST_ID",
                      "The user list ID provided for the job is invalid.",
                      [("job", None), ("customer_match_user_list_metadata", None),
                       ("user_list", None)])
    name = f"customers/{customer_id}/offlineUserDataJobs/{len(state.jobs) + 1}"
    state.jobs[name] = Job(resource_name=name, user_list=user_list)
    return {"resourceName": name}


def _operations(state: AdsState, body: dict[str, Any]) -> list[dict[str, Any]]:
    operations = body.get("operations")
    if not isinstance(operations, list) or not operations:
        raise invalid("fieldError", "REQUIRED", "The required field was not present.",
                      [("operations", None)])
    if len(operations) > state.max_operations:
        raise invalid("offlineUserDataJobError", "TOO_MANY_USER_IDENTIFIERS",
                      f"At most {state.max_operations} operations per request.",
                      [("operations", None)])
    for index, operation in enumerate(operations):
        at: list[tuple[str, int | None]] = [("operations", index)]
        if not isinstance(operation, dict) or len(operation) != 1 or not set(operation) <= {
                "create", "remove", "removeAll"}:
            raise invalid("fieldError", "INVALID_VALUE", "An operation sets exactly one of "
                          "create, remove, removeAll.", at)
        (verb, value), = operation.items()
        if verb == "removeAll":
            if value is not True:
                raise invalid("fieldError", "INVALID_VALUE", "removeAll must be true.", at)
        else:
            member_row(value, [*at, (verb, None)])
    return operations


def _run(state: AdsState, job: Job) -> None:
    members = state.user_lists[job.user_list]
    job.status = "RUNNING"
    for operation in job.operations:
        (verb, value), = operation.items()
        if verb == "removeAll":
            members.clear()
        elif verb == "create":
            members.add(member_row(value, []))
        else:
            members.discard(member_row(value, []))
    job.status = "SUCCESS"
