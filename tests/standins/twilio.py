"""A stand-in for Twilio's Messages resource: `POST /2010-04-01/Accounts/{sid}/Messages.json`.

It answers like Twilio: HTTP Basic auth with the account SID and Auth Token (401, code 20003),
form-encoded parameters only (a JSON body reads as a missing `To`, 21604, as on Twilio), a
sender (`From` or `MessagingServiceSid`, 21603), a body or media (21602), WhatsApp addresses on
both ends (63007), and numbers the test marks invalid (21211), not mobile (21614) or opted out
(21610). Accepted messages answer 201 with a message resource whose `sid` is "SM" + 32 hex.

`GET` on the same path is the Messages list: `To` and `From` filters, newest first, `PageSize`,
`{messages: [...], page, page_size}` with the resources it created.

A message sent through a Messaging Service is answered `accepted` with no `from`; in the list it
shows the number the service picked (`TwilioAccount.service_numbers`) and, for a service with
Smart Encoding on (`smart_encoded_services`), the body with typographic punctuation and spaces
replaced by GSM-7 look-alikes, as Twilio sends it.

Plans: `fail(status)` answers that status with Twilio's error shape (code 20429 for 429, 20500
for 5xx unless a body is given); `slow(seconds)` records the message as accepted, then answers
late; `slow(seconds, accept=False)` waits and answers 503 without accepting anything.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.standins.server import Script, apply_plan

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "stand-in-auth-token"
MESSAGES_PATH = "/2010-04-01/Accounts/{account_sid}/Messages.json"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@dataclass
class TwilioAccount:
    """The account the stand-in serves and the numbers it treats specially."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    invalid_numbers: set[str] = field(default_factory=set)
    not_mobile: set[str] = field(default_factory=set)
    opted_out: set[str] = field(default_factory=set)
    service_numbers: dict[str, str] = field(default_factory=dict)
    """Messaging Service SID -> the number it sends from (any other service: `POOL_NUMBER`)."""
    smart_encoded_services: set[str] = field(default_factory=set)


POOL_NUMBER = "+15005550006"

SMART_ENCODING = str.maketrans({
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2022": "-",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
})
"""Some of what Twilio's Smart Encoding replaces (its published table has more)."""


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message,
         "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status_code=status,
    )


def _planned_error(status: int, body: Any, retry_after: str | None) -> JSONResponse:
    if body is None:
        code = 20429 if status == 429 else 20500 if status >= 500 else 20001
        text = "Too Many Requests" if status == 429 else "Internal Server Error"
        body = {"code": code, "message": text,
                "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


def _credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _bare(address: str) -> str:
    return address[len("whatsapp:"):] if address.lower().startswith("whatsapp:") else address


def _resource(account: TwilioAccount, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(UTC))
    service = form.get("MessagingServiceSid")
    uri = f"/2010-04-01/Accounts/{account.account_sid}/Messages/{sid}.json"
    return {
        "account_sid": account.account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body", ""),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        # With a Messaging Service, Twilio picks the sender later and answers "accepted".
        "from": form.get("From"),
        "messaging_service_sid": service,
        "num_media": "1" if form.get("MediaUrl") else "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if service else "queued",
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": form.get("To"),
        "uri": uri,
    }


def _invalid(account: TwilioAccount, form: dict[str, str]) -> JSONResponse | None:
    """Twilio's 400s for a request it will not take, in the order Twilio checks them."""
    to = form.get("To", "")
    sender = form.get("From", "")
    if not to:
        return twilio_error(400, 21604, "A 'To' phone number is required.")
    if not sender and not form.get("MessagingServiceSid"):
        return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is "
                                        "required to send a message.")
    if not form.get("Body") and not form.get("MediaUrl"):
        return twilio_error(400, 21602, "Message body is required.")
    number = _bare(to)
    if not _E164.match(number) or number in account.invalid_numbers:
        return twilio_error(400, 21211, f"The 'To' number {number} is not a valid phone number.")
    if sender and to.lower().startswith("whatsapp:") != sender.lower().startswith("whatsapp:"):
        return twilio_error(400, 63007, "Twilio could not find a Channel with the specified "
                                        "From address")
    if number in account.not_mobile:
        return twilio_error(400, 21614, f"'To' number {number} is not a valid mobile number")
    if number in account.opted_out:
        return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
    return None


def twilio_app(script: Script, account: TwilioAccount | None = None) -> Starlette:
    """The Messages endpoint around `script`; `account` holds credentials and special numbers."""
    account = account or TwilioAccount()
    created: list[dict[str, Any]] = []  # the message resources, oldest first

    async def list_messages(request: Request) -> JSONResponse:
        if (_credentials(request) != (account.account_sid, account.auth_token)
                or request.path_params["account_sid"] != account.account_sid):
            return twilio_error(401, 20003, "Authenticate")
        query = request.query_params
        size = int(query.get("PageSize", "50"))
        found = [m for m in reversed(created)
                 if all(m.get(field) == query[name] for name, field in
                        (("To", "to"), ("From", "from")) if name in query)]
        return JSONResponse({"messages": found[:size], "page": 0, "page_size": size,
                             "uri": request.url.path})

    async def create_message(request: Request) -> JSONResponse:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        form: dict[str, str] = {}
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        credentials = _credentials(request)
        script.requests.append({
            "path": request.url.path, "method": request.method,
            "headers": dict(request.headers), "auth": credentials, "form": form,
            "raw": raw.decode(errors="replace"),
        })
        if (credentials != (account.account_sid, account.auth_token)
                or request.path_params["account_sid"] != account.account_sid):
            response = twilio_error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        plan = script.next_plan()
        if plan is not None and plan.status is not None:
            return _planned_error(plan.status, plan.body, plan.retry_after)
        if plan is not None and plan.delay and not plan.accept:
            await apply_plan(plan)
            return twilio_error(503, 20503, "Service Unavailable")
        problem = _invalid(account, form)
        if problem is not None:
            return problem
        resource = _resource(account, form)
        script.accepted.append({"sid": resource["sid"], "form": form,
                                "path": request.url.path, "auth": credentials})
        answer = JSONResponse(resource, status_code=201)
        service = form.get("MessagingServiceSid")
        if service:  # what the list shows once the service has sent it
            resource = {**resource, "status": "sent",
                        "from": account.service_numbers.get(service, POOL_NUMBER)}
            if service in account.smart_encoded_services:
                resource["body"] = resource["body"].translate(SMART_ENCODING)
        created.append(resource)
        await apply_plan(plan)
        return answer

    return Starlette(routes=[
        Route("/2010-04-01/Accounts/{account_sid}/Messages.json", create_message,
              methods=["POST"]),
        Route("/2010-04-01/Accounts/{account_sid}/Messages.json", list_messages,
              methods=["GET"]),
    ])
