"""The PowerSchool simulator's Meeting and Time world, over real HTTP: class schedules, the
meeting_interval_attendance_template PowerQuery, POST /ws/attendance/meeting_interval and its
refusals, and Time-mode daily_time writes."""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.powerschool import parse_plugin, plugin_path
from simulators.powerschool import (
    ATT_MODE_MEETING,
    BELL_TIMES,
    PowerSchoolSimulator,
    PSStudent,
    demo_dataset,
    without_field,
)
from tests.test_simulator_powerschool import PS, attendance_body

FIXED_TODAY = datetime.date(2026, 11, 1)
DAY = datetime.date(2026, 10, 14)  # a Wednesday of school year 36 (2026-27)
TEMPLATE = "/ws/schema/query/com.pearson.core.attendance.meeting_interval_attendance_template"
MEETING = "/ws/attendance/meeting_interval"
DAILY = "/ws/attendance/daily_time"


@pytest.fixture
async def sim() -> AsyncIterator[PowerSchoolSimulator]:
    """School 100 takes Meeting attendance, 200 Time; ten students each."""
    simulator = PowerSchoolSimulator(
        demo_dataset(students_per_school=10, today=FIXED_TODAY),
        meeting_schools={100},
        time_schools={200},
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def ps(sim: PowerSchoolSimulator) -> AsyncIterator[PS]:
    async with aiohttp.ClientSession() as session:
        yield PS(sim, session)


def student(sim: PowerSchoolSimulator, school: int, index: int = 0) -> PSStudent:
    return [s for s in sim.dataset.students if s.schoolid == school][index]


def code_id(sim: PowerSchoolSimulator, school: int, att_code: str, yearid: int = 36) -> int:
    return next(
        c.id
        for c in sim.dataset.codes
        if (c.schoolid, c.yearid, c.att_code) == (school, yearid, att_code)
    )


def meeting_cols(
    sim: PowerSchoolSimulator, s: PSStudent, period: int, att_code: str = "T", **overrides: Any
) -> dict[str, Any]:
    m = next(m for m in sim.meetings_for(s, DAY) if m.period_number == period)
    cols: dict[str, Any] = {
        "studentid": str(s.id),
        "schoolid": str(s.schoolid),
        "yearid": "36",
        "att_date": DAY.isoformat(),
        "att_mode_code": ATT_MODE_MEETING,
        "attendance_codeid": str(code_id(sim, s.schoolid, att_code)),
        "att_comment": f"P{period} [writeback:r1]",
        "ccid": str(m.ccid),
        "periodid": str(m.periodid),
        "start_time": m.start_time,
        "end_time": m.end_time,
    }
    cols.update(overrides)
    return {k: v for k, v in cols.items() if v is not None}


def meeting_body(*records: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "ATTENDANCE",
        "record": [{"name": "ATTENDANCE", "tables": {"attendance": r}} for r in records],
    }


async def test_every_student_of_a_meeting_school_has_six_classes_a_day(
    sim: PowerSchoolSimulator,
) -> None:
    for s in (x for x in sim.dataset.students if x.schoolid == 100):
        meetings = sim.meetings_for(s, DAY)
        assert [m.period_number for m in meetings] == [1, 2, 3, 4, 5, 6]
        assert [(m.start_time, m.end_time) for m in meetings] == [(a, b) for _, a, b in BELL_TIMES]
        assert len({m.ccid for m in meetings}) == 6
        assert {m.yearid for m in meetings} == {36}
    first, second = student(sim, 100, 0), student(sim, 100, 1)
    assert {m.ccid for m in sim.meetings_for(first, DAY)}.isdisjoint(
        m.ccid for m in sim.meetings_for(second, DAY)
    )
    assert sim.meetings_for(student(sim, 200), DAY) == []  # a Time school has no schedule here
    assert sim.meetings_for(first, datetime.date(2026, 7, 15)) == []  # summer
    again = PowerSchoolSimulator(
        demo_dataset(
            students_per_school=10, today=FIXED_TODAY, attendance_modes={100: "ATT_ModeMeeting"}
        )
    )
    assert again.meeting_schools == {100}
    assert again.meetings_for(first, DAY) == sim.meetings_for(first, DAY)  # deterministic
    # A teacher's absence in period 1 on the year's first day.
    first_day = datetime.date(2026, 8, 12)
    [seeded] = sim.meeting_rows(first, first_day)
    assert seeded["ccid"] == str(sim.meetings_for(first, first_day)[0].ccid)
    assert seeded["attendance_codeid"] == str(code_id(sim, 100, "A"))


async def test_template_lists_the_days_meetings_with_existing_marks(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    s = student(sim, 100)
    sim.add_meeting_attendance(s, DAY, 2, "A", att_comment="teacher")
    status, body = await ps.post(
        TEMPLATE, {"studentid": str(s.id), "schoolid": "100", "att_date": DAY.isoformat()}
    )
    assert status == 200, body
    assert body["name"] == "Attendance"
    rows = [r["tables"]["attendance"] for r in body["record"]]
    meetings = sim.meetings_for(s, DAY)
    assert [(r["ccid"], r["periodid"], r["start_time"], r["end_time"]) for r in rows] == [
        (str(m.ccid), str(m.periodid), str(m.start_time), str(m.end_time)) for m in meetings
    ]
    assert rows[0]["start_time"] == "28800"  # 08:00, seconds since local midnight
    assert all(isinstance(v, str) for r in rows for v in r.values())
    assert {r["att_mode_code"] for r in rows} == {"ATT_ModeMeeting"}
    assert rows[1]["attendance_codeid"] == str(code_id(sim, 100, "A"))
    assert rows[1]["att_comment"] == "teacher"
    assert rows[1]["dcid"] != ""
    assert [r["attendance_codeid"] for r in rows[2:]] == [""] * 4
    assert rows[0]["attendance_codeid"] == ""

    # Another school's number, a daily-school student: no meetings.
    for args in (
        {"studentid": str(s.id), "schoolid": "200", "att_date": DAY.isoformat()},
        {"studentid": str(student(sim, 200).id), "schoolid": "200", "att_date": DAY.isoformat()},
    ):
        status, body = await ps.post(TEMPLATE, args)
        assert (status, body["record"]) == (200, [])
    status, body = await ps.post(TEMPLATE, {"schoolid": "100"})
    assert status == 400


async def test_template_needs_its_declaration_and_fields(ps: PS, sim: PowerSchoolSimulator) -> None:
    s = student(sim, 100)
    args = {"studentid": str(s.id), "schoolid": "100", "att_date": DAY.isoformat()}
    sim.plugin = without_field(sim.plugin, "BELL_SCHEDULE_ITEMS", "START_TIME")
    status, body = await ps.post(TEMPLATE, args)
    assert status == 403
    assert [e["field"] for e in body["errors"]] == ["bell_schedule_items.start_time"]


async def test_meeting_write_then_read_back_and_update_in_place(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    s = student(sim, 100)
    status, body = await ps.post(
        MEETING,
        meeting_body(
            meeting_cols(sim, s, 1, "A"), meeting_cols(sim, s, 2, "A"), meeting_cols(sim, s, 3)
        ),
    )
    assert status == 200, body
    assert [r["status"] for r in body["result"]] == ["SUCCESS"] * 3
    assert [r["action"] for r in body["result"]] == ["INSERT"] * 3
    rows = sim.meeting_rows(s, DAY)
    assert [r["id"] for r in rows] == [str(r["success_message"]["id"]) for r in body["result"]]
    assert [r["attendance_codeid"] for r in rows] == [
        str(code_id(sim, 100, c)) for c in ("A", "A", "T")
    ]

    status, read = await ps.get(
        "/ws/schema/table/attendance",
        q=f"studentid=={s.id};att_date=={DAY.isoformat()};att_mode_code==ATT_ModeMeeting",
        projection="id,dcid,ccid,periodid,attendance_codeid,att_comment",
    )
    assert status == 200, read
    got = {
        (r["tables"]["attendance"]["ccid"], r["tables"]["attendance"]["periodid"]): r["tables"][
            "attendance"
        ]["attendance_codeid"]
        for r in read["record"]
    }
    meetings = sim.meetings_for(s, DAY)
    assert got == {
        (str(m.ccid), str(m.periodid)): str(code_id(sim, 100, c))
        for m, c in zip(meetings[:3], ("A", "A", "T"), strict=True)
    }
    # No daily row appears for a meeting write.
    status, daily = await ps.get(
        "/ws/schema/table/attendance",
        q=f"studentid=={s.id};att_date=={DAY.isoformat()};att_mode_code==ATT_ModeDaily",
    )
    assert daily["record"] == []

    # Same meeting again: an update of the same row, not a second one.
    status, body = await ps.post(MEETING, meeting_body(meeting_cols(sim, s, 3, "TE")))
    assert status == 200, body
    assert body["result"][0]["action"] == "UPDATE"
    assert body["result"][0]["success_message"]["id"] == int(rows[2]["id"])
    assert len(sim.meeting_rows(s, DAY)) == 3
    assert sim.meeting_rows(s, DAY)[2]["attendance_codeid"] == str(code_id(sim, 100, "TE"))

    # Cancel: a meeting row is deleted like a daily one.
    token = await ps.token()
    async with ps.session.delete(
        f"{sim.base_url}/ws/schema/table/attendance/{rows[0]['dcid']}",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 204
    assert [r["id"] for r in sim.meeting_rows(s, DAY)] == [rows[1]["id"], rows[2]["id"]]


async def test_start_and_end_may_be_digit_strings(ps: PS, sim: PowerSchoolSimulator) -> None:
    s = student(sim, 100)
    cols = meeting_cols(sim, s, 4)
    cols["start_time"], cols["end_time"] = str(cols["start_time"]), str(cols["end_time"])
    status, body = await ps.post(MEETING, meeting_body(cols))
    assert status == 200, body


async def test_times_off_the_bell_schedule_when_not_strict(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    s = student(sim, 100)
    off = meeting_cols(sim, s, 1, start_time=8 * 3600 + 300, end_time=8 * 3600 + 3000)
    status, body = await ps.post(MEETING, meeting_body(off))
    assert status == 400
    sim.strict_meeting_times = False
    status, body = await ps.post(MEETING, meeting_body(off))
    assert status == 200, body


def _other_ccid(sim: PowerSchoolSimulator, s: PSStudent) -> dict[str, Any]:
    other = student(sim, 100, 1)
    m = sim.meetings_for(other, DAY)[0]
    return {"ccid": str(m.ccid), "periodid": str(m.periodid)}


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("ccid_of_another_student", "ccid"),
        ("period_of_another_class", "periodid"),
        ("times_not_the_bell_schedule", "start_time"),
        ("end_before_start", "start_time"),
        ("times_as_words", "start_time"),
        ("missing_ccid", "ccid"),
        ("missing_end_time", "end_time"),
        ("daily_mode_code", "att_mode_code"),
        ("wrong_yearid", "yearid"),
        ("code_of_another_school", "attendance_codeid"),
        ("duplicate_meeting", "ccid"),
        ("unknown_dcid", "dcid"),
    ],
)
async def test_meeting_write_validation(
    ps: PS, sim: PowerSchoolSimulator, case: str, field: str
) -> None:
    s = student(sim, 100)
    cols = meeting_cols(sim, s, 1)
    records = [cols]
    if case == "ccid_of_another_student":
        cols.update(_other_ccid(sim, s))
    elif case == "period_of_another_class":
        cols["periodid"] = meeting_cols(sim, s, 2)["periodid"]
    elif case == "times_not_the_bell_schedule":
        cols["start_time"], cols["end_time"] = 8 * 3600 + 60, 8 * 3600 + 50 * 60
    elif case == "end_before_start":
        cols["start_time"], cols["end_time"] = cols["end_time"], cols["start_time"]
    elif case == "times_as_words":
        cols["start_time"] = "08:00"
    elif case == "missing_ccid":
        del cols["ccid"]
    elif case == "missing_end_time":
        del cols["end_time"]
    elif case == "daily_mode_code":
        cols["att_mode_code"] = "ATT_ModeDaily"
    elif case == "wrong_yearid":
        cols["yearid"] = "35"
    elif case == "code_of_another_school":
        cols["attendance_codeid"] = str(code_id(sim, 200, "T"))
    elif case == "duplicate_meeting":
        records.append(meeting_cols(sim, s, 1, "A"))
    elif case == "unknown_dcid":
        cols["dcid"] = "999999"
    records.append(meeting_cols(sim, s, 6))  # a valid record does not save the request
    status, body = await ps.post(MEETING, meeting_body(*records))
    assert status == 400, body
    assert body["message"] == "Validation Failed"
    assert field in {e["field"] for e in body["errors"]}
    assert sim.meeting_rows(s, DAY) == []


async def test_one_student_and_one_day_per_request(ps: PS, sim: PowerSchoolSimulator) -> None:
    one, two = student(sim, 100, 0), student(sim, 100, 1)
    status, body = await ps.post(
        MEETING, meeting_body(meeting_cols(sim, one, 1), meeting_cols(sim, two, 1))
    )
    assert status == 400, body
    assert "single student for a single day" in body["message"]
    assert body["errors"] == [
        {"resource": "ATTENDANCE", "field": "studentid", "code": "INVALID_VALUE"}
    ]
    other_day = meeting_cols(sim, one, 2, att_date=(DAY + datetime.timedelta(days=1)).isoformat())
    status, body = await ps.post(MEETING, meeting_body(meeting_cols(sim, one, 1), other_day))
    assert status == 400
    assert body["errors"][0]["field"] == "att_date"
    status, body = await ps.post(MEETING, {"name": "ATTENDANCE", "record": []})
    assert status == 400
    assert sim.meeting_rows(one, DAY) == []
    assert sim.meeting_rows(two, DAY) == []


async def test_meeting_write_for_a_daily_school_is_refused(ps: PS) -> None:
    sim = PowerSchoolSimulator(
        demo_dataset(students_per_school=4, today=FIXED_TODAY), meeting_schools={200}
    )
    await sim.start()
    try:
        daily_student = student(sim, 100)
        meeting_student = student(sim, 200)
        cols = meeting_cols(sim, meeting_student, 1)
        cols.update(
            studentid=str(daily_student.id),
            schoolid="100",
            attendance_codeid=str(code_id(sim, 100, "T")),
        )
        async with aiohttp.ClientSession() as session:
            client = PS(sim, session)
            status, body = await client.post(MEETING, meeting_body(cols))
        assert status == 400, body
        assert body["message"] == "Validation Failed"
        assert "att_mode_code" in {e["field"] for e in body["errors"]}
        assert [r for r in sim.attendance_rows() if r["schoolid"] == "100"] == []
    finally:
        await sim.stop()


async def test_daily_write_for_a_meeting_school_is_refused(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    s = student(sim, 100)
    status, body = await ps.post(
        DAILY,
        attendance_body(
            studentid=str(s.id),
            schoolid="100",
            yearid="36",
            att_date=DAY.isoformat(),
            att_mode_code="ATT_ModeDaily",
            attendance_codeid=str(code_id(sim, 100, "T")),
        ),
    )
    assert status == 400, body
    assert [e["field"] for e in body["errors"]] == ["att_mode_code"]
    assert sim.meeting_rows(s, DAY) == []


def time_cols(sim: PowerSchoolSimulator, s: PSStudent, **overrides: Any) -> dict[str, Any]:
    cols = {
        "studentid": str(s.id),
        "schoolid": str(s.schoolid),
        "yearid": "36",
        "att_date": DAY.isoformat(),
        "att_mode_code": "ATT_ModeTime",
        "attendance_codeid": str(code_id(sim, s.schoolid, "T")),
        "total_minutes": "335",
        "att_comment": "Late check-in 09:25",
    }
    cols.update(overrides)
    return {k: v for k, v in cols.items() if v is not None}


async def test_time_school_takes_total_minutes(ps: PS, sim: PowerSchoolSimulator) -> None:
    s = student(sim, 200)
    status, body = await ps.post(DAILY, attendance_body(**time_cols(sim, s)))
    assert status == 200, body
    assert body["result"][0]["action"] == "INSERT"
    status, read = await ps.get(
        "/ws/schema/table/attendance",
        q=f"studentid=={s.id};att_date=={DAY.isoformat()};att_mode_code==ATT_ModeTime",
        projection="id,dcid,attendance_codeid,total_minutes",
    )
    [row] = [r["tables"]["attendance"] for r in read["record"]]
    assert row["total_minutes"] == "335"
    status, body = await ps.post(DAILY, attendance_body(**time_cols(sim, s, total_minutes="300")))
    assert body["result"][0]["action"] == "UPDATE"
    assert [r["total_minutes"] for r in sim.attendance_rows() if r["studentid"] == str(s.id)] == [
        "300"
    ]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"att_mode_code": "ATT_ModeDaily", "total_minutes": None}, "att_mode_code"),
        ({"total_minutes": None}, "total_minutes"),
        ({"total_minutes": "1500"}, "total_minutes"),
        ({"att_mode_code": "ATT_ModeMeeting"}, "att_mode_code"),
    ],
    ids=["daily-code", "no-minutes", "more-than-a-day", "meeting-code"],
)
async def test_time_school_refuses_other_writes(
    ps: PS, sim: PowerSchoolSimulator, overrides: dict[str, Any], field: str
) -> None:
    status, body = await ps.post(
        DAILY, attendance_body(**time_cols(sim, student(sim, 200), **overrides))
    )
    assert status == 400, body
    assert field in {e["field"] for e in body["errors"]}
    assert [r for r in sim.attendance_rows() if r["schoolid"] == "200"] == []


async def test_meeting_write_faults_and_calls(ps: PS, sim: PowerSchoolSimulator) -> None:
    s = student(sim, 100)
    body = meeting_body(meeting_cols(sim, s, 1, "A"), meeting_cols(sim, s, 2))
    sim.faults.write_error_in_body = True
    status, payload = await ps.post(MEETING, body)
    assert status == 200
    assert [r["status"] for r in payload["result"]] == ["ERROR", "ERROR"]
    assert sim.meeting_rows(s, DAY) == []
    sim.faults.write_error_in_body = False

    sim.faults.write_forbidden = True
    status, payload = await ps.post(MEETING, body)
    assert status == 403
    assert payload["errors"][0]["code"] == "NoAccess"
    sim.faults.write_forbidden = False

    sim.faults.queue.append((503, 5.0))
    status, payload, headers = await ps.request("POST", MEETING, json=body)
    assert (status, headers["Retry-After"]) == (503, "5")
    sim.faults.outage = True
    status, payload = await ps.post(MEETING, body)
    assert status == 503
    sim.faults.outage = False
    assert sim.meeting_rows(s, DAY) == []

    # Committed, then the answer never comes in time: the write-then-timeout case.
    sim.faults.hang_after_write, sim.faults.hang_seconds = 1, 5.0
    sim.faults.write_latency = 0.1
    token = await ps.token()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with ps.session.post(
            sim.base_url + MEETING,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=0.6),
        ):
            pass
    assert time.monotonic() - started >= 0.1
    assert len(sim.meeting_rows(s, DAY)) == 2
    assert sim.faults.hang_after_write == 0

    writes = [c for c in sim.calls if c.path == MEETING]
    assert [c.status for c in writes] == [200, 403, 503, 503]  # the hung one is not answered
    assert writes[0].body == body
    assert sim.count("/ws/attendance/meeting_interval", "POST") == 4


async def test_meeting_write_needs_full_access_on_ccid_and_periodid(
    ps: PS, sim: PowerSchoolSimulator
) -> None:
    s = student(sim, 100)
    text = plugin_path().read_text()
    for field, named in (("CCID", "CCID"), ("PERIODID", "PeriodID")):
        full = f'table="ATTENDANCE" field="{field}" access="FullAccess"'
        sim.plugin = parse_plugin(text.replace(full, full.replace("FullAccess", "ViewOnly")))
        status, body = await ps.post(MEETING, meeting_body(meeting_cols(sim, s, 1)))
        assert status == 403, body
        assert body["errors"] == [
            {
                "code": "NoAccess",
                "field": named,
                "resource": "Attendance",
            }
        ]
    assert sim.meeting_rows(s, DAY) == []


async def test_schedule_tables_through_the_table_api(ps: PS, sim: PowerSchoolSimulator) -> None:
    s = student(sim, 100)
    status, body = await ps.get(
        "/ws/schema/table/cc",
        q=f"studentid=={s.id};dateenrolled=le={DAY.isoformat()};dateleft=gt={DAY.isoformat()}",
        projection="id,sectionid,dateenrolled,dateleft",
    )
    assert status == 200, body
    assert sorted(int(r["tables"]["cc"]["id"]) for r in body["record"]) == sorted(
        m.ccid for m in sim.meetings_for(s, DAY)
    )
    status, body = await ps.get(
        "/ws/schema/table/period",
        q="schoolid==100;year_id==36",
        projection="id,period_number,abbreviation",
        sort="period_number",
    )
    assert [r["tables"]["period"]["abbreviation"] for r in body["record"]] == [
        f"P{n}" for n in range(1, 7)
    ]
    status, body = await ps.get(
        "/ws/schema/table/bell_schedule_items", projection="period_id,start_time,end_time"
    )
    assert status == 200
    first = {"period_id": str(sim.meetings_for(s, DAY)[0].periodid), "start_time": "28800"}
    items = [r["tables"]["bell_schedule_items"] for r in body["record"]]
    assert {**first, "end_time": "31800"} in items
    status, body = await ps.get("/ws/schema/table/cc", projection="course_number")
    assert status == 403
    assert body["errors"] == [{"code": "NoAccess", "field": "Course_Number", "resource": "CC"}]


async def test_a_student_added_to_a_meeting_school_gets_a_schedule(
    sim: PowerSchoolSimulator,
) -> None:
    newcomer = PSStudent(id=2999, dcid=69999, student_number="249999", first_name="N",
                         last_name="M", schoolid=100)  # fmt: skip
    sim.add_student(newcomer)
    assert [m.period_number for m in sim.meetings_for(newcomer, DAY)] == [1, 2, 3, 4, 5, 6]
    assert sim.add_meeting_attendance(newcomer, DAY, 5, "T")["ccid"] == str(
        sim.meetings_for(newcomer, DAY)[4].ccid
    )
    with pytest.raises(ValueError, match="no class in period 7"):
        sim.add_meeting_attendance(newcomer, DAY, 7)


async def test_switching_a_school_to_meeting_mode(ps: PS) -> None:
    sim = PowerSchoolSimulator(demo_dataset(students_per_school=4, today=FIXED_TODAY))
    await sim.start()
    try:
        s = student(sim, 200)
        assert sim.attendance_mode(200) == "ATT_ModeDaily"
        sim.set_attendance_mode(200, ATT_MODE_MEETING)
        assert sim.meeting_schools == {200}
        async with aiohttp.ClientSession() as session:
            status, body = await PS(sim, session).post(
                MEETING, meeting_body(meeting_cols(sim, s, 1))
            )
        assert status == 200, body
        with pytest.raises(ValueError, match="attendance mode"):
            sim.set_attendance_mode(200, "ATT_ModeInterval")
    finally:
        await sim.stop()


async def test_the_command_line_server_takes_meeting_and_time_schools() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.powerschool", "--port", "0",
        "--meeting-schools", "100", "--time-schools", "200",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode() for _ in range(5)]
    finally:
        proc.terminate()
        await proc.wait()
    assert "school 100 'Lincoln High School' ATT_ModeMeeting" in lines[3]
    assert "school 200 'Washington Middle School' ATT_ModeTime" in lines[4]
