"""Tests of the Clever simulator and the shared roster, over real HTTP, against the fact file."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from simulators.clever import CleverSimulator
from simulators.powerschool import demo_dataset
from simulators.roster import RosterPerson, roster_from_powerschool, school_roster_id

HEX24 = re.compile(r"[0-9a-f]{24}")


class Clever:
    """Tiny raw HTTP client for the tests (deliberately not the service's client)."""

    def __init__(self, sim: CleverSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    async def get(
        self, path: str, token: str | None = None, **params: Any
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        token = self.sim.district_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(
            self.sim.base_url + path, params={k: str(v) for k, v in params.items()} or None,
            headers=headers,
        ) as resp:  # fmt: skip
            body: Any = (
                await resp.json()
                if resp.content_type == "application/json"
                else (await resp.text())
            )
            return resp.status, body, resp.headers

    async def tokens(self, client_id: str, secret: str, **params: str) -> tuple[int, Any]:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        async with self.session.get(
            self.sim.base_url + "/oauth/tokens",
            params=params,
            headers={"Authorization": f"Basic {basic}"},
        ) as resp:
            return resp.status, await resp.json()

    async def all_pages(self, first: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
        """Follow ``next`` links from ``first``; return the items and the number of requests."""
        status, body, _ = await self.get(first, **params)
        assert status == 200, body
        items, requests = list(body["data"]), 1
        while True:
            nxt = next((link["uri"] for link in body["links"] if link["rel"] == "next"), None)
            if nxt is None or not body["data"]:
                return items, requests
            status, body, _ = await self.get(nxt)
            assert status == 200, body
            requests += 1
            items.extend(body["data"])


def _people(n_per_school: int = 5, **kw: Any) -> list[RosterPerson]:
    return roster_from_powerschool(demo_dataset(n_per_school), "clever", **kw)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _started(sim: CleverSimulator) -> CleverSimulator:
    await sim.start()
    return sim


@pytest.fixture
async def sims() -> AsyncIterator[list[CleverSimulator]]:
    """Simulators a test starts through ``_started``; all stopped afterwards."""
    started: list[CleverSimulator] = []
    yield started
    for sim in started:
        await sim.stop()


@pytest.fixture
async def clever(session: aiohttp.ClientSession, sims: list[CleverSimulator]) -> Clever:
    sim = await _started(CleverSimulator(_people()))
    sims.append(sim)
    return Clever(sim, session)


async def make(
    session: aiohttp.ClientSession, sims: list[CleverSimulator], *args: Any, **kw: Any
) -> Clever:
    sim = await _started(CleverSimulator(*args, **kw))
    sims.append(sim)
    return Clever(sim, session)


# ---------------------------------------------------------------------------------------------
# Shared roster
# ---------------------------------------------------------------------------------------------


def test_roster_from_powerschool_agrees_and_disagrees_on_purpose() -> None:
    ds = demo_dataset(5)
    clever = roster_from_powerschool(ds, "clever")
    ids = [p.roster_id for p in clever]
    assert all(HEX24.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert ids == [p.roster_id for p in roster_from_powerschool(ds, "clever")]  # deterministic
    first, s = clever[0], ds.students[0]
    assert (first.sis_id, first.student_number) == (str(s.dcid), s.student_number)
    assert first.school_id == school_roster_id("clever", s.schoolid)
    assert HEX24.fullmatch(first.school_id)
    assert first.grade == str(s.grade_level)
    assert first.active
    assert first.last_modified.tzinfo is not None

    link = roster_from_powerschool(ds, "classlink")
    assert [p.roster_id for p in link] == [str(x.dcid) for x in ds.students]
    assert link[0].school_id == "org-100" == school_roster_id("classlink", 100)

    wrong = roster_from_powerschool(ds, "classlink", sis_field="id", student_number_field="dcid")
    assert (wrong[0].sis_id, wrong[0].roster_id, wrong[0].student_number) == (
        str(s.id),
        str(s.id),
        str(s.dcid),
    )
    assert all(p.student_number == "" for p in _people(student_number_field="none"))


# ---------------------------------------------------------------------------------------------
# Tokens and auth
# ---------------------------------------------------------------------------------------------


async def test_token_listing_and_bad_credentials(clever: Clever) -> None:
    sim = clever.sim
    status, body = await clever.tokens(sim.client_id, sim.client_secret, owner_type="district")
    assert status == 200
    (token,) = body["data"]
    assert token["owner"] == {"type": "district", "id": sim.district_id}
    assert token["access_token"] == sim.district_token
    assert len(sim.district_token) == 40
    assert HEX24.fullmatch(token["id"])
    assert token["created"].endswith("Z")
    assert "read:students" in token["scopes"]
    assert body["links"] == [{"rel": "self", "uri": "/oauth/tokens?owner_type=district"}]

    status, body = await clever.tokens(
        sim.client_id, sim.client_secret, owner_type="district", district="0" * 24
    )
    assert status == 200
    assert body["data"] == []

    status, body = await clever.tokens(sim.client_id, "wrong", owner_type="district")
    assert status == 401
    assert body["error"] == "invalid_client"
    assert body["error_description"]

    status, body, _ = await clever.get("/v3.0/users", token="")
    assert status == 401
    assert "message" in body
    status, body, _ = await clever.get("/v3.0/users", token="f" * 40)
    assert status == 401
    assert "message" in body

    old = sim.district_token
    sim.rotate_token()
    assert (await clever.get("/v3.0/users", token=old))[0] == 401
    assert (await clever.get("/v3.0/users"))[0] == 200
    sim.disconnect()
    status, body = await clever.tokens(sim.client_id, sim.client_secret, owner_type="district")
    assert status == 200
    assert body["data"] == []
    assert (await clever.get("/v3.0/users"))[0] == 401


# ---------------------------------------------------------------------------------------------
# Users and paging
# ---------------------------------------------------------------------------------------------


async def test_user_object_has_the_v3_shape(clever: Clever) -> None:
    person = clever.sim.people()[0]
    status, body, _ = await clever.get("/v3.0/users", role="student", limit=1)
    assert status == 200
    (item,) = body["data"]
    assert item["uri"] == f"/v3.0/users/{person.roster_id}"
    user = item["data"]
    assert set(user) == {"id", "district", "email", "name", "created", "last_modified", "roles"}
    assert user["id"] == person.roster_id
    assert user["district"] == clever.sim.district_id
    assert user["name"] == {"first": person.first_name, "middle": None, "last": person.last_name}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", user["last_modified"])
    student = user["roles"]["student"]
    assert set(student) == {
        "sis_id", "student_number", "state_id", "school", "schools", "grade", "dob",
        "credentials", "legacy_id", "enrollments", "location", "ext",
    }  # fmt: skip
    assert student["sis_id"] == person.sis_id
    assert student["student_number"] == person.student_number
    assert student["school"] == person.school_id
    assert student["schools"] == [person.school_id]
    assert student["grade"] == person.grade
    assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", student["dob"])
    assert "sis_id" not in user

    status, single, _ = await clever.get(f"/v3.0/users/{person.roster_id}")
    assert status == 200
    assert single["data"] == user
    status, body, _ = await clever.get("/v3.0/users/" + "0" * 24)
    assert status == 404
    assert body == {"message": "Resource not found"}

    status, v31, _ = await clever.get("/v3.1/users", role="student", limit=1)
    assert status == 200
    assert "preferred_name" in v31["data"][0]["data"]["roles"]["student"]
    assert v31["data"][0]["uri"].startswith("/v3.1/users/")
    assert all(link["uri"].startswith("/v3.1/") for link in v31["links"])


async def test_empty_student_number_is_null(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    clever = await make(session, sims, _people(2, student_number_field="none", sis_field="id"))
    _, body, _ = await clever.get("/v3.0/users", role="student")
    students = [item["data"]["roles"]["student"] for item in body["data"]]
    assert len(students) == 4
    assert all(s["student_number"] is None for s in students)
    assert {s["sis_id"] for s in students} == {p.sis_id for p in clever.sim.people()}


async def test_paging_full_pages_then_short_last_page(clever: Clever) -> None:
    status, body, _ = await clever.get("/v3.0/users", role="student", limit=4)
    assert status == 200
    assert len(body["data"]) == 4
    rels = {link["rel"]: link["uri"] for link in body["links"]}
    assert rels["self"] == "/v3.0/users?role=student&limit=4"
    last_id = body["data"][-1]["data"]["id"]
    assert rels["next"] == f"/v3.0/users?role=student&limit=4&starting_after={last_id}"
    assert "prev" not in rels

    items, requests = await clever.all_pages("/v3.0/users", role="student", limit=4)
    ids = [item["data"]["id"] for item in items]
    assert requests == 3  # 4 + 4 + 2, and no next after the short page
    assert ids == sorted(ids) == [p.roster_id for p in clever.sim.people()]

    _, body, _ = await clever.get("/v3.0/users", role="student", limit=4, starting_after=ids[7])
    assert [i["data"]["id"] for i in body["data"]] == ids[8:]
    assert [link["rel"] for link in body["links"]] == ["self", "prev"]
    _, body, _ = await clever.get("/v3.0/users", role="student", limit=3, ending_before=ids[5])
    assert [i["data"]["id"] for i in body["data"]] == ids[2:5]

    status, body, _ = await clever.get("/v3.0/users", role="student")
    assert status == 200
    assert len(body["data"]) == 10


async def test_exact_multiple_last_page_is_followed_by_an_empty_page(clever: Clever) -> None:
    _, body, _ = await clever.get("/v3.0/users", role="student", limit=5)
    _, body, _ = await clever.get(next(x["uri"] for x in body["links"] if x["rel"] == "next"))
    assert len(body["data"]) == 5
    nxt = next(x["uri"] for x in body["links"] if x["rel"] == "next")
    status, body, _ = await clever.get(nxt)
    assert status == 200
    assert body["data"] == []
    assert [link["rel"] for link in body["links"]] == ["self"]
    _, requests = await clever.all_pages("/v3.0/users", role="student", limit=5)
    assert requests == 3


async def test_spurious_links_lead_to_empty_pages(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    clever = await make(session, sims, _people(), spurious_links=True)
    _, body, _ = await clever.get("/v3.0/users", role="student", limit=4)
    rels = {link["rel"]: link["uri"] for link in body["links"]}
    status, prev, _ = await clever.get(rels["prev"])
    assert status == 200
    assert prev["data"] == []
    _, body, _ = await clever.get("/v3.0/users", role="student", limit=4, starting_after="0")
    _, body, _ = await clever.get(next(x["uri"] for x in body["links"] if x["rel"] == "next"))
    _, body, _ = await clever.get(next(x["uri"] for x in body["links"] if x["rel"] == "next"))
    assert len(body["data"]) == 2  # short last page ...
    nxt = next(x["uri"] for x in body["links"] if x["rel"] == "next")  # ... still has a next
    status, empty, _ = await clever.get(nxt)
    assert status == 200
    assert empty["data"] == []
    _, requests = await clever.all_pages("/v3.0/users", role="student", limit=4)
    assert requests == 4


async def test_next_link_without_params_and_role_filter(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    clever = await make(session, sims, _people(), next_link_keeps_params=False)
    teacher = clever.sim.create(
        RosterPerson("", "T1", "", "Ada", "Lovelace", school_roster_id("clever", 100), ""),
        role="teacher",
    )
    _, body, _ = await clever.get("/v3.0/users", role="student", limit=10)
    assert len(body["data"]) == 10
    last = body["data"][-1]["data"]["id"]
    nxt = next(x["uri"] for x in body["links"] if x["rel"] == "next")
    assert nxt == f"/v3.0/users?starting_after={last}"
    _, body, _ = await clever.get(nxt)  # role dropped: the teacher leaks in
    assert [i["data"]["id"] for i in body["data"]] == [teacher]
    assert body["data"][0]["data"]["roles"].keys() == {"teacher"}

    _, body, _ = await clever.get("/v3.0/users", role="teacher")
    assert [i["data"]["id"] for i in body["data"]] == [teacher]
    _, body, _ = await clever.get("/v3.0/users", limit=100)
    assert len(body["data"]) == 11
    status, body, _ = await clever.get("/v3.0/users", role="principal")
    assert status == 400
    assert "message" in body


async def test_limit_above_max_is_413(clever: Clever) -> None:
    status, body, _ = await clever.get("/v3.0/users", role="student", limit=10001)
    assert status == 413
    assert "message" in body
    assert (await clever.get("/v3.0/users", role="student", limit=10000))[0] == 200
    assert (await clever.get("/v3.0/events", limit=10001))[0] == 413
    assert (await clever.get("/v3.0/users", limit="many"))[0] == 400


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def _events(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item["data"] for item in body["data"]]


async def test_events_after_create_update_delete_and_sis_id_change(clever: Clever) -> None:
    sim = clever.sim
    status, body, _ = await clever.get("/v3.0/events", ending_before="last", limit=1)
    assert status == 200
    assert body["data"] == []

    template = sim.people()[0]
    new_id = sim.create(RosterPerson("", "99001", "250001", "New", "Kid", template.school_id, "9"))
    _, body, _ = await clever.get("/v3.0/events", ending_before="last", limit=1)
    (cursor_event,) = _events(body)
    assert cursor_event["type"] == "users.created"
    cursor = cursor_event["id"]

    victim, renamed, moved = sim.people()[1:4]
    sim.update(renamed.roster_id, first_name="Renamed", student_number="777")
    sim.delete(victim.roster_id)
    fresh = sim.change_sis_id(moved.roster_id, "88888")
    assert fresh != moved.roster_id
    assert HEX24.fullmatch(fresh)
    assert fresh > new_id

    status, body, _ = await clever.get(
        "/v3.0/events", starting_after=cursor, record_type="users", limit=100
    )
    assert status == 200
    events = _events(body)
    assert [e["type"] for e in events] == [
        "users.updated", "users.deleted", "users.deleted", "users.created",
    ]  # fmt: skip
    ids = [e["id"] for e in events]
    assert all(HEX24.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    assert ids[0] > cursor
    assert body["data"][0]["uri"] == f"/v3.0/events/{ids[0]}"

    updated = events[0]
    assert updated["data"]["object"]["name"]["first"] == "Renamed"
    previous = updated["data"]["previous_attributes"]
    assert previous["name"] == {"first": renamed.first_name}
    assert previous["roles"]["student"]["student_number"] == renamed.student_number
    assert "last_modified" in previous

    deleted = events[1]["data"]["object"]
    assert deleted["id"] == victim.roster_id
    assert deleted["roles"]["student"]["sis_id"] == victim.sis_id  # the full last object
    assert events[2]["data"]["object"]["id"] == moved.roster_id
    created = events[3]["data"]["object"]
    assert created["id"] == fresh
    assert created["roles"]["student"]["sis_id"] == "88888"
    assert created["name"]["last"] == moved.last_name

    _, body, _ = await clever.get("/v3.0/events", ending_before="last", limit=1)
    assert [e["id"] for e in _events(body)] == [ids[-1]]
    _, body, _ = await clever.get("/v3.0/events", starting_after=ids[-1])
    assert body["data"] == []
    _, body, _ = await clever.get("/v3.0/events", record_type="schools")
    assert body["data"] == []
    status, single, _ = await clever.get(f"/v3.0/events/{ids[0]}")
    assert status == 200
    assert single["data"]["id"] == ids[0]

    users, _ = await clever.all_pages("/v3.0/users", role="student", limit=100)
    listed = {u["data"]["id"] for u in users}
    assert victim.roster_id not in listed
    assert moved.roster_id not in listed
    assert {new_id, fresh} <= listed
    assert (await clever.get(f"/v3.0/users/{victim.roster_id}"))[0] == 404

    sim.update(renamed.roster_id, active=False)  # unshared -> users.deleted
    sim.update(renamed.roster_id, active=True)  # shared again -> users.created, same id
    _, body, _ = await clever.get("/v3.0/events", ending_before="last", limit=2)
    assert [e["type"] for e in _events(body)] == ["users.deleted", "users.created"]


async def test_expired_or_unknown_event_cursor_is_404(clever: Clever) -> None:
    sim = clever.sim
    sim.update(sim.people()[0].roster_id, grade="10")
    _, body, _ = await clever.get("/v3.0/events", ending_before="last", limit=1)
    old = _events(body)[0]["id"]
    assert (await clever.get("/v3.0/events", starting_after=old))[0] == 200

    sim.age_events(31)
    sim.update(sim.people()[1].roster_id, grade="11")
    status, body, _ = await clever.get("/v3.0/events", starting_after=old)
    assert status == 404
    assert "message" in body
    status, body, _ = await clever.get("/v3.0/events", starting_after="f" * 24)
    assert status == 404
    _, body, _ = await clever.get("/v3.0/events")
    assert len(body["data"]) == 1  # only the recent event is retained
    assert (await clever.get(f"/v3.0/events/{old}"))[0] == 404


async def test_previous_attributes_as_sibling_of_data(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    clever = await make(session, sims, _people(1), previous_attributes_in_data=False)
    clever.sim.update(clever.sim.people()[0].roster_id, last_name="Changed")
    _, body, _ = await clever.get("/v3.0/events")
    (event,) = _events(body)
    assert "previous_attributes" not in event["data"]
    assert event["previous_attributes"]["name"]["last"] != "Changed"


# ---------------------------------------------------------------------------------------------
# Rate limits and faults
# ---------------------------------------------------------------------------------------------


async def test_rate_limit_headers_429_and_next_window(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    now = [1_700_000_010.25]
    clever = await make(session, sims, _people(1), rate_limit=3, clock=lambda: now[0])
    remaining = []
    for path in ("/v3.0/users", "/v3.0/users/" + "0" * 24, "/v3.0/events"):
        status, _, headers = await clever.get(path)
        assert status in (200, 404)
        assert headers["X-Ratelimit-Bucket"] == "bearer"
        assert headers["X-Ratelimit-Limit"] == "3"
        assert headers["X-Ratelimit-Reset"] == "1700000040"
        remaining.append(headers["X-Ratelimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    status, body, headers = await clever.get("/v3.0/users")
    assert status == 429
    assert body == {"message": "Too Many Requests"}
    assert headers["X-Ratelimit-Remaining"] == "0"
    assert "Retry-After" not in headers
    assert headers["X-Ratelimit-Reset"] == "1700000040"
    now[0] = 1_700_000_040.0
    status, _, headers = await clever.get("/v3.0/users")
    assert status == 200
    assert headers["X-Ratelimit-Remaining"] == "2"
    assert headers["X-Ratelimit-Reset"] == "1700000100"
    sim_tokens = await clever.tokens(clever.sim.client_id, clever.sim.client_secret,
                                     owner_type="district")  # fmt: skip
    assert sim_tokens[0] == 200  # /oauth/tokens is not rate limited


async def test_rate_limit_recovers_after_a_one_second_window(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    clever = await make(session, sims, _people(1), rate_limit=2, rate_window=1.0)
    for _ in range(6):
        status, _, headers = await clever.get("/v3.0/users")
        if status == 429:
            break
    assert status == 429
    reset = int(headers["X-Ratelimit-Reset"])
    await asyncio.sleep(max(0.0, reset - time.time()) + 0.01)
    status, _, headers = await clever.get("/v3.0/users")
    assert status == 200
    assert int(headers["X-Ratelimit-Reset"]) > reset - 1


async def test_fault_injection_and_control_endpoints(clever: Clever) -> None:
    sim = clever.sim
    sim.faults.queue = [(502, True), (500, False), (429, False)]
    status, body, headers = await clever.get("/v3.0/users")
    assert status == 502
    assert "<html>" in body
    assert "Bad Gateway" in body
    assert headers["Content-Type"].startswith("text/html")
    status, body, _ = await clever.get("/v3.0/users")
    assert status == 500
    assert body == {"message": "Internal Server Error"}
    status, body, headers = await clever.get("/v3.0/users")
    assert status == 429
    assert headers["X-Ratelimit-Remaining"] == "0"
    assert (await clever.get("/v3.0/users"))[0] == 200

    sim.faults.outage = True
    status, body, _ = await clever.get("/v3.0/users")
    assert status == 503
    assert "<html>" in body
    sim.faults.outage = False

    async with clever.session.post(
        sim.base_url + "/_sim/faults", json={"queue": [[503, False]], "latency": 0.01}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["queue"] == [[503, False]]
    assert (await clever.get("/v3.0/users"))[0] == 503
    sim.faults.latency = 0.0
    async with clever.session.get(sim.base_url + "/_sim/calls") as resp:
        calls = await resp.json()
    assert [c["status"] for c in calls[-2:]] == [503, 503]
    assert calls[-1]["path"] == "/v3.0/users"
    assert sim.count("/v3.0/users") == 6
    assert sim.count("/oauth") == 0

    async with clever.session.post(
        sim.base_url + "/_sim/people",
        json={"sis_id": "4242", "first_name": "Via", "last_name": "Http",
              "school_id": "s", "grade": "9"},
    ) as resp:  # fmt: skip
        new_id = (await resp.json())["id"]
    assert (await clever.get(f"/v3.0/users/{new_id}"))[0] == 200


# ---------------------------------------------------------------------------------------------
# Scale
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_100k_roster_builds_and_serves_quickly(
    session: aiohttp.ClientSession, sims: list[CleverSimulator]
) -> None:
    dataset = demo_dataset(50_000)
    started = time.perf_counter()
    people = roster_from_powerschool(dataset, "clever")
    clever = await make(session, sims, people)
    headers = {"Authorization": f"Bearer {clever.sim.district_token}"}
    uri, pages = "/v3.0/users?role=student&limit=10000", 0
    ids: list[str] = []
    gc.disable()  # time the simulator, not the collector's passes over 1M parsed objects
    try:
        while uri:
            async with session.get(clever.sim.base_url + uri, headers=headers) as resp:
                assert resp.status == 200
                body = json.loads(await resp.read())
            pages += 1
            ids.extend(item["data"]["id"] for item in body["data"])
            nxt = [link["uri"] for link in body["links"] if link["rel"] == "next"]
            uri = nxt[0] if nxt and body["data"] else ""
    finally:
        gc.enable()
    elapsed = time.perf_counter() - started
    assert len(ids) == 100_000
    assert pages == 11  # the 11th page is the empty one
    assert ids == [p.roster_id for p in people]
    assert elapsed < 6.0, f"building and serving 100k students took {elapsed:.1f}s"
