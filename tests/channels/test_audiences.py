"""Ad-audience sync: normalisation and hashing, Facebook Custom Audiences and Google Customer
Match against local stand-ins that keep each audience as a set of hashed rows."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from pydantic import SecretStr

from cairn.channels.audiences import (
    normalise_country,
    normalise_email,
    normalise_name,
    normalise_phone,
    normalise_zip,
    prepare,
    sha256_hex,
)
from cairn.channels.base import AudienceMember, AudienceSyncer, ProviderError
from cairn.channels.facebook import FacebookAudienceSyncer, FacebookSettings
from cairn.channels.google_ads import GoogleAdsAudienceSyncer, GoogleAdsSettings
from tests.standins import facebook as fb_standin
from tests.standins import google_ads as ads_standin
from tests.standins.server import Plan, Script, StandInServer, refused_url

S = TypeVar("S", FacebookAudienceSyncer, GoogleAdsAudienceSyncer)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PEOPLE = [
    AudienceMember("c1", email=" Ada.Lovelace+news@Gmail.com ", phone="+44 (0)20 7183 8750",
                   first_name="Ada", last_name="Lovelace", country="GB", zip="SW1A 1AA"),
    AudienceMember("c2", email="grace@example.com"),
    AudienceMember("c3", phone="+1 (415) 555-2671"),
    AudienceMember("c4", first_name="Alan", last_name="Turing", country="gb", zip="CB2 1TN"),
    AudienceMember("c5", email="linus@example.org", country="US", zip="94105-1234"),
]
UNUSABLE = [
    AudienceMember("c6", country="US", zip="94105"),
    AudienceMember("c7", email="not-an-address", phone="415-555-2671"),
]

FB_ROWS = {
    frozenset({("EMAIL", sha("ada.lovelace+news@gmail.com")), ("PHONE", sha("442071838750")),
               ("FN", sha("ada")), ("LN", sha("lovelace")), ("COUNTRY", sha("gb")),
               ("ZIP", sha("sw1a1aa"))}),
    frozenset({("EMAIL", sha("grace@example.com"))}),
    frozenset({("PHONE", sha("14155552671"))}),
    frozenset({("FN", sha("alan")), ("LN", sha("turing")), ("COUNTRY", sha("gb")),
               ("ZIP", sha("cb21tn"))}),
    frozenset({("EMAIL", sha("linus@example.org")), ("COUNTRY", sha("us")),
               ("ZIP", sha("94105"))}),
}
ADS_ROWS = {
    frozenset({("hashedEmail", sha("adalovelace@gmail.com")),
               ("hashedPhoneNumber", sha("+442071838750")),
               ("addressInfo", f"{sha('ada')}|{sha('lovelace')}|GB|sw1a1aa")}),
    frozenset({("hashedEmail", sha("grace@example.com"))}),
    frozenset({("hashedPhoneNumber", sha("+14155552671"))}),
    frozenset({("addressInfo", f"{sha('alan')}|{sha('turing')}|GB|cb21tn")}),
    frozenset({("hashedEmail", sha("linus@example.org"))}),
}


@pytest_asyncio.fixture
async def closing() -> AsyncIterator[Callable[[S], S]]:
    made: list[FacebookAudienceSyncer | GoogleAdsAudienceSyncer] = []

    def keep(syncer: S) -> S:
        made.append(syncer)
        return syncer

    yield keep
    for syncer in made:
        await syncer.aclose()


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(("raw", "facebook", "google"), [
    ("  Test@Example.COM ", "test@example.com", "test@example.com"),
    ("John.Doe+ads@Gmail.com", "john.doe+ads@gmail.com", "johndoe@gmail.com"),
    ("j.doe+x@googlemail.com", "j.doe+x@googlemail.com", "jdoe@googlemail.com"),
    ("first.last+tag@company.com", "first.last+tag@company.com", "first.last+tag@company.com"),
    ("not-an-email", None, None),
    ("", None, None),
    (None, None, None),
])
def test_email_normalisation(raw: str | None, facebook: str | None, google: str | None) -> None:
    assert normalise_email(raw, "facebook") == facebook
    assert normalise_email(raw, "google") == google


@pytest.mark.parametrize(("raw", "facebook", "google"), [
    ("+1 (415) 555-2671", "14155552671", "+14155552671"),
    ("0044 20 7183 8750", "442071838750", "+442071838750"),
    ("+44 (0)20 7183 8750", "442071838750", "+442071838750"),
    ("+49.30.1234567", "49301234567", "+49301234567"),
    ("415-555-2671", None, None),  # no country code: the country cannot be guessed
    ("+0123456789", None, None),
    ("+1 415 CALL NOW", None, None),
    (None, None, None),
])
def test_phone_normalisation(raw: str | None, facebook: str | None, google: str | None) -> None:
    assert normalise_phone(raw, "facebook") == facebook
    assert normalise_phone(raw, "google") == google


@pytest.mark.parametrize(("raw", "expected"), [
    ("  O'Brien ", "obrien"),
    ("Jean-Luc", "jeanluc"),
    ("  Mary   Ann ", "mary ann"),
    ("JOSÉ", "josé"),
    ("Dr. Smith!", "dr smith"),
    ("!!!", None),
    (None, None),
])
def test_name_normalisation(raw: str | None, expected: str | None) -> None:
    assert normalise_name(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (" US ", "us"), ("U.S.", "us"), ("gb", "gb"), ("USA", None), ("", None),
])
def test_country_normalisation(raw: str, expected: str | None) -> None:
    assert normalise_country(raw) == expected


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("94105-1234", "us", "94105"),
    ("94105 1234", None, "94105"),
    ("9410", "us", None),
    ("SW1A 1AA", "gb", "sw1a1aa"),
    ("10115", "de", "10115"),
    ("  ", "gb", None),
])
def test_zip_normalisation(raw: str, country: str | None, expected: str | None) -> None:
    assert normalise_zip(raw, country) == expected


def test_hashing_of_a_known_value() -> None:
    assert sha256_hex("test@example.com") == (
        "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b")
    assert sha256_hex(normalise_email("  Test@Example.com", "facebook") or "") == (
        "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b")


def test_members_with_nothing_usable_are_dropped_and_counted() -> None:
    facebook = prepare([*PEOPLE, *UNUSABLE], "facebook")
    assert [m.contact_id for m in facebook.members] == ["c1", "c2", "c3", "c4", "c5"]
    assert facebook.dropped == 2
    # Google matches an address only with all four parts: a name and country alone is nothing.
    google = prepare([*PEOPLE, AudienceMember("c8", first_name="Alan", last_name="Turing",
                                              country="GB")], "google")
    assert [m.contact_id for m in google.members] == ["c1", "c2", "c3", "c4", "c5"]
    assert google.dropped == 1


def test_settings_read_audiences_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_FACEBOOK_AUDIENCES", '{"trial_users": "2385"}')
    monkeypatch.setenv("CAIRN_FACEBOOK_ACCESS_TOKEN", "secret-token")
    monkeypatch.setenv("CAIRN_GOOGLE_ADS_AUDIENCES", '{"trial_users": "customers/1/userLists/2"}')
    monkeypatch.setenv("CAIRN_GOOGLE_ADS_CUSTOMER_ID", "123-456-7890")
    facebook = FacebookSettings()
    google = GoogleAdsSettings()
    assert facebook.audiences == {"trial_users": "2385"}
    assert facebook.access_token is not None
    assert facebook.access_token.get_secret_value() == "secret-token"
    assert (facebook.api_version, facebook.batch_size) == ("v21.0", 10_000)
    assert google.audiences == {"trial_users": "customers/1/userLists/2"}
    assert (google.customer_id, google.api_version) == ("123-456-7890", "v18")
    assert google.token_uri == "https://oauth2.googleapis.com/token"


# --------------------------------------------------------------------------- Facebook

FB_AUDIENCE = "23850000000000001"


@dataclass
class FbEnv:
    script: Script
    state: fb_standin.GraphState
    url: str

    def settings(self, **overrides: Any) -> FacebookSettings:
        values: dict[str, Any] = {
            "access_token": SecretStr(fb_standin.TOKEN), "base_url": self.url,
            "audiences": {"trial_users": FB_AUDIENCE, "ghost": "23859999999999999"},
            "timeout": 2.0,
        }
        values.update(overrides)
        return FacebookSettings(**values)

    @property
    def members(self) -> set[frozenset[tuple[str, str]]]:
        return self.state.audiences[FB_AUDIENCE]


@pytest.fixture
def fb() -> Iterator[FbEnv]:
    script = Script()
    state = fb_standin.GraphState(audiences={FB_AUDIENCE: set()})
    with StandInServer(fb_standin.facebook_app(script, state)) as server:
        yield FbEnv(script, state, server.url)


async def test_facebook_add_in_batches_forms_one_session(fb: FbEnv, closing: Any) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings(batch_size=2)))
    assert syncer.idempotent
    assert isinstance(syncer, AudienceSyncer)
    receipt = await syncer.sync("trial_users", "add", [*PEOPLE, *UNUSABLE], "key-add-1")

    assert fb.members == FB_ROWS
    assert [r["method"] for r in fb.script.requests] == ["POST", "POST", "POST"]
    assert {r["path"] for r in fb.script.requests} == {f"/v21.0/{FB_AUDIENCE}/users"}
    for request in fb.script.requests:
        assert request["params"]["access_token"] == fb_standin.TOKEN
        assert request["query"] == ""  # token and hashes stay out of URLs
        assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    sessions = [a["session"] for a in fb.script.accepted]
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert {s["estimated_num_total"] for s in sessions} == {5}
    assert len({s["session_id"] for s in sessions}) == 1
    assert 0 < sessions[0]["session_id"] < 2**63
    assert [len(a["data"]) for a in fb.script.accepted] == [2, 2, 1]
    assert fb.script.accepted[0]["schema"] == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY", "ZIP"]
    # A member without a column sends an empty value in it.
    assert fb.script.accepted[0]["data"][1] == [sha("grace@example.com"), "", "", "", "", ""]

    assert receipt.provider == "facebook"
    assert receipt.provider_message_id == str(sessions[0]["session_id"])
    assert receipt.response["num_received"] == 5
    assert receipt.response["num_invalid_entries"] == 0
    assert receipt.response["batches"] == 3
    assert receipt.response["dropped"] == 2


async def test_facebook_schema_names_only_the_columns_in_use(fb: FbEnv, closing: Any) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    await syncer.sync("trial_users", "add", [PEOPLE[1], PEOPLE[2]], "key-cols")
    assert fb.script.accepted[0]["schema"] == ["EMAIL", "PHONE"]
    assert fb.script.accepted[0]["data"] == [[sha("grace@example.com"), ""],
                                            ["", sha("14155552671")]]


async def test_facebook_add_then_remove_leaves_the_audience_empty(
    fb: FbEnv, closing: Any,
) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings(batch_size=3)))
    await syncer.sync("trial_users", "add", PEOPLE, "key-add")
    assert len(fb.members) == 5
    receipt = await syncer.sync("trial_users", "remove", PEOPLE, "key-remove")
    assert fb.members == set()
    assert [r["method"] for r in fb.script.requests] == ["POST", "POST", "DELETE", "DELETE"]
    assert receipt.response["action"] == "remove"
    add_session = fb.script.accepted[0]["session"]["session_id"]
    assert fb.script.accepted[2]["session"]["session_id"] != add_session


async def test_facebook_repeated_add_with_the_same_key_keeps_one_copy(
    fb: FbEnv, closing: Any,
) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings(batch_size=2)))
    first = await syncer.sync("trial_users", "add", PEOPLE, "key-same")
    second = await syncer.sync("trial_users", "add", PEOPLE, "key-same")
    assert fb.members == FB_ROWS
    assert first.provider_message_id == second.provider_message_id
    assert len(fb.script.accepted) == 6


async def test_facebook_nothing_usable_sends_nothing(fb: FbEnv, closing: Any) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    receipt = await syncer.sync("trial_users", "add", UNUSABLE, "key-none")
    assert fb.script.requests == []
    assert receipt.response["dropped"] == 2
    assert receipt.response["batches"] == 0


async def test_facebook_unknown_audience_name_is_permanent(fb: FbEnv, closing: Any) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("vip", "add", PEOPLE, "key-x")
    assert not caught.value.retryable
    assert "CAIRN_FACEBOOK_AUDIENCES" in str(caught.value)
    assert caught.value.code == "unknown_audience"
    assert fb.script.requests == []


async def test_facebook_unknown_action_and_missing_token_are_permanent(
    fb: FbEnv, closing: Any,
) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as action:
        await syncer.sync("trial_users", "replace", PEOPLE, "key-x")
    assert not action.value.retryable and action.value.code == "action"
    tokenless = closing(FacebookAudienceSyncer(fb.settings(access_token=None)))
    with pytest.raises(ProviderError) as token:
        await tokenless.sync("trial_users", "add", PEOPLE, "key-x")
    assert not token.value.retryable
    assert "CAIRN_FACEBOOK_ACCESS_TOKEN" in str(token.value)
    assert fb.script.requests == []


async def test_facebook_rejected_token_is_permanent(fb: FbEnv, closing: Any) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings(access_token=SecretStr("expired"))))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.status) == (False, "190", 400)
    assert "CAIRN_FACEBOOK_ACCESS_TOKEN" in str(error)
    assert not error.outcome_unknown and not error.invalid_recipient
    assert fb.members == set()


async def test_facebook_missing_audience_object_is_permanent(fb: FbEnv, closing: Any) -> None:
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("ghost", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code) == (False, "100")
    assert "23859999999999999" in str(error) and "CAIRN_FACEBOOK_AUDIENCES" in str(error)
    assert "fbtrace_id" in str(error)


async def test_facebook_invalid_parameter_is_permanent(fb: FbEnv, closing: Any) -> None:
    fb.script.fail(400)
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (caught.value.retryable, caught.value.code, caught.value.retry_after) == (
        False, "100", None)
    assert fb.members == set()


async def test_facebook_rate_limit_waits_as_the_usage_header_says(
    fb: FbEnv, closing: Any,
) -> None:
    fb.script.fail(400, body={"error": {
        "message": "There have been too many calls for this ad account.", "type": "OAuthException",
        "code": 80003, "error_subcode": 2446079, "is_transient": True, "fbtrace_id": "Axyz"}},
        retry_after="2")
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.retry_after) == (True, "80003", 120.0)
    assert not error.outcome_unknown


async def test_facebook_429_is_retryable_with_its_wait(fb: FbEnv, closing: Any) -> None:
    fb.script.fail(429, retry_after="1")  # Graph's code 17 user request limit
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (caught.value.retryable, caught.value.code, caught.value.retry_after) == (
        True, "17", 60.0)


async def test_facebook_5xx_is_retryable_with_retry_after(fb: FbEnv, closing: Any) -> None:
    fb.script.fail(503, retry_after="7")
    fb.script.fail(500)
    syncer = closing(FacebookAudienceSyncer(fb.settings()))
    with pytest.raises(ProviderError) as unavailable:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (unavailable.value.retryable, unavailable.value.code) == (True, "2")
    assert unavailable.value.retry_after == 7.0
    with pytest.raises(ProviderError) as unknown:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (unknown.value.retryable, unknown.value.code, unknown.value.status) == (True, "1", 500)
    assert fb.members == set()


async def test_facebook_failure_mid_session_then_retry_completes(
    fb: FbEnv, closing: Any,
) -> None:
    fb.script.plans.append(Plan())
    fb.script.fail(500)
    syncer = closing(FacebookAudienceSyncer(fb.settings(batch_size=2)))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-retry")
    assert caught.value.retryable
    assert len(fb.members) == 2
    await syncer.sync("trial_users", "add", PEOPLE, "key-retry")
    assert fb.members == FB_ROWS


async def test_facebook_slow_answer_is_outcome_unknown_but_accepted(
    fb: FbEnv, closing: Any,
) -> None:
    fb.script.slow(0.8)
    syncer = closing(FacebookAudienceSyncer(fb.settings(timeout=0.3)))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-slow")
    assert caught.value.retryable and caught.value.outcome_unknown
    assert fb.members == FB_ROWS
    assert len(fb.script.accepted) == 1


async def test_facebook_refused_connection_is_retryable_and_known(closing: Any) -> None:
    settings = FacebookSettings(access_token=SecretStr("t"), base_url=refused_url(),
                                audiences={"trial_users": FB_AUDIENCE}, timeout=1.0)
    syncer = closing(FacebookAudienceSyncer(settings))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert caught.value.retryable and not caught.value.outcome_unknown


# --------------------------------------------------------------------------- Google Ads

USER_LIST = f"customers/{ads_standin.CUSTOMER_ID}/userLists/555"


@dataclass
class AdsEnv:
    script: Script
    state: ads_standin.AdsState
    url: str

    def settings(self, **overrides: Any) -> GoogleAdsSettings:
        values: dict[str, Any] = {
            "developer_token": SecretStr(ads_standin.DEVELOPER_TOKEN),
            "customer_id": "123-456-7890",
            "client_id": ads_standin.CLIENT_ID,
            "client_secret": SecretStr(ads_standin.CLIENT_SECRET),
            "refresh_token": SecretStr(ads_standin.REFRESH_TOKEN),
            "token_uri": f"{self.url}/token",
            "base_url": self.url,
            "audiences": {"trial_users": "555", "by_name": USER_LIST,
                          "ghost": f"customers/{ads_standin.CUSTOMER_ID}/userLists/999"},
            "timeout": 2.0,
        }
        values.update(overrides)
        return GoogleAdsSettings(**values)

    @property
    def members(self) -> set[frozenset[tuple[str, str]]]:
        return self.state.user_lists[USER_LIST]

    def steps(self) -> list[str]:
        return [r["step"] for r in self.script.requests]


@pytest.fixture
def ads() -> Iterator[AdsEnv]:
    script = Script()
    state = ads_standin.AdsState(user_lists={USER_LIST: set()})
    with StandInServer(ads_standin.google_ads_app(script, state)) as server:
        yield AdsEnv(script, state, server.url)


async def test_google_add_runs_one_job_in_batches(ads: AdsEnv, closing: Any) -> None:
    ads.state.max_operations = 2
    ads.state.login_customer_id = "9876543210"
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(batch_size=2,
                                                          login_customer_id="987-654-3210")))
    assert syncer.idempotent
    assert isinstance(syncer, AudienceSyncer)
    receipt = await syncer.sync("trial_users", "add", [*PEOPLE, *UNUSABLE], "key-add-1")

    assert ads.members == ADS_ROWS
    assert ads.state.token_requests == [{
        "grant_type": "refresh_token", "client_id": ads_standin.CLIENT_ID,
        "client_secret": ads_standin.CLIENT_SECRET, "refresh_token": ads_standin.REFRESH_TOKEN,
    }]
    assert ads.steps() == ["create", "addOperations", "addOperations", "addOperations", "run"]
    job = "customers/1234567890/offlineUserDataJobs/1"
    assert [r["path"] for r in ads.script.requests] == [
        "/v18/customers/1234567890/offlineUserDataJobs:create",
        f"/v18/{job}:addOperations", f"/v18/{job}:addOperations", f"/v18/{job}:addOperations",
        f"/v18/{job}:run",
    ]
    (access_token,) = ads.state.issued
    for request in ads.script.requests:
        assert request["headers"]["authorization"] == f"Bearer {access_token}"
        assert request["headers"]["developer-token"] == ads_standin.DEVELOPER_TOKEN
        assert request["headers"]["login-customer-id"] == "9876543210"
    assert ads.script.requests[0]["body"] == {"job": {
        "type": "CUSTOMER_MATCH_USER_LIST",
        "customerMatchUserListMetadata": {"userList": USER_LIST},
    }}
    first_batch = ads.script.accepted[0]["operations"]
    assert first_batch[0] == {"create": {"userIdentifiers": [
        {"hashedEmail": sha("adalovelace@gmail.com")},
        {"hashedPhoneNumber": sha("+442071838750")},
        {"addressInfo": {"hashedFirstName": sha("ada"), "hashedLastName": sha("lovelace"),
                         "countryCode": "GB", "postalCode": "sw1a1aa"}},
    ]}}
    assert ads.state.jobs[job].status == "SUCCESS"
    assert receipt.provider == "google_ads"
    assert receipt.provider_message_id == job
    assert receipt.response["batches"] == 3
    assert receipt.response["members"] == 5 and receipt.response["dropped"] == 2
    assert receipt.response["operation"].startswith("customers/1234567890/operations/")


async def test_google_add_then_remove_leaves_the_list_empty_with_one_token(
    ads: AdsEnv, closing: Any,
) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    await syncer.sync("by_name", "add", PEOPLE, "key-add")
    assert ads.members == ADS_ROWS
    await syncer.sync("trial_users", "remove", PEOPLE, "key-remove")
    assert ads.members == set()
    assert all("remove" in op for op in ads.script.accepted[-2]["operations"])
    assert len(ads.state.token_requests) == 1  # cached until it expires


async def test_google_repeated_add_with_the_same_key_keeps_one_copy(
    ads: AdsEnv, closing: Any,
) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    await syncer.sync("trial_users", "add", PEOPLE, "key-same")
    await syncer.sync("trial_users", "add", PEOPLE, "key-same")
    assert ads.members == ADS_ROWS
    assert len(ads.state.jobs) == 2


async def test_google_token_is_refreshed_before_it_expires(ads: AdsEnv, closing: Any) -> None:
    ads.state.token_ttl = 1  # reused for half its life, then exchanged again
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    await syncer.sync("trial_users", "add", PEOPLE[:1], "key-1")
    await syncer.sync("trial_users", "add", PEOPLE[1:2], "key-2")
    assert len(ads.state.token_requests) == 1
    await asyncio.sleep(0.6)
    await syncer.sync("trial_users", "add", PEOPLE[2:3], "key-3")
    assert len(ads.state.token_requests) == 2
    assert len(ads.members) == 3


async def test_google_revoked_cached_token_is_exchanged_once_more(
    ads: AdsEnv, closing: Any,
) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    await syncer.sync("trial_users", "add", PEOPLE[:1], "key-1")
    ads.state.issued.clear()  # revoked behind our back
    await syncer.sync("trial_users", "add", PEOPLE[1:2], "key-2")
    assert len(ads.state.token_requests) == 2
    assert ads.steps() == ["create", "addOperations", "run", "create", "create",
                           "addOperations", "run"]
    assert len(ads.members) == 2


async def test_google_nothing_usable_sends_nothing(ads: AdsEnv, closing: Any) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    receipt = await syncer.sync("trial_users", "add", UNUSABLE, "key-none")
    assert ads.script.requests == [] and ads.state.token_requests == []
    assert receipt.response["dropped"] == 2 and receipt.provider_message_id is None


async def test_google_unknown_audience_name_is_permanent(ads: AdsEnv, closing: Any) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("vip", "add", PEOPLE, "key-x")
    assert not caught.value.retryable
    assert "CAIRN_GOOGLE_ADS_AUDIENCES" in str(caught.value)
    assert ads.script.requests == [] and ads.state.token_requests == []


async def test_google_user_list_unknown_to_google_is_permanent(
    ads: AdsEnv, closing: Any,
) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("ghost", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.status) == (False, "INVALID_ARGUMENT", 400)
    assert "offlineUserDataJobError.INVALID_USER_LIST_ID" in str(error)
    assert "CAIRN_GOOGLE_ADS_AUDIENCES" in str(error)


async def test_google_unauthenticated_developer_token_is_permanent(
    ads: AdsEnv, closing: Any,
) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(developer_token=SecretStr("wrong"))))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.status) == (False, "UNAUTHENTICATED", 401)
    assert "CAIRN_GOOGLE_ADS_DEVELOPER_TOKEN" in str(error)
    assert len(ads.state.token_requests) == 1  # a fresh token is not exchanged again
    assert ads.steps() == ["create"]


async def test_google_revoked_refresh_token_is_permanent(ads: AdsEnv, closing: Any) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(refresh_token=SecretStr("1//old"))))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.status) == (False, "invalid_grant", 400)
    assert "CAIRN_GOOGLE_ADS_REFRESH_TOKEN" in str(error)
    assert ads.script.requests == []


async def test_google_wrong_oauth_client_is_permanent(ads: AdsEnv, closing: Any) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(client_secret=SecretStr("nope"))))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (caught.value.retryable, caught.value.code) == (False, "invalid_client")
    assert "CAIRN_GOOGLE_ADS_CLIENT_SECRET" in str(caught.value)


async def test_google_token_endpoint_outage_is_retryable(ads: AdsEnv, closing: Any) -> None:
    ads.state.token_script.fail(503, retry_after="4")
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert caught.value.retryable and caught.value.retry_after == 4.0
    assert not caught.value.outcome_unknown
    assert ads.script.requests == []


async def test_google_missing_login_customer_is_permission_denied(
    ads: AdsEnv, closing: Any,
) -> None:
    ads.state.login_customer_id = "9876543210"
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.status) == (False, "PERMISSION_DENIED", 403)
    assert "CAIRN_GOOGLE_ADS_LOGIN_CUSTOMER_ID" in str(error)


async def test_google_resource_exhausted_carries_the_retry_delay(
    ads: AdsEnv, closing: Any,
) -> None:
    ads.script.fail(429, retry_after="30")
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    error = caught.value
    assert (error.retryable, error.code, error.retry_after) == (True, "RESOURCE_EXHAUSTED", 30.0)
    assert "quotaError.RESOURCE_EXHAUSTED" in str(error)
    assert ads.members == set()


async def test_google_unavailable_and_internal_are_retryable(ads: AdsEnv, closing: Any) -> None:
    ads.script.plans.append(Plan())
    ads.script.fail(503)
    ads.script.fail(500)
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings()))
    with pytest.raises(ProviderError) as unavailable:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (unavailable.value.retryable, unavailable.value.code) == (True, "UNAVAILABLE")
    assert ads.steps() == ["create", "addOperations"]
    with pytest.raises(ProviderError) as internal:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert (internal.value.retryable, internal.value.code) == (True, "INTERNAL")
    assert ads.members == set()  # no job ran


async def test_google_slow_run_is_outcome_unknown_but_applied(ads: AdsEnv, closing: Any) -> None:
    ads.script.plans.extend([Plan(), Plan()])
    ads.script.slow(0.8)
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(timeout=0.3)))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-slow")
    assert caught.value.retryable and caught.value.outcome_unknown
    assert ads.members == ADS_ROWS
    assert ads.script.accepted[-1]["step"] == "run"


async def test_google_slow_add_operations_is_known_unapplied(ads: AdsEnv, closing: Any) -> None:
    ads.script.plans.append(Plan())
    ads.script.slow(0.8)
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(timeout=0.3)))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-slow")
    assert caught.value.retryable and not caught.value.outcome_unknown
    assert len(ads.script.accepted[0]["operations"]) == 5  # Google took them...
    assert ads.members == set()  # ...but the job never ran
    assert ads.state.jobs["customers/1234567890/offlineUserDataJobs/1"].status == "PENDING"


async def test_google_refused_connection_is_retryable_and_known(
    ads: AdsEnv, closing: Any,
) -> None:
    syncer = closing(GoogleAdsAudienceSyncer(ads.settings(base_url=refused_url())))
    with pytest.raises(ProviderError) as caught:
        await syncer.sync("trial_users", "add", PEOPLE, "key-x")
    assert caught.value.retryable and not caught.value.outcome_unknown
    assert len(ads.state.token_requests) == 1


def test_google_stand_in_rejects_what_google_rejects() -> None:
    """The stand-in's own checks, so a syncer bug cannot pass unnoticed."""
    with pytest.raises(ads_standin.AdsError) as unhashed:
        ads_standin.member_row({"userIdentifiers": [{"hashedEmail": "ada@example.com"}]}, [])
    assert unhashed.value.errors is not None
    assert unhashed.value.errors[0]["errorCode"] == {
        "offlineUserDataJobError": "INVALID_SHA256_FORMAT"}
    with pytest.raises(ads_standin.AdsError):
        ads_standin.member_row({"userIdentifiers": [{"addressInfo": {
            "hashedFirstName": sha("ada"), "hashedLastName": sha("lovelace"),
            "countryCode": "gb", "postalCode": "sw1a1aa"}}]}, [])
    with pytest.raises(fb_standin.GraphError) as columns:
        fb_standin.parse_payload({"schema": ["EMAIL", "PHONE"], "data": [[sha("a")]]}, 10)
    assert columns.value.code == 100
    with pytest.raises(fb_standin.GraphError):
        fb_standin.parse_payload({"schema": ["EMAIL"], "data": [["ada@example.com"]]}, 10)
    with pytest.raises(fb_standin.GraphError):
        fb_standin.parse_payload({"schema": ["EMAIL"], "data": [[sha("a")]] * 3}, 2)
    assert json.loads(json.dumps(fb_standin.default_failure(503)))["error"]["code"] == 2
