"""Meeting-mode delivery against the PowerSchool simulator over real gRPC and HTTP: a late
arrival marks the periods missed and the one in progress, an early dismissal the rest, a
teacher's marks follow the daily rules per meeting, a cancel puts every meeting back, and a
lost answer does not write twice. School 100 takes Meeting attendance (six periods: 8:00,
9:00, 10:00, 11:00, 12:30, 13:30, fifty minutes each), school 200 Daily."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from service.domain import _school_years
from simulators.powerschool import PowerSchoolSimulator, PSStudent, demo_dataset
from tests.helpers import World, failure, local, roster_school_of
from tests.test_delivery import cancel

MEETING = "/ws/attendance/meeting_interval"
DAILY = "/ws/attendance/daily_time"


@pytest.fixture
async def sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(
        demo_dataset(students_per_school=10),
        client_id=f"sim-{uuid.uuid4().hex[:8]}",
        meeting_schools={100},
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


def schools(**meeting: Any) -> list[pb.School]:
    base = {
        "writeback_enabled": True,
        "late_check_in_code": "T",
        "early_check_out_code": "ED",
    }
    return [
        pb.School(
            school_number=100,
            roster_school_id=roster_school_of(100),
            attendance_mode=pb.ATTENDANCE_MODE_MEETING,
            **{**base, "missed_code": "A", **meeting},
        ),
        pb.School(school_number=200, roster_school_id=roster_school_of(200), **base),
    ]


def marks(world: World, ps: PSStudent, day: date) -> dict[int, tuple[str, str]]:
    """Period number -> (ATT_CODE, comment) of the student's Meeting rows that day."""
    codes = {str(c.id): c.att_code for c in world.sim.dataset.codes}
    periods = {m.periodid: m.period_number for m in world.sim.meetings_for(ps, day)}
    return {
        periods[int(r["periodid"])]: (codes[r["attendance_codeid"]], r["att_comment"])
        for r in world.sim.attendance_rows()
        if r["studentid"] == str(ps.id)
        and r["att_date"] == day.isoformat()
        and r["att_mode_code"] == "ATT_ModeMeeting"
    }


def meeting_writes(sim: PowerSchoolSimulator, record_id: str) -> int:
    return sum(1 for c in sim.calls if c.path == MEETING and record_id in str(c.body))


async def test_late_arrival_marks_missed_periods_and_the_one_in_progress(world: World) -> None:
    await world.setup(schools=schools())
    ps, day = world.student(100, 1), world.school_day()
    record = (await world.submit(ps, local(day, 10, 15))).record
    assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
    found = marks(world, ps, day)
    assert {p: code for p, (code, _) in found.items()} == {1: "A", 2: "A", 3: "T"}
    assert all(f"[writeback:{record.record_id}]" in comment for _, comment in found.values())
    shown = await world.record(record.record_id)
    assert [(m.attendance_code, m.start_time) for m in shown.meetings] == [
        ("A", 8 * 3600),
        ("A", 9 * 3600),
        ("T", 10 * 3600),
    ]
    assert all(m.ccid and m.period_id for m in shown.meetings)
    listed = await world.stub.ListAttendance(
        pb.ListAttendanceRequest(district_id=world.district_id)
    )
    assert [len(r.meetings) for r in listed.records] == [3]
    # One write for the three meetings.
    assert meeting_writes(world.sim, record.record_id) == 1

    # The same student leaves at 13:00: the period in progress (12:30) and the last one.
    out = (await world.submit(ps, local(day, 13, 0), pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT)).record
    assert out.state == pb.ATTENDANCE_STATE_WRITTEN, out.last_error
    found = marks(world, ps, day)
    assert {p: code for p, (code, _) in found.items()} == {
        1: "A",
        2: "A",
        3: "T",
        5: "ED",
        6: "ED",
    }
    assert f"[writeback:{record.record_id}]" not in found[5][1]


async def test_teacher_marks_present_left_alone_absence_replaced_and_cancel_restores(
    world: World,
) -> None:
    await world.setup(schools=schools())
    ps, day = world.student(100, 2), world.school_day()
    world.sim.add_meeting_attendance(ps, day, 1, "", att_comment="here on time")
    world.sim.add_meeting_attendance(ps, day, 2, "A", att_comment="not in class")
    world.sim.add_meeting_attendance(ps, day, 3, "A", att_comment="absent at roll call")
    record = (await world.submit(ps, local(day, 10, 15))).record
    assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
    found = marks(world, ps, day)
    assert found[1] == ("", "here on time")
    assert found[2][0] == "A"
    assert f"[writeback:{record.record_id}]" in found[2][1]
    assert found[3][0] == "T"
    shown = {m.start_time // 3600: m for m in (await world.record(record.record_id)).meetings}
    assert shown[8].attendance_code == ""
    assert "entered outside the service" in shown[8].left_unchanged
    assert (shown[9].replaced_attendance_code, shown[9].replaced_comment) == (
        "A",
        "not in class",
    )

    world.sim.reset_calls()
    cancelled = await cancel(world, record.record_id, "wrong student")
    assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED, cancelled.last_error
    assert marks(world, ps, day) == {
        1: ("", "here on time"),
        2: ("A", "not in class"),
        3: ("A", "absent at roll call"),
    }
    # Both replaced values went back in one request.
    assert world.sim.count(MEETING) == 1


async def test_a_lost_answer_writes_each_meeting_once(world: World) -> None:
    """PowerSchool commits the meetings, then the answer never arrives (client timeout 2 s):
    the retry finds its tags on every meeting and sends nothing again. The teacher's absence
    the write replaced was saved before it was sent, so a cancel still puts it back."""
    await world.setup(schools=schools())
    ps, day = world.student(100, 3), world.school_day()
    world.sim.add_meeting_attendance(ps, day, 2, "A", att_comment="not in class")
    world.sim.faults.hang_after_write = 1
    world.sim.faults.hang_seconds = 3.0
    record = (await world.submit(ps, local(day, 10, 15), deadline=20)).record
    assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
    assert record.attempts == 2
    await asyncio.sleep(1.5)
    assert meeting_writes(world.sim, record.record_id) == 1
    assert len(marks(world, ps, day)) == 3
    shown = {m.start_time // 3600: m for m in (await world.record(record.record_id)).meetings}
    assert shown[9].replaced_attendance_code == "A"
    cancelled = await cancel(world, record.record_id, "wrong student")
    assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED, cancelled.last_error
    assert marks(world, ps, day) == {2: ("A", "not in class")}


async def test_daily_and_meeting_schools_from_the_same_call(world: World) -> None:
    await world.setup(schools=schools())
    day = world.school_day()
    meeting = (await world.submit(world.student(100, 4), local(day, 10, 15))).record
    daily = (await world.submit(world.student(200, 4), local(day, 10, 15))).record
    assert meeting.state == daily.state == pb.ATTENDANCE_STATE_WRITTEN
    assert meeting_writes(world.sim, meeting.record_id) == 1
    assert not any(c.path == DAILY and meeting.record_id in str(c.body) for c in world.sim.calls)
    assert any(c.path == DAILY and daily.record_id in str(c.body) for c in world.sim.calls)
    assert len((await world.record(daily.record_id)).meetings) == 0


async def test_a_school_whose_mode_differs_fails_without_writing(world: World) -> None:
    """School 100 takes Meeting attendance in PowerSchool but is configured Daily."""
    await world.setup(
        schools=[
            pb.School(
                school_number=100,
                roster_school_id=roster_school_of(100),
                writeback_enabled=True,
                late_check_in_code="T",
                early_check_out_code="ED",
            )
        ]
    )
    record = (await world.submit(world.student(100, 5), local(world.school_day(), 10, 15))).record
    assert record.state == pb.ATTENDANCE_STATE_FAILED
    assert "takes Meeting attendance" in record.last_error
    assert "set to Daily" in record.last_error
    assert not any(c.path in (DAILY, MEETING) for c in world.sim.calls)


async def test_a_meeting_school_needs_its_missed_code(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.setup(schools=schools(missed_code=""))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "missed_code" in str(failure(err.value).violations)


async def test_a_time_school_fails_saying_so(world: World) -> None:
    await world.setup(
        schools=[
            *schools()[:1],
            pb.School(
                school_number=200,
                roster_school_id=roster_school_of(200),
                writeback_enabled=True,
                late_check_in_code="T",
                attendance_mode=pb.ATTENDANCE_MODE_TIME,
            ),
        ]
    )
    record = (await world.submit(world.student(200, 6), local(world.school_day(), 10, 15))).record
    assert record.state == pb.ATTENDANCE_STATE_FAILED
    assert "Time attendance" in record.last_error
    assert not any(c.path in (DAILY, MEETING) for c in world.sim.calls)


async def test_cancelling_one_event_of_a_shared_meeting_keeps_the_others_code(
    world: World,
) -> None:
    """A teacher's absence in period 3; in at 10:15 and out at 10:40 (period 3 in progress at
    both: the combined code). Cancelling the check-in leaves period 3 with the check-out's
    own code, in PowerSchool and on the check-out's record, which inherits the teacher's
    absence to put back; cancelling the check-out then restores it."""
    await world.setup(schools=schools(late_and_early_code="LE"))
    ps, day = world.student(100, 7), world.school_day()
    world.sim.add_meeting_attendance(ps, day, 3, "A", att_comment="not in class")
    late = (await world.submit(ps, local(day, 10, 15))).record
    early = (await world.submit(ps, local(day, 10, 40), pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT)).record
    assert late.state == early.state == pb.ATTENDANCE_STATE_WRITTEN, early.last_error
    assert {p: code for p, (code, _) in marks(world, ps, day).items()} == {
        1: "A",
        2: "A",
        3: "LE",
        4: "ED",
        5: "ED",
        6: "ED",
    }

    cancelled = await cancel(world, late.record_id, "wrong student")
    assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED, cancelled.last_error
    found = marks(world, ps, day)
    assert {p: code for p, (code, _) in found.items()} == {3: "ED", 4: "ED", 5: "ED", 6: "ED"}
    assert f"[writeback:{late.record_id}]" not in found[3][1]
    shown = {m.start_time // 3600: m for m in (await world.record(early.record_id)).meetings}
    assert shown[10].attendance_code == "ED"
    assert (shown[10].replaced_attendance_code, shown[10].replaced_comment) == (
        "A",
        "not in class",
    )

    cancelled = await cancel(world, early.record_id, "came back")
    assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED, cancelled.last_error
    assert marks(world, ps, day) == {3: ("A", "not in class")}


async def test_the_happy_path_costs_three_calls(world: World) -> None:
    """Once the caches are warm (token, STUDENTS.ID, term, codes, mode): the schedule, the
    existing marks and one write per record."""
    await world.setup(schools=schools())
    day = world.school_day()
    warm = (await world.submit(world.student(100, 0), local(day, 10, 15))).record
    assert warm.state == pb.ATTENDANCE_STATE_WRITTEN, warm.last_error
    for i in range(1, 6):
        await world.resolve(sis_id=str(world.student(100, i).dcid))
    world.sim.reset_calls()
    for i in range(1, 6):
        record = (await world.submit(world.student(100, i), local(day, 10, 15))).record
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
    paths = sorted(c.path.rsplit("/", 1)[-1] for c in world.sim.calls)
    assert paths == sorted(
        ["com.pearson.core.attendance.meeting_interval_attendance_template", "attendance"] * 5
        + ["meeting_interval"] * 5
    )


async def test_the_mode_is_counted_once_and_asked_again_while_there_is_no_evidence(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """School 200 (Daily) has no rows this year: its first check-in is written (the benefit
    of the doubt) and the next one is not counted again; rows of another mode appearing meanwhile
    are seen once the no-evidence answer is five minutes old."""
    await world.setup(schools=schools())
    day = world.school_day()
    count = "/ws/schema/table/attendance/count"
    first = (await world.submit(world.student(200, 0), local(day, 10, 15))).record
    assert first.state == pb.ATTENDANCE_STATE_WRITTEN, first.last_error
    assert world.sim.count(count) == 3
    yearid = world.yearid(200, day)
    for ps in [world.student(200, i) for i in range(5, 10)]:
        world.sim.add_attendance(
            studentid=ps.id,
            schoolid=200,
            yearid=yearid,
            att_date=day,
            att_mode_code="ATT_ModeMeeting",
            attendance_codeid=world.code_id(200, yearid, "A"),
        )
    second = (await world.submit(world.student(200, 1), local(day, 10, 15))).record
    assert second.state == pb.ATTENDANCE_STATE_WRITTEN, second.last_error
    assert world.sim.count(count) == 3

    later = time.monotonic() + 301
    monkeypatch.setattr(_school_years, "time", SimpleNamespace(monotonic=lambda: later))
    third = (await world.submit(world.student(200, 2), local(day, 10, 15))).record
    assert third.state == pb.ATTENDANCE_STATE_FAILED
    assert "takes Meeting attendance" in third.last_error
    assert world.sim.count(count) == 6
