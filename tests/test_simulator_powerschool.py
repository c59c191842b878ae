"""Tests of the PowerSchool simulator, over real HTTP, against the wire format in the fact file."""

from __future__ import annotations

import asyncio
import base64
import datetime
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.powerschool import PluginGrants, parse_plugin, plugin_path
from simulators.powerschool import (
    Dataset,
    PowerSchoolSimulator,
    PSStudent,
    demo_dataset,
    recent_school_day,
    without_field,
    without_query,
)

# The tests below name years 35 (2025-26) and 36 (2026-27), so pin the dataset to 2026-27.
FIXED_TODAY = datetime.date(2026, 11, 1)

CLIENT_ID = "sim-client"
CLIENT_SECRET = "sim-secret"


class PS:
    """Tiny raw HTTP client for the tests (deliberately not the service's client)."""

    def __init__(self, sim: PowerSchoolSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.base = sim.base_url
        self._token: str | None = None

    async def oauth(
        self,
        client_id: str = CLIENT_ID,
        secret: str = CLIENT_SECRET,
        grant: str = "client_credentials",
        path: str = "/oauth/access_token",
    ) -> tuple[int, Any]:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        async with self.session.post(
            self.base + path,
            data={"grant_type": grant},
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        ) as resp:
            return resp.status, await resp.json()

    async def token(self) -> str:
        if self._token is None:
            status, body = await self.oauth()
            assert status == 200, body
            self._token = body["access_token"]
        return self._token

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        bearer: str | None = "auto",
    ) -> tuple[int, Any, Any]:
        """Send a request; ``bearer="auto"`` fetches a token, ``None`` sends no Authorization."""
        headers = {"Accept": "application/json"}
        if bearer == "auto":
            bearer = await self.token()
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        async with self.session.request(
            method, self.base + path, params=params, json=json, headers=headers
        ) as resp:
            text = await resp.text()
            body: Any = text
            if resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body, resp.headers

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        status, body, _ = await self.request("GET", path, params=params)
        return status, body

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        status, payload, _ = await self.request("POST", path, json=body)
        return status, payload


def plugin_with(extra_fields: str = "", v1: str = "NONE") -> PluginGrants:
    """The shipped plugin plus ``<field .../>`` lines and an ``accessLevelV1Api``."""
    text = plugin_path().read_text()
    text = text.replace("</access_request>", f"{extra_fields}</access_request>")
    return parse_plugin(text.replace("<oauth/>", f'<oauth accessLevelV1Api="{v1}"/>'))


@pytest.fixture
async def sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(demo_dataset(today=FIXED_TODAY))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def ps(sim: PowerSchoolSimulator) -> AsyncIterator[PS]:
    async with aiohttp.ClientSession() as session:
        yield PS(sim, session)


def attendance_body(**cols: Any) -> dict[str, Any]:
    return {
        "name": "ATTENDANCE",
        "record": [{"name": "ATTENDANCE", "tables": {"attendance": cols}}],
    }


def write_cols(sim: PowerSchoolSimulator, code: str = "T", **overrides: Any) -> dict[str, Any]:
    """A valid daily write for the first student of school 100 on 2025-10-01 (yearid 35)."""
    student = sim.dataset.students[0]
    code_id = next(
        c.id
        for c in sim.dataset.codes
        if c.schoolid == student.schoolid and c.yearid == 35 and c.att_code == code
    )
    cols: dict[str, Any] = {
        "studentid": str(student.id),
        "schoolid": str(student.schoolid),
        "yearid": "35",
        "att_date": "2025-10-01",
        "att_mode_code": "ATT_ModeDaily",
        "attendance_codeid": str(code_id),
        "att_comment": "Late check-in 08:47 (VM)",
    }
    cols.update(overrides)
    return cols


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def test_demo_dataset_invariants() -> None:
    ds = demo_dataset(today=FIXED_TODAY)
    ids = {s.id for s in ds.students}
    dcids = {s.dcid for s in ds.students}
    assert len(ds.students) == 40
    assert len(ids) == len(dcids) == 40
    assert not ids & dcids
    assert all(s.id != s.dcid for s in ds.students)
    assert sorted(dcids) != list(range(min(dcids), min(dcids) + 40))
    numbers = [s.student_number for s in ds.students]
    assert len(set(numbers)) == 40
    assert all(len(n) == 6 and n.isdigit() for n in numbers)
    assert {s.schoolid for s in ds.students} == {100, 200}
    assert {(s.school_number, s.name) for s in ds.schools} == {
        (100, "Lincoln High School"),
        (200, "Washington Middle School"),
    }
    assert all(s.school_number not in (s.id, s.dcid) for s in ds.schools)
    code_ids = [c.id for c in ds.codes]
    assert len(set(code_ids)) == len(code_ids) == 2 * 2 * 7
    by_code: dict[str, set[int]] = {}
    for c in ds.codes:
        by_code.setdefault(c.att_code, set()).add(c.id)
    assert all(len(v) == 4 for v in by_code.values())
    assert {c.att_code for c in ds.codes} == {"", "A", "T", "TE", "ED", "EDE", "LE"}
    year_terms = {(t.schoolid, t.yearid): t for t in ds.terms if t.isyearrec == 1}
    assert set(year_terms) == {(100, 35), (100, 36), (200, 35), (200, 36)}
    assert all(t.id == t.yearid * 100 for t in year_terms.values())
    assert any(t.isyearrec == 0 for t in ds.terms)
    assert len({t.dcid for t in ds.terms}) == len(ds.terms)
    assert demo_dataset(today=FIXED_TODAY) == ds  # deterministic
    assert demo_dataset(seed=8, today=FIXED_TODAY).students != ds.students


def test_recent_school_day_skips_summer_and_semester_terms() -> None:
    ds = demo_dataset(today=FIXED_TODAY)  # years 2025-08-12..2026-06-04, 2026-08-12..2027-06-04
    assert recent_school_day(ds, today=FIXED_TODAY) == datetime.date(2026, 10, 31)
    assert recent_school_day(ds, back=3, today=FIXED_TODAY) == datetime.date(2026, 10, 29)
    assert recent_school_day(ds, back=0, today=datetime.date(2026, 8, 12)) == datetime.date(
        2026, 8, 12
    )
    summer = datetime.date(2026, 8, 12)  # back=1 lands on 08-11, in the summer break
    assert recent_school_day(ds, today=summer) == datetime.date(2026, 6, 4)
    assert recent_school_day(demo_dataset()) <= datetime.date.today() - datetime.timedelta(days=1)
    semesters_only = Dataset(
        schools=ds.schools,
        students=[],
        terms=[t for t in ds.terms if t.isyearrec != 1],
        codes=[],
    )
    with pytest.raises(ValueError, match="year-long term"):
        recent_school_day(semesters_only, today=FIXED_TODAY)
    far = datetime.date(2028, 8, 1)  # the last school day, 2027-06-04, is over 400 days back
    with pytest.raises(ValueError, match="year-long term"):
        recent_school_day(ds, today=far)


# ---------------------------------------------------------------------------------------------
# OAuth
# ---------------------------------------------------------------------------------------------


async def test_token_is_reused_with_string_expires_in(ps: PS) -> None:
    status, first = await ps.oauth()
    assert status == 200
    assert first["token_type"] == "Bearer"
    assert isinstance(first["expires_in"], str)
    assert int(first["expires_in"]) == 2_592_000
    status, second = await ps.oauth(path="/oauth/access_token/")
    assert status == 200
    assert second["access_token"] == first["access_token"]
    assert int(second["expires_in"]) <= int(first["expires_in"])


async def test_token_bad_credentials_and_grant(ps: PS) -> None:
    assert await ps.oauth(secret="wrong") == (401, {"error": "invalid_client"})
    assert await ps.oauth(client_id="other") == (401, {"error": "invalid_client"})
    assert await ps.oauth(grant="password") == (400, {"error": "unsupported_grant_type"})
    async with ps.session.post(
        ps.base + "/oauth/access_token", data={"grant_type": "client_credentials"}
    ) as resp:
        assert resp.status == 401


async def test_token_integer_expires_in_and_expiry() -> None:
    now = [1000.0]
    sim = PowerSchoolSimulator(expires_in_as_string=False, token_ttl=60, clock=lambda: now[0])
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            ps = PS(sim, session)
            _, body = await ps.oauth()
            assert body["expires_in"] == 60
            token = body["access_token"]
            now[0] += 45
            _, body = await ps.oauth()
            assert (body["access_token"], body["expires_in"]) == (token, 15)
            assert (await ps.request("GET", "/ws/v1/metadata", bearer=token))[0] == 200
            now[0] += 16
            status, _, headers = await ps.request("GET", "/ws/v1/metadata", bearer=token)
            assert status == 401
            assert "invalid_token" in headers["WWW-Authenticate"]
            _, body = await ps.oauth()
            assert body["access_token"] != token
    finally:
        await sim.stop()


async def test_ws_requires_valid_bearer(ps: PS) -> None:
    status, body, headers = await ps.request("GET", "/ws/v1/metadata", bearer=None)
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token",realm="PowerSchool",'
        'error_description="The access token has expired"'
    )
    assert "message" in body
    status, _, _ = await ps.request("GET", "/ws/schema/table/students", bearer="not-a-token")
    assert status == 401
    status, body, _ = await ps.request("GET", "/ws/v1/time", bearer=None)
    assert status == 200
    assert "time" in body


async def test_revoked_token_gets_401_then_new_token_works(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    old = await ps.token()
    assert (await ps.get("/ws/v1/metadata"))[0] == 200
    sim.revoke_tokens()
    status, _, headers = await ps.request("GET", "/ws/v1/metadata", bearer=old)
    assert status == 401
    assert "WWW-Authenticate" in headers
    _, body = await ps.oauth()
    assert body["access_token"] != old
    assert (await ps.request("GET", "/ws/v1/metadata", bearer=body["access_token"]))[0] == 200


async def test_metadata() -> None:
    sim = PowerSchoolSimulator(max_page_size=25, district_timezone="America/Denver")
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await PS(sim, session).get("/ws/v1/metadata")
    finally:
        await sim.stop()
    assert status == 200
    meta = body["metadata"]
    assert meta["schema_table_query_max_page_size"] == 25
    assert meta["district_timezone"] == "America/Denver"
    assert meta["powerschool_version"].startswith("25.")


# ---------------------------------------------------------------------------------------------
# Schema table API
# ---------------------------------------------------------------------------------------------


async def test_students_query_shape(ps: PS, sim: PowerSchoolSimulator) -> None:
    student = sim.dataset.students[3]
    status, body = await ps.get(
        "/ws/schema/table/students",
        q=f"dcid=={student.dcid}",
        projection="ID,dcid,schoolid,student_number,enroll_status",
    )
    assert status == 200
    assert body["name"] == "Students"
    [record] = body["record"]
    assert record["id"] == student.dcid  # outer id is the DCID, an int
    assert record["tables"]["students"] == {
        "id": str(student.id),
        "dcid": str(student.dcid),
        "schoolid": str(student.schoolid),
        "student_number": student.student_number,
        "enroll_status": "0",
    }
    status, body = await ps.get("/ws/schema/table/students", q=f"id=={student.dcid}")
    assert (status, body) == (200, {"name": "Students", "record": []})


async def test_default_projection_renders_every_granted_value_as_string(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    status, body = await ps.get("/ws/schema/table/terms", q="schoolid==200;yearid==36")
    assert status == 200
    assert len(body["record"]) == 3
    for record in body["record"]:
        cols = record["tables"]["terms"]
        # The shipped plugin requests these TERMS fields, not DCID, NAME or ABBREVIATION.
        assert set(cols) == {"id", "yearid", "schoolid", "firstday", "lastday", "isyearrec"}
        assert all(isinstance(v, str) for v in cols.values())
    sim.plugin = plugin_with('<field table="TERMS" field="DCID" access="ViewOnly"/>')
    status, body = await ps.get("/ws/schema/table/terms", q="schoolid==200;yearid==36")
    for record in body["record"]:
        assert record["id"] == int(record["tables"]["terms"]["dcid"])


async def test_fiql_operators(ps: PS, sim: PowerSchoolSimulator) -> None:
    status, body = await ps.get(
        "/ws/schema/table/terms",
        q="SchoolID==100;isyearrec==1;firstday=le=2026-05-01;LASTDAY=ge=2026-05-01",
        projection="id,yearid",
    )
    assert status == 200
    assert [r["tables"]["terms"] for r in body["record"]] == [{"id": "3500", "yearid": "35"}]

    status, body = await ps.get(
        "/ws/schema/table/attendance_code",
        q="schoolid==200;yearid==36;att_code!=A",
        projection="id,att_code,presence_status_cd",
    )
    codes = {r["tables"]["attendance_code"]["att_code"] for r in body["record"]}
    assert codes == {"", "T", "TE", "ED", "EDE", "LE"}

    ids = sorted(s.id for s in sim.dataset.students)
    status, body = await ps.get(
        "/ws/schema/table/students",
        q=f"id=gt={ids[4]};id=lt={ids[9]}",
        projection="id",
        sort="id",
    )
    assert [int(r["tables"]["students"]["id"]) for r in body["record"]] == ids[5:9]
    status, body = await ps.get(
        "/ws/schema/table/students", q=f"id=ge={ids[-2]}", sort="id", sortdescending="true"
    )
    assert [int(r["tables"]["students"]["id"]) for r in body["record"]] == ids[-1:-3:-1]

    sim.plugin = plugin_with('<field table="STUDENTS" field="LAST_NAME" access="ViewOnly"/>')
    initial = sim.dataset.students[0].last_name[0]
    status, body = await ps.get("/ws/schema/table/students", q=f"last_name=={initial}*")
    expected = sum(1 for s in sim.dataset.students if s.last_name.startswith(initial))
    assert len(body["record"]) == expected > 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "schoolid==100,schoolid==200"}, None),
        ({"q": "nosuchcolumn==1"}, "Invalid field nosuchcolumn"),
        (
            {"q": "schoolid==abc"},
            "Invalid number 'abc' passed for comparison to number field SchoolID",
        ),
        ({"q": "first_name=like=A"}, None),
        (
            {"projection": "id,nosuch"},
            "Invalid field specified: nosuch is not valid column for table: Students",
        ),
        ({"pagesize": "101"}, None),
        ({"pagesize": "0"}, None),
    ],
)
async def test_students_query_errors(ps: PS, params: dict[str, str], message: str | None) -> None:
    status, body = await ps.get("/ws/schema/table/students", **params)
    assert status == 400
    assert isinstance(body["message"], str)
    if message is not None:
        assert body["message"] == message


async def test_clob_and_date_filters(ps: PS) -> None:
    status, body = await ps.get("/ws/schema/table/attendance", q="att_comment==x")
    assert (status, body["message"]) == (
        400,
        "Querying not supported against clob or blob field types",
    )
    status, _ = await ps.get("/ws/schema/table/attendance", q="att_date==10/01/2025")
    assert status == 400


async def test_paging_and_count(ps: PS, sim: PowerSchoolSimulator) -> None:
    seen: list[int] = []
    sizes = []
    for page in (1, 2, 3, 4):
        status, body = await ps.get(
            "/ws/schema/table/students", projection="id", pagesize="15", page=str(page)
        )
        assert status == 200
        sizes.append(len(body["record"]))
        seen += [r["id"] for r in body["record"]]
    assert sizes == [15, 15, 10, 0]
    assert sorted(seen) == sorted(s.dcid for s in sim.dataset.students)
    status, body = await ps.get("/ws/schema/table/students", projection="id")
    assert len(body["record"]) == 40  # default page size 100
    assert await ps.get("/ws/schema/table/students/count") == (200, {"count": 40})
    assert await ps.get("/ws/schema/table/students/count", q="schoolid==200") == (
        200,
        {"count": 20},
    )
    assert (await ps.get("/ws/schema/table/students/count", q="bogus==1"))[0] == 400


async def test_max_page_size_is_configurable() -> None:
    sim = PowerSchoolSimulator(max_page_size=10)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            ps = PS(sim, session)
            status, body = await ps.get("/ws/schema/table/students")
            assert (status, len(body["record"])) == (200, 10)
            assert (await ps.get("/ws/schema/table/students", pagesize="10"))[0] == 200
            assert (await ps.get("/ws/schema/table/students", pagesize="11"))[0] == 400
    finally:
        await sim.stop()


async def test_single_row_and_unknown_tables(ps: PS, sim: PowerSchoolSimulator) -> None:
    student = sim.dataset.students[0]
    status, body = await ps.get(f"/ws/schema/table/students/{student.dcid}", projection="id")
    assert (status, body) == (
        200,
        {"id": student.dcid, "name": "Students", "tables": {"students": {"id": str(student.id)}}},
    )
    status, body = await ps.get(f"/ws/schema/table/students/{student.id}")
    assert (status, body) == (
        404,
        {"message": "Database row or table specified by the URI not found"},
    )
    assert (await ps.get("/ws/schema/table/teachers"))[0] == 405
    assert (await ps.get("/ws/schema/table/nosuchtable"))[0] == 404


async def test_plugin_grants_give_403_for_ungranted_reads(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    dcid = sim.dataset.students[0].dcid
    ok = await ps.get("/ws/schema/table/students", q=f"dcid=={dcid}", projection="id,schoolid")
    assert ok[0] == 200
    status, body = await ps.get("/ws/schema/table/students", projection="id,last_name,first_name")
    assert (status, body) == (
        403,
        {
            "message": "At least one column lacks sufficient permission",
            "errors": [
                {"code": "NoAccess", "field": "Last_Name", "resource": "Students"},
                {"code": "NoAccess", "field": "First_Name", "resource": "Students"},
            ],
        },
    )
    # A filter column needs a grant too; an unknown column is a 400 before any 403.
    status, body = await ps.get("/ws/schema/table/students", q="grade_level==3", projection="id")
    assert (status, body["errors"][0]["field"]) == (403, "Grade_Level")
    assert (await ps.get("/ws/schema/table/students", projection="nosuch"))[0] == 400
    assert (await ps.get("/ws/schema/table/schools"))[0] == 403  # no SCHOOLS field requested
    assert (await ps.get("/ws/schema/table/schools/count"))[0] == 200  # an unfiltered count
    status, _ = await ps.get(f"/ws/schema/table/students/{dcid}", projection="first_name")
    assert status == 403

    sim.plugin = without_field(sim.plugin, "STUDENTS", "STUDENT_NUMBER")
    status, body = await ps.get("/ws/schema/table/students", q=f"dcid=={dcid}")
    assert status == 200  # no projection: only the granted columns
    assert "student_number" not in body["record"][0]["tables"]["students"]
    status, body = await ps.get(
        "/ws/schema/table/students", q=f"dcid=={dcid}", projection="id,student_number"
    )
    assert (status, body["errors"]) == (
        403,
        [{"code": "NoAccess", "field": "Student_Number", "resource": "Students"}],
    )


async def test_attendance_writes_need_full_access_on_each_written_field(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    body = attendance_body(**write_cols(sim))
    sim.plugin = without_field(sim.plugin, "ATTENDANCE", "ATT_COMMENT")
    status, payload = await ps.post("/ws/attendance/daily_time", body)
    assert (status, payload["errors"]) == (
        403,
        [{"code": "NoAccess", "field": "Att_Comment", "resource": "Attendance"}],
    )
    assert sim.attendance_rows() == []
    # ViewOnly reads but does not write.
    sim.plugin = parse_plugin(
        plugin_path()
        .read_text()
        .replace('field="ATT_COMMENT" access="FullAccess"', 'field="ATT_COMMENT" access="ViewOnly"')
    )
    assert (await ps.post("/ws/attendance/daily_time", body))[0] == 403
    sim.plugin = plugin_with()
    status, payload = await ps.post("/ws/attendance/daily_time", body)
    assert status == 200, payload
    [row] = sim.attendance_rows()

    sim.plugin = without_field(plugin_with(), "ATTENDANCE", "DCID")
    status, payload, _ = await ps.request("DELETE", f"/ws/schema/table/attendance/{row['dcid']}")
    assert (status, payload["errors"][0]["field"]) == (403, "DCID")
    assert len(sim.attendance_rows()) == 1
    sim.plugin = plugin_with()
    assert (await ps.request("DELETE", f"/ws/schema/table/attendance/{row['dcid']}"))[0] == 204


async def test_powerqueries_need_a_declaration_and_their_fields(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    dcid_map = "com.pearson.core.student.student_dcid_id_map"
    args = {"students_dcid": [sim.dataset.students[0].dcid]}
    assert (await ps.post(f"/ws/schema/query/{dcid_map}", args))[0] == 200
    sim.plugin = without_field(sim.plugin, "STUDENTS", "ID")
    status, body = await ps.post(f"/ws/schema/query/{dcid_map}", args)
    assert (status, body) == (
        403,
        {
            "message": "Validation Failed",
            "errors": [
                {"resource": dcid_map, "field": "students.id", "code": "No access to the field"}
            ],
        },
    )
    sim.plugin = without_query(plugin_with(), dcid_map)
    status, body = await ps.post(f"/ws/schema/query/{dcid_map}/count", args)
    assert status == 403
    assert [e["field"] for e in body["errors"]] == ["students.id", "students.dcid"]
    # The shipped plugin does not declare the daily template: the service does not call it.
    template = "com.pearson.core.attendance.daily_attendance_template"
    status, body = await ps.post(f"/ws/schema/query/{template}", {"studentid": 1})
    assert (status, body["message"]) == (403, "Validation Failed")


# ---------------------------------------------------------------------------------------------
# PowerQuery and v1
# ---------------------------------------------------------------------------------------------


async def test_dcid_id_map_both_directions(ps: PS, sim: PowerSchoolSimulator) -> None:
    a, b = sim.dataset.students[0], sim.dataset.students[7]
    path = "/ws/schema/query/com.pearson.core.student.student_dcid_id_map"
    status, body = await ps.post(path, {"students_dcid": [a.dcid, str(b.dcid)]})
    assert status == 200
    assert sorted(body["record"], key=lambda r: r["id"]) == sorted(
        [{"id": str(a.id), "dcid": str(a.dcid)}, {"id": str(b.id), "dcid": str(b.dcid)}],
        key=lambda r: r["id"],
    )
    status, body = await ps.post(path, {"students_id": [b.id]})
    assert body["record"] == [{"id": str(b.id), "dcid": str(b.dcid)}]
    status, body = await ps.post(path, {"students_dcid": [a.id]})  # an ID is not a DCID
    assert (status, body["record"]) == (200, [])


async def test_dcid_id_map_can_be_uninstalled() -> None:
    sim = PowerSchoolSimulator(dcid_id_map_query=False)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await PS(sim, session).post(
                "/ws/schema/query/com.pearson.core.student.student_dcid_id_map",
                {"students_dcid": [sim.dataset.students[0].dcid]},
            )
    finally:
        await sim.stop()
    assert status == 404
    assert "message" in body


async def test_v1_student_shows_dcid_never_id(ps: PS, sim: PowerSchoolSimulator) -> None:
    sim.plugin = plugin_with(v1="READ")
    student = sim.dataset.students[1]
    status, body = await ps.get(f"/ws/v1/student/{student.dcid}", expansions="school_enrollment")
    assert status == 200
    s = body["student"]
    assert s["id"] == student.dcid
    assert s["local_id"] == int(student.student_number)
    assert s["name"] == {"first_name": student.first_name, "last_name": student.last_name}
    assert s["school_enrollment"]["school_number"] == student.schoolid
    assert student.id not in _all_values(body)
    status, body = await ps.get(f"/ws/v1/student/{student.id}")
    assert status == 404
    assert "message" in body["errorMessage"]


def _all_values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _all_values(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _all_values(x)]
    return [obj]


# ---------------------------------------------------------------------------------------------
# Attendance writes
# ---------------------------------------------------------------------------------------------


async def test_daily_time_insert_then_update_keeps_row(ps: PS, sim: PowerSchoolSimulator) -> None:
    status, body = await ps.post("/ws/attendance/daily_time", attendance_body(**write_cols(sim)))
    assert status == 200, body
    [result] = body["result"]
    assert (result["status"], result["action"]) == ("SUCCESS", "INSERT")
    att_id = result["success_message"]["id"]
    assert isinstance(att_id, int)
    [row] = sim.attendance_rows()
    assert row["id"] == str(att_id)
    assert row["dcid"] != row["id"]
    assert result["success_message"]["ref"] == (
        f"{sim.base_url}/ws/schema/table/attendance/{row['dcid']}"
    )
    student = sim.dataset.students[0]
    status, body = await ps.get(
        "/ws/schema/table/attendance",
        q=f"studentid=={student.id};att_date==2025-10-01;att_mode_code==ATT_ModeDaily",
        projection="id,dcid,attendance_codeid,att_comment",
    )
    [record] = body["record"]
    assert record["id"] == int(row["dcid"])
    assert record["tables"]["attendance"]["att_comment"] == "Late check-in 08:47 (VM)"

    cols = write_cols(sim, code="LE", att_comment="Late 08:47, left 13:10")
    status, body = await ps.post("/ws/attendance/daily_time", attendance_body(**cols))
    assert status == 200, body
    assert body["result"][0]["action"] == "UPDATE"
    assert body["result"][0]["success_message"]["id"] == att_id
    [row] = sim.attendance_rows()
    assert row["attendance_codeid"] == cols["attendance_codeid"]
    assert row["att_comment"] == "Late 08:47, left 13:10"
    assert row["studentid"] == str(student.id)
    assert row["schoolid"] == "100"
    assert row["yearid"] == "35"
    assert row["ccid"] == "0"


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("dcid_as_studentid", "studentid"),
        ("wrong_yearid", "yearid"),
        ("other_school_code", "attendance_codeid"),
        ("other_year_code", "attendance_codeid"),
        ("school_dcid_as_schoolid", "schoolid"),
        ("meeting_mode", "att_mode_code"),
        ("time_mode_in_a_daily_school", "att_mode_code"),
        ("minutes_on_daily", "total_minutes"),
        ("date_outside_year", "att_date"),
        ("bad_date_format", "att_date"),
        ("missing_yearid", "yearid"),
        ("number_not_string", "studentid"),
        ("unknown_column", "bogus"),
    ],
)
async def test_daily_time_validation(
    ps: PS, sim: PowerSchoolSimulator, case: str, field: str
) -> None:
    student = sim.dataset.students[0]
    codes = {(c.schoolid, c.yearid, c.att_code): c.id for c in sim.dataset.codes}
    cols = write_cols(sim)
    cols.update(
        {
            "meeting_mode": {"att_mode_code": "ATT_ModeMeeting"},
            "time_mode_in_a_daily_school": {"att_mode_code": "ATT_ModeTime", "total_minutes": "9"},
            "minutes_on_daily": {"total_minutes": "300"},
        }.get(case, {})
    )
    if case == "dcid_as_studentid":
        cols["studentid"] = str(student.dcid)
    elif case == "wrong_yearid":
        cols["yearid"] = "36"
    elif case == "other_school_code":
        cols["attendance_codeid"] = str(codes[(200, 35, "T")])
    elif case == "other_year_code":
        cols["attendance_codeid"] = str(codes[(100, 36, "T")])
    elif case == "school_dcid_as_schoolid":
        cols["schoolid"] = str(sim.dataset.schools[0].dcid)
    elif case == "date_outside_year":
        cols["att_date"] = "2025-07-15"
    elif case == "bad_date_format":
        cols["att_date"] = "10/01/2025"
    elif case == "missing_yearid":
        del cols["yearid"]
    elif case == "number_not_string":
        cols["studentid"] = student.id
    elif case == "unknown_column":
        cols["bogus"] = "1"
    status, body = await ps.post("/ws/attendance/daily_time", attendance_body(**cols))
    assert status == 400, body
    assert body["message"] == "Validation Failed"
    assert field in {e["field"] for e in body["errors"]}
    assert all(e["resource"] == "ATTENDANCE" for e in body["errors"])
    assert sim.attendance_rows() == []


async def test_daily_time_needs_exactly_one_record(ps: PS, sim: PowerSchoolSimulator) -> None:
    one = attendance_body(**write_cols(sim))
    two = {"name": "ATTENDANCE", "record": one["record"] * 2}
    assert (await ps.post("/ws/attendance/daily_time", two))[0] == 400
    assert (await ps.post("/ws/attendance/daily_time", {"name": "x", "record": []}))[0] == 400
    assert sim.attendance_rows() == []


async def test_lenient_values_when_not_strict() -> None:
    sim = PowerSchoolSimulator(strict_string_values=False)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            cols = write_cols(sim, studentid=sim.dataset.students[0].id, yearid=35)
            status, body = await PS(sim, session).post(
                "/ws/attendance/daily_time", attendance_body(**cols)
            )
    finally:
        await sim.stop()
    assert status == 200, body
    assert body["result"][0]["status"] == "SUCCESS"


async def test_add_attendance_is_visible_and_upserted(ps: PS, sim: PowerSchoolSimulator) -> None:
    cols = write_cols(sim, code="A")
    row = sim.add_attendance(**{k: v for k, v in cols.items() if k != "att_comment"})
    assert row["att_comment"] == ""
    assert row["att_mode_code"] == "ATT_ModeDaily"
    status, body = await ps.get("/ws/schema/table/attendance/count", q=f"id=={row['id']}")
    assert (status, body) == (200, {"count": 1})
    status, body = await ps.post("/ws/attendance/daily_time", attendance_body(**write_cols(sim)))
    assert (status, body["result"][0]["action"]) == (200, "UPDATE")
    assert body["result"][0]["success_message"]["id"] == int(row["id"])


# ---------------------------------------------------------------------------------------------
# Faults, call log, control endpoints
# ---------------------------------------------------------------------------------------------


async def test_queued_429_and_5xx_then_recovery(ps: PS, sim: PowerSchoolSimulator) -> None:
    await ps.token()
    sim.faults.queue.extend([(429, 2.0), (503, None)])
    status, body, headers = await ps.request("GET", "/ws/v1/metadata")
    assert (status, body, headers["Retry-After"]) == (429, {"message": "Too Many Requests"}, "2")
    status, body, headers = await ps.request("GET", "/ws/v1/metadata")
    assert status == 503
    assert "message" in body
    assert "Retry-After" not in headers
    assert (await ps.get("/ws/v1/metadata"))[0] == 200


async def test_queue_does_not_apply_to_oauth(ps: PS, sim: PowerSchoolSimulator) -> None:
    sim.faults.queue.append((500, None))
    assert (await ps.oauth())[0] == 200
    assert (await ps.get("/ws/v1/metadata"))[0] == 500


async def test_outage_serves_html_503(ps: PS, sim: PowerSchoolSimulator) -> None:
    await ps.token()
    sim.faults.outage = True
    for path in ("/oauth/access_token", "/ws/schema/table/students"):
        method = "POST" if path.startswith("/oauth") else "GET"
        status, body, headers = await ps.request(method, path)
        assert status == 503
        assert headers["Content-Type"].startswith("text/html")
        assert "<html" in body
    sim.faults.outage = False
    assert (await ps.get("/ws/v1/metadata"))[0] == 200


async def test_latency(ps: PS, sim: PowerSchoolSimulator) -> None:
    await ps.token()
    sim.faults.latency = 0.1
    started = time.monotonic()
    assert (await ps.get("/ws/v1/metadata"))[0] == 200
    assert time.monotonic() - started >= 0.1


async def test_write_faults(ps: PS, sim: PowerSchoolSimulator) -> None:
    body = attendance_body(**write_cols(sim))
    sim.faults.write_error_in_body = True
    status, payload = await ps.post("/ws/attendance/daily_time", body)
    assert status == 200
    assert payload["result"][0]["status"] == "ERROR"
    assert "error_message" in payload["result"][0]
    assert sim.attendance_rows() == []
    sim.faults.write_error_in_body = False
    sim.faults.write_forbidden = True
    status, payload = await ps.post("/ws/attendance/daily_time", body)
    assert status == 403
    assert payload["errors"][0] == {
        "code": "NoAccess",
        "field": "attendance_codeid",
        "resource": "ATTENDANCE",
    }
    assert sim.attendance_rows() == []


async def test_v1_needs_the_plugins_access_level(ps: PS, sim: PowerSchoolSimulator) -> None:
    # The shipped plugin has no accessLevelV1Api: the service calls no /ws/v1 resource.
    status, body = await ps.get(f"/ws/v1/student/{sim.dataset.students[0].dcid}")
    assert (status, body) == (
        401,
        {
            "errorMessage": {
                "message": "Plugin is missing required accessLevelV1Api READ permission"
            }
        },
    )
    assert (await ps.get("/ws/v1/metadata"))[0] == 200


async def test_calls_are_recorded(ps: PS, sim: PowerSchoolSimulator) -> None:
    await ps.token()
    await ps.get("/ws/schema/table/students", q="schoolid==100", projection="id")
    await ps.post("/ws/attendance/daily_time", attendance_body(**write_cols(sim)))
    assert [(c.method, c.path, c.status) for c in sim.calls] == [
        ("POST", "/oauth/access_token", 200),
        ("GET", "/ws/schema/table/students", 200),
        ("POST", "/ws/attendance/daily_time", 200),
    ]
    assert sim.calls[0].body is None
    assert sim.calls[1].query == {"q": "schoolid==100", "projection": "id"}
    assert sim.calls[2].body["record"][0]["tables"]["attendance"]["att_date"] == "2025-10-01"
    assert sim.count("/ws/") == 2
    assert sim.count("/ws/attendance", "POST") == 1
    assert sim.count("/ws/attendance", "GET") == 0
    sim.reset_calls()
    assert sim.calls == []


async def test_sim_control_endpoints(ps: PS, sim: PowerSchoolSimulator) -> None:
    await ps.token()
    async with ps.session.post(
        ps.base + "/_sim/faults", json={"queue": [[429, 1]], "latency": 0}
    ) as resp:
        assert resp.status == 200
    assert sim.faults.queue == [(429, 1.0)]
    assert (await ps.get("/ws/v1/metadata"))[0] == 429
    async with ps.session.post(ps.base + "/_sim/faults", json={"nope": True}) as resp:
        assert resp.status == 400
    await ps.post("/ws/attendance/daily_time", attendance_body(**write_cols(sim)))
    async with ps.session.get(ps.base + "/_sim/attendance") as resp:
        rows = await resp.json()
    assert len(rows) == 1
    assert rows[0]["att_date"] == "2025-10-01"
    async with ps.session.get(ps.base + "/_sim/calls") as resp:
        calls = await resp.json()
    assert [c["status"] for c in calls] == [200, 429, 200]
    assert all(not c["path"].startswith("/_sim") for c in calls)
    async with ps.session.post(ps.base + "/_sim/reset-calls") as resp:
        assert resp.status == 200
    assert sim.calls == []


async def test_simulators_are_independent() -> None:
    one = PowerSchoolSimulator(demo_dataset(students_per_school=2, today=FIXED_TODAY))
    two = PowerSchoolSimulator(Dataset(schools=[], students=[], terms=[], codes=[]))
    await one.start()
    await two.start()
    try:
        assert one.base_url != two.base_url
        two.add_student(PSStudent(1, 2, "999999", "Ann", "Lee", 100))
        with pytest.raises(ValueError, match="already exists"):
            two.add_student(PSStudent(1, 5, "999998", "Bo", "Lee", 100))
        async with aiohttp.ClientSession() as session:
            assert (await PS(one, session).get("/ws/schema/table/students/count"))[1] == {
                "count": 4
            }
            assert (await PS(two, session).get("/ws/schema/table/students/count"))[1] == {
                "count": 1
            }
        assert one.count("/ws/") == 1
        assert two.count("/ws/") == 1
    finally:
        await one.stop()
        await two.stop()


async def test_the_command_line_server_enforces_the_plugin_given(tmp_path: Path) -> None:
    """``python -m simulators.powerschool --plugin PATH`` installs that plugin, not the
    shipped one."""
    narrow = tmp_path / "plugin.xml"
    narrow.write_text(
        plugin_path()
        .read_text()
        .replace('<field table="STUDENTS" field="STUDENT_NUMBER" access="ViewOnly"/>', "")
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.powerschool",
        "--port",
        "0",
        "--plugin",
        str(narrow),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        base = first.rsplit(" ", 1)[-1].strip()
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{base}/oauth/access_token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
            ) as resp:
                token = (await resp.json())["access_token"]
            answers = []
            for projection in ("id,dcid", "student_number"):
                async with session.get(
                    f"{base}/ws/schema/table/students",
                    params={"projection": projection},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    answers.append((resp.status, await resp.json()))
    finally:
        proc.terminate()
        await proc.wait()
    (ok, _), (status, body) = answers
    assert ok == 200
    assert (status, body["errors"][0]["field"]) == (403, "Student_Number")
