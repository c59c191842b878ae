"""Tests of the ClassLink (OneRoster 1.1) simulator, over real HTTP, against the fact file."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    SIGNATURE_TYPE_AUTH_HEADER,
    Client,
)
from yarl import URL

from simulators.classlink import ClassLinkSimulator
from simulators.powerschool import demo_dataset
from simulators.roster import RosterPerson, roster_from_powerschool

USER_KEYS = [
    "sourcedId", "status", "dateLastModified", "metadata", "username", "userIds", "enabledUser",
    "givenName", "familyName", "middleName", "role", "identifier", "email", "sms", "phone",
    "agents", "orgs", "grades", "password",
]  # fmt: skip


class OneRoster:
    """Tiny raw OAuth1-signing HTTP client for the tests (not the service's client)."""

    def __init__(self, sim: ClassLinkSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    def url(self, path: str, params: Mapping[str, str | int] | None = None) -> str:
        url = URL(self.sim.api_url + path)
        if params:
            url = url.with_query({k: str(v) for k, v in params.items()})
        return str(url)

    def sign(
        self,
        url: str,
        *,
        client_id: str | None = None,
        secret: str | None = None,
        method: str = SIGNATURE_HMAC_SHA256,
        timestamp: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        client = Client(
            client_id or self.sim.client_id,
            client_secret=secret or self.sim.client_secret,
            signature_method=method,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
            timestamp=timestamp,
        )
        uri, headers, _ = client.sign(url, http_method="GET")
        return uri, dict(headers)

    async def fetch(
        self, uri: str, headers: Mapping[str, str]
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        async with self.session.get(URL(uri, encoded=True), headers=headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json(), resp.headers
            return resp.status, await resp.text(), resp.headers

    async def get(
        self, path: str, params: Mapping[str, str | int] | None = None, **sign: Any
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        return await self.fetch(*self.sign(self.url(path, params), **sign))


def _people(n_per_school: int = 5, **kw: Any) -> list[RosterPerson]:
    return roster_from_powerschool(demo_dataset(n_per_school), "classlink", **kw)


def _links(header: str) -> dict[str, str]:
    return {rel: url for url, rel in re.findall(r'<([^>]*)>;\s*rel="(\w+)"', header)}


def _assert_unauthorised(status: int, body: Any) -> None:
    assert status == 401
    assert body["imsx_codeMajor"] == "failure"
    assert body["imsx_severity"] == "error"
    assert body["imsx_description"]
    assert body["imsx_CodeMinor"] == {
        "imsx_codeMinorField": [
            {
                "imsx_codeMinorFieldName": "TargetEndSystem",
                "imsx_codeMinorFieldValue": "unauthorisedrequest",
            }
        ]
    }


def _code_minor(body: Any) -> str:
    value: str = body["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]
    return value


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sims() -> AsyncIterator[list[ClassLinkSimulator]]:
    started: list[ClassLinkSimulator] = []
    yield started
    for sim in started:
        await sim.stop()


async def make(
    session: aiohttp.ClientSession, sims: list[ClassLinkSimulator], *args: Any, **kw: Any
) -> OneRoster:
    sim = ClassLinkSimulator(*args, **kw)
    await sim.start()
    sims.append(sim)
    return OneRoster(sim, session)


@pytest.fixture
async def roster(session: aiohttp.ClientSession, sims: list[ClassLinkSimulator]) -> OneRoster:
    return await make(session, sims, _people())


# ---------------------------------------------------------------------------------------------
# OAuth 1.0a
# ---------------------------------------------------------------------------------------------


async def test_signed_request_is_accepted_and_users_have_the_oneroster_shape(
    roster: OneRoster,
) -> None:
    status, body, headers = await roster.get("/students", {"limit": 3})
    assert status == 200
    assert headers["X-Total-Count"] == "10"
    assert len(body["users"]) == 3
    person = roster.sim.people()[0]
    user = body["users"][0]
    assert list(user) == USER_KEYS
    assert user["sourcedId"] == person.sis_id == person.roster_id
    assert user["identifier"] == person.student_number
    assert user["status"] == "active"
    assert user["enabledUser"] == "true"
    assert user["role"] == "student"
    assert user["userIds"] == [{"type": "Fed", "identifier": person.sis_id}]
    assert user["orgs"][0]["sourcedId"] == person.school_id
    assert user["orgs"][0]["type"] == "org"
    assert user["orgs"][0]["href"].startswith("https://elsewhere.example/")
    assert user["grades"] == [person.grade.zfill(2)]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", user["dateLastModified"])
    assert (user["givenName"], user["familyName"]) == (person.first_name, person.last_name)
    assert roster.sim.rejected_signatures == 0

    status, single, _ = await roster.get(f"/students/{person.roster_id}")
    assert status == 200
    assert single == {"user": user}


def _classlink_style_header(url: str, key: str, secret: str) -> str:
    """ClassLink's library algorithm, written out by hand: HMAC-SHA256, no ``oauth_version``."""

    def pct(text: str) -> str:
        return quote(text, safe="~")

    parts = urlsplit(url)
    stamp = str(int(time.time()))
    oauth = {
        "oauth_consumer_key": key,
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": stamp,
        "oauth_nonce": secrets.token_hex(len(stamp))[: len(stamp)],
    }
    pairs = parse_qsl(parts.query, keep_blank_values=True) + list(oauth.items())
    normalized = "&".join(f"{k}={v}" for k, v in sorted((pct(k), pct(v)) for k, v in pairs))
    base = "&".join(["GET", pct(f"{parts.scheme}://{parts.netloc}{parts.path}"), pct(normalized)])
    digest = hmac.new(f"{pct(secret)}&".encode(), base.encode(), hashlib.sha256).digest()
    oauth["oauth_signature"] = base64.b64encode(digest).decode()
    return "OAuth " + ",".join(f'{k}="{pct(v)}"' for k, v in oauth.items())


async def test_hand_signed_request_without_oauth_version_is_accepted(roster: OneRoster) -> None:
    url = roster.url(
        "/students",
        {"limit": 2, "offset": 0, "filter": "familyName!='Nobody Here' AND role='student'"},
    )
    header = _classlink_style_header(url, roster.sim.client_id, roster.sim.client_secret)
    status, body, _ = await roster.fetch(url, {"Authorization": header})
    assert status == 200, body
    assert len(body["users"]) == 2


async def test_bad_signatures_are_rejected_with_401_imsx(
    roster: OneRoster, session: aiohttp.ClientSession, sims: list[ClassLinkSimulator]
) -> None:
    sim = roster.sim
    status, body, response_headers = await roster.fetch(roster.url("/students"), {})
    _assert_unauthorised(status, body)
    assert response_headers["WWW-Authenticate"].startswith("OAuth")
    _assert_unauthorised(*(await roster.get("/students", secret="wrong-secret"))[:2])
    _assert_unauthorised(*(await roster.get("/students", client_id="someone-else"))[:2])

    uri, headers = roster.sign(roster.url("/students", {"limit": 5}))
    tampered = uri.replace("limit=5", "limit=6")
    _assert_unauthorised(*(await roster.fetch(tampered, headers))[:2])

    uri, headers = roster.sign(roster.url("/students", {"limit": 1}))
    assert (await roster.fetch(uri, headers))[0] == 200
    _assert_unauthorised(*(await roster.fetch(uri, headers))[:2])  # nonce replayed

    stale = str(int(time.time()) - 1000)
    _assert_unauthorised(*(await roster.get("/students", timestamp=stale))[:2])
    future = str(int(time.time()) + 1000)
    _assert_unauthorised(*(await roster.get("/students", timestamp=future))[:2])
    _assert_unauthorised(*(await roster.get("/students", method=SIGNATURE_HMAC_SHA1))[:2])
    assert sim.rejected_signatures == 8

    legacy = await make(session, sims, _people(1), allow_sha1=True)
    assert (await legacy.get("/students", method=SIGNATURE_HMAC_SHA1))[0] == 200
    assert (await legacy.get("/students"))[0] == 200


# ---------------------------------------------------------------------------------------------
# Paging, sorting, filtering
# ---------------------------------------------------------------------------------------------


async def test_paging_with_total_count_and_link_header(roster: OneRoster) -> None:
    params: dict[str, str | int] = {"limit": 4, "offset": 0, "sort": "sourcedId", "orderBy": "asc"}
    status, body, headers = await roster.get("/students", params)
    assert status == 200
    assert headers["X-Total-Count"] == "10"
    links = _links(headers["Link"])
    assert set(links) == {"next", "last", "first"}
    assert URL(links["last"]).query["offset"] == "8"
    assert URL(links["next"]).query["sort"] == "sourcedId"

    ids = [u["sourcedId"] for u in body["users"]]
    pages = 1
    while "next" in links:
        status, body, headers = await roster.fetch(*roster.sign(links["next"]))
        assert status == 200
        pages += 1
        links = _links(headers["Link"])
        ids.extend(u["sourcedId"] for u in body["users"])
        assert "prev" in links
    assert pages == 3
    assert len(body["users"]) == 2
    assert ids == sorted(p.roster_id for p in roster.sim.people())

    _, body, _ = await roster.get("/students", {**params, "orderBy": "desc", "limit": 100})
    assert [u["sourcedId"] for u in body["users"]] == ids[::-1]
    _, body, _ = await roster.get("/students", {**params, "orderBy": "dsc", "limit": 100})
    assert [u["sourcedId"] for u in body["users"]] == ids  # "dsc" silently ignored
    _, body, headers = await roster.get("/students", {"offset": 50})
    assert body == {"users": []}
    assert headers["X-Total-Count"] == "10"
    _, body, _ = await roster.get("/students")
    assert len(body["users"]) == 10  # default limit 100


async def test_no_link_header_when_disabled(
    session: aiohttp.ClientSession, sims: list[ClassLinkSimulator]
) -> None:
    roster = await make(session, sims, _people(1), link_header=False)
    _, _, headers = await roster.get("/students", {"limit": 1})
    assert "Link" not in headers
    assert headers["X-Total-Count"] == "2"


async def test_limit_filter_sort_and_selection_errors(roster: OneRoster) -> None:
    status, body, _ = await roster.get("/students", {"limit": 10001})
    assert status == 400
    assert body["imsx_codeMajor"] == "failure"
    assert (await roster.get("/students", {"limit": 10000}))[0] == 200
    for bad in (
        "shoeSize='9'",
        "status='active' AND role='student' AND givenName='A'",
        "status=active",
        "status='active' AND",
    ):
        status, body, _ = await roster.get("/students", {"filter": bad})
        assert status == 400, bad
        assert _code_minor(body) == "invalid_filter_field"
    status, body, _ = await roster.get("/students", {"sort": "shoeSize"})
    assert status == 400
    assert _code_minor(body) == "invalid_sort_field"
    status, body, _ = await roster.get("/students", {"fields": "sourcedId,shoeSize"})
    assert status == 400
    assert _code_minor(body) == "invalid_selection_field"
    status, body, _ = await roster.get("/students", {"fields": "sourcedId,identifier", "limit": 1})
    assert status == 200
    assert list(body["users"][0]) == ["sourcedId", "identifier"]
    status, body, _ = await roster.get("/students/nope")
    assert status == 404
    assert _code_minor(body) == "unknownobject"


async def test_delta_filter_sees_updates_creates_and_tobedeleted(roster: OneRoster) -> None:
    sim = roster.sim
    _, body, _ = await roster.get("/students", {"sort": "sourcedId"})
    cursor = max(u["dateLastModified"] for u in body["users"])
    delta = {"filter": f"dateLastModified>'{cursor}'"}
    assert (await roster.get("/students", delta))[1] == {"users": []}

    changed, gone = sim.people()[0], sim.people()[1]
    sim.update(changed.roster_id, student_number="999999")
    sim.create(RosterPerson("", "123456", "250001", "Nia", "Park", "org-100", "10"))
    sim.soft_delete(gone.roster_id)

    status, body, headers = await roster.get("/students", delta)
    assert status == 200
    assert headers["X-Total-Count"] == "3"
    by_id = {u["sourcedId"]: u for u in body["users"]}
    assert set(by_id) == {changed.roster_id, "123456", gone.roster_id}
    assert by_id[changed.roster_id]["identifier"] == "999999"
    assert by_id["123456"]["grades"] == ["10"]
    assert by_id[gone.roster_id]["status"] == "tobedeleted"
    assert by_id[gone.roster_id]["enabledUser"] == "false"
    assert all(u["dateLastModified"] > cursor for u in body["users"])

    both = {"filter": f"status='active' AND dateLastModified>'{cursor}'"}
    _, body, _ = await roster.get("/students", both)
    assert {u["sourcedId"] for u in body["users"]} == {changed.roster_id, "123456"}
    either = {"filter": "identifier='999999' OR identifier='250001'"}
    _, body, _ = await roster.get("/students", either)
    assert {u["sourcedId"] for u in body["users"]} == {changed.roster_id, "123456"}
    _, body, _ = await roster.get("/students", {"filter": "familyName~'ark'"})
    assert "123456" in {u["sourcedId"] for u in body["users"]}

    _, body, headers = await roster.get("/students")
    assert headers["X-Total-Count"] == "11"  # the tobedeleted user is still listed
    status, body, _ = await roster.get(f"/students/{gone.roster_id}")
    assert status == 200
    assert body["user"]["status"] == "tobedeleted"


async def test_hard_delete_disappears(roster: OneRoster) -> None:
    victim = roster.sim.people()[3]
    roster.sim.hard_delete(victim.roster_id)
    _, body, headers = await roster.get("/students", {"sort": "sourcedId"})
    assert headers["X-Total-Count"] == "9"
    assert victim.roster_id not in {u["sourcedId"] for u in body["users"]}
    status, body, _ = await roster.get(f"/students/{victim.roster_id}")
    assert status == 404
    assert _code_minor(body) == "unknownobject"
    assert len(roster.sim.people()) == 9


async def test_users_endpoint_role_filter_and_school_students(roster: OneRoster) -> None:
    roster.sim.create(
        RosterPerson("t-1", "t-1", "", "Ada", "Lovelace", "org-100", ""), role="teacher"
    )
    _, _, headers = await roster.get("/users")
    assert headers["X-Total-Count"] == "11"
    _, body, headers = await roster.get("/users", {"filter": "role='student'"})
    assert headers["X-Total-Count"] == "10"
    assert {u["role"] for u in body["users"]} == {"student"}
    _, body, _ = await roster.get("/teachers")
    assert [u["sourcedId"] for u in body["users"]] == ["t-1"]
    assert (await roster.get("/students/t-1"))[0] == 404
    assert (await roster.get("/users/t-1"))[1]["user"]["role"] == "teacher"
    _, body, headers = await roster.get("/schools/org-100/students")
    assert headers["X-Total-Count"] == "5"
    assert {u["orgs"][0]["sourcedId"] for u in body["users"]} == {"org-100"}


async def test_enabled_user_bool_and_empty_identifier(
    session: aiohttp.ClientSession, sims: list[ClassLinkSimulator]
) -> None:
    roster = await make(
        session, sims, _people(1, student_number_field="none"), enabled_user_as_string=False
    )
    roster.sim.soft_delete(roster.sim.people()[0].roster_id)
    _, body, _ = await roster.get("/students", {"sort": "dateLastModified"})
    assert [u["enabledUser"] for u in body["users"]] == [True, False]
    assert [u["identifier"] for u in body["users"]] == ["", ""]
    _, body, _ = await roster.get("/students", {"filter": "enabledUser='true'"})
    assert len(body["users"]) == 1


# ---------------------------------------------------------------------------------------------
# Faults and control
# ---------------------------------------------------------------------------------------------


async def test_429_and_5xx_faults_then_recovery(roster: OneRoster) -> None:
    sim = roster.sim
    sim.faults.queue = [(429, 2.0), (503, None)]
    status, body, headers = await roster.get("/students")
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert _code_minor(body) == "server_busy"
    status, body, headers = await roster.get("/students")
    assert status == 503
    assert "Retry-After" not in headers
    assert body["imsx_codeMajor"] == "failure"
    assert (await roster.get("/students"))[0] == 200

    sim.faults.outage = True
    status, body, _ = await roster.get("/students")
    assert status == 503
    assert "<html>" in body
    sim.faults.outage = False

    async with roster.session.post(sim.base_url + "/_sim/faults", json={"queue": [[429]]}) as r:
        assert (await r.json())["queue"] == [[429, None]]
    assert (await roster.get("/students"))[0] == 429
    async with roster.session.get(sim.base_url + "/_sim/calls") as r:
        calls = await r.json()
    assert [c["status"] for c in calls] == [429, 503, 200, 503, 429]
    assert sim.count("/ims/oneroster/v1p1/students") == 5

    async with roster.session.post(sim.base_url + f"/_sim/people/{sim.people()[0].roster_id}",
                                   json={"student_number": "31337"}) as r:  # fmt: skip
        assert r.status == 200
    _, body, _ = await roster.get("/students", {"filter": "identifier='31337'"})
    assert len(body["users"]) == 1


# ---------------------------------------------------------------------------------------------
# Scale
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_100k_roster_builds_and_serves_quickly(
    session: aiohttp.ClientSession, sims: list[ClassLinkSimulator]
) -> None:
    dataset = demo_dataset(50_000)
    started = time.perf_counter()
    people = roster_from_powerschool(dataset, "classlink")
    roster = await make(session, sims, people)
    ids: list[str] = []
    offset = 0
    gc.disable()  # time the simulator, not the collector's passes over 1M parsed objects
    try:
        while True:
            params: dict[str, str | int] = {
                "limit": 10_000,
                "offset": offset,
                "sort": "sourcedId",
                "orderBy": "asc",
            }
            uri, headers = roster.sign(roster.url("/students", params))
            async with session.get(URL(uri, encoded=True), headers=headers) as resp:
                assert resp.status == 200
                total = int(resp.headers["X-Total-Count"])
                users = json.loads(await resp.read())["users"]
            ids.extend(u["sourcedId"] for u in users)
            offset += len(users)
            if not users or offset >= total:
                break
    finally:
        gc.enable()
    elapsed = time.perf_counter() - started
    assert len(ids) == 100_000
    assert ids == sorted(p.roster_id for p in people)
    assert elapsed < 6.0, f"building and serving 100k students took {elapsed:.1f}s"
