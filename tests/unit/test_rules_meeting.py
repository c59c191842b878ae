"""The Meeting-mode and attendance-mode rules, table by table: no database, no HTTP."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from service.domain import rules_meeting as rm
from service.models import (
    AttendanceEvent,
    AttendanceMode,
    AttendanceRecord,
    AttendanceState,
    Replaced,
    School,
)
from service.powerschool import AttendanceCode, ClassMeeting, MeetingAttendance

TZ = "America/Chicago"
DAY = date(2026, 11, 30)
LATE, EARLY = AttendanceEvent.LATE_CHECK_IN, AttendanceEvent.EARLY_CHECK_OUT
CODES = {
    c.att_code: c
    for c in (
        AttendanceCode(1, "T", "Present"),
        AttendanceCode(2, "ED", "Present"),
        AttendanceCode(3, "AE", "Absent"),
        AttendanceCode(4, "A", "Absent"),
        AttendanceCode(5, "P", "Present"),
        AttendanceCode(6, "LE", "Present"),
    )
}
SCHOOL = School(
    100,
    late_check_in_code="T",
    early_check_out_code="ED",
    missed_code="AE",
    attendance_mode=AttendanceMode.MEETING,
)


def hm(h: int, m: int) -> int:
    return h * 3600 + m * 60


# Six periods of 55 minutes from 8:00, five minutes between them.
SIX = [
    ClassMeeting(
        ccid=10 + p,
        period_id=p,
        start_time=hm(8, 0) + (p - 1) * 3600,
        end_time=hm(8, 55) + (p - 1) * 3600,
        period=f"P{p}",
    )
    for p in range(1, 7)
]


def record(event: AttendanceEvent, h: int, m: int, **changes: object) -> AttendanceRecord:
    base = AttendanceRecord(
        record_id=str(uuid.uuid4()),
        district_id="d-1",
        idempotency_key="k",
        request_hash="h",
        roster_id="r-1",
        event=event,
        occurred_at=datetime(2026, 11, 30, h, m, tzinfo=ZoneInfo(TZ)),
        school_number=100,
        att_date=DAY,
        attendance_code="T" if event is LATE else "ED",
        state=AttendanceState.PENDING,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def mark(period: int, code: str, comment: str = "teacher") -> MeetingAttendance:
    return MeetingAttendance(
        id=500 + period,
        dcid=600 + period,
        ccid=10 + period,
        period_id=period,
        attendance_codeid=CODES[code].id,
        comment=comment,
    )


def plan(
    rec: AttendanceRecord,
    existing: list[MeetingAttendance] = (),  # type: ignore[assignment]
    *,
    sibling: AttendanceRecord | None = None,
    school: School = SCHOOL,
    meetings: list[ClassMeeting] = SIX,
) -> rm.DayPlan:
    return rm.plan_meeting_write(
        rec,
        school=school,
        timezone=TZ,
        yearid=36,
        codes=CODES,
        meetings=meetings,
        existing={rm.key_of(r): r for r in existing},
        sibling=sibling,
    )


def codes_by_period(p: rm.DayPlan) -> dict[str, str]:
    return {
        m.meeting.period: m.mark.attendance_code
        for m in p.meetings
        if m.send and m.mark.attendance_code
    }


@pytest.mark.parametrize(
    ("event", "at", "expected"),
    [
        # A late arrival: meetings over by then missed, the one in progress tardy.
        (LATE, (10, 15), {"P1": "AE", "P2": "AE", "P3": "T"}),
        # Between periods (P2 ended 9:55, P3 starts 10:00): nothing in progress.
        (LATE, (9, 57), {"P1": "AE", "P2": "AE"}),
        # At the very start of a meeting: that meeting is tardy.
        (LATE, (8, 0), {"P1": "T"}),
        # An early dismissal: the meeting in progress and every later one.
        (EARLY, (13, 0), {"P6": "ED"}),
        (EARLY, (12, 30), {"P5": "ED", "P6": "ED"}),
        (EARLY, (10, 15), {"P3": "ED", "P4": "ED", "P5": "ED", "P6": "ED"}),
        # Leaving when a meeting ends does not touch it.
        (EARLY, (12, 55), {"P6": "ED"}),
    ],
)
def test_which_meetings_an_event_marks(
    event: AttendanceEvent, at: tuple[int, int], expected: dict[str, str]
) -> None:
    p = plan(record(event, *at))
    assert p.state is AttendanceState.WRITTEN
    assert codes_by_period(p) == expected
    assert all(m.replaced is None for m in (x.mark for x in p.meetings))


@pytest.mark.parametrize(
    ("event", "at", "why"),
    [
        (LATE, (7, 45), "had started by 07:45"),
        (EARLY, (14, 0), "runs after 14:00"),
    ],
)
def test_an_event_outside_the_class_day_is_skipped(
    event: AttendanceEvent, at: tuple[int, int], why: str
) -> None:
    p = plan(record(event, *at))
    assert p.state is AttendanceState.SKIPPED
    assert why in p.message


def test_a_teachers_present_mark_is_left_alone_and_an_absence_replaced() -> None:
    p = plan(record(LATE, 10, 15), [mark(1, "P"), mark(2, "A", "absent in P2")])
    by = {m.meeting.period: m for m in p.meetings}
    assert not by["P1"].send
    assert "'P'" in by["P1"].mark.left_unchanged
    assert by["P2"].send
    assert by["P2"].mark.attendance_code == "AE"
    assert by["P2"].mark.replaced == Replaced(4, "A", "absent in P2")
    assert by["P3"].mark.attendance_code == "T"
    assert p.state is AttendanceState.WRITTEN


def test_every_meeting_held_by_a_teacher_is_skipped() -> None:
    p = plan(record(EARLY, 13, 0), [mark(6, "P")])
    assert p.state is AttendanceState.SKIPPED
    assert "P6" in p.message


def test_own_marks_already_there_are_not_sent_again() -> None:
    rec = record(LATE, 10, 15)
    first = plan(rec)
    written = [
        MeetingAttendance(
            500 + m.meeting.period_id,
            600 + m.meeting.period_id,
            m.meeting.ccid,
            m.meeting.period_id,
            m.codeid,
            m.comment,
        )
        for m in first.meetings
    ]
    again = plan(rec, written)
    assert again.state is AttendanceState.WRITTEN
    assert again.writes == []
    assert codes_by_period(first) == {
        m.meeting.period: m.mark.attendance_code for m in again.meetings
    }


@pytest.mark.parametrize(
    ("late_at", "early_at", "combined", "expected_for_early"),
    [
        # In at 10:15, out at 13:00: different meetings, nothing shared.
        ((10, 15), (13, 0), "", {"P6": "ED"}),
        # In at 10:15, out at 10:40: P3 in progress at both -> the later event's code...
        ((10, 15), (10, 40), "", {"P3": "ED", "P4": "ED", "P5": "ED", "P6": "ED"}),
        # ... or the school's combined code.
        ((10, 15), (10, 40), "LE", {"P3": "LE", "P4": "ED", "P5": "ED", "P6": "ED"}),
    ],
)
def test_a_check_out_the_same_day_as_a_check_in(
    late_at: tuple[int, int],
    early_at: tuple[int, int],
    combined: str,
    expected_for_early: dict[str, str],
) -> None:
    school = replace(SCHOOL, late_and_early_code=combined)
    late = record(LATE, *late_at)
    first = plan(late, school=school)
    rows = [
        MeetingAttendance(
            500 + m.meeting.period_id,
            600 + m.meeting.period_id,
            m.meeting.ccid,
            m.meeting.period_id,
            m.codeid,
            m.comment,
        )
        for m in first.writes
    ]
    early = record(EARLY, *early_at)
    second = plan(early, rows, sibling=late, school=school)
    assert codes_by_period(second) == expected_for_early
    for m in second.writes:
        if f"[writeback:{late.record_id}]" in next(
            (r.comment for r in rows if r.ccid == m.meeting.ccid), ""
        ):
            # A shared meeting: both tags, and the late code kept to put back on a cancel.
            assert late.record_id in m.comment
            assert early.record_id in m.comment
            assert m.mark.replaced is not None
    # No meeting is both missed by the arrival and after the departure in the usual order.
    if early_at > late_at:
        missed = {m.meeting.period for m in first.writes if m.mark.attendance_code == "AE"}
        assert not missed & set(expected_for_early)


def test_a_missing_missed_code_or_no_schedule_fails() -> None:
    p = plan(record(LATE, 10, 15), school=replace(SCHOOL, missed_code=""))
    assert p.state is AttendanceState.FAILED
    assert "missed_code" in p.message
    p = plan(record(LATE, 10, 15), meetings=[])
    assert p.state is AttendanceState.FAILED
    assert "no class meetings" in p.message
    p = plan(record(LATE, 10, 15), school=replace(SCHOOL, missed_code="ZZ"))
    assert p.state is AttendanceState.FAILED
    assert "'ZZ'" in p.message


def cancel(
    rec: AttendanceRecord, rows: list[MeetingAttendance], sibling: AttendanceRecord | None = None
) -> rm.DayPlan:
    return rm.plan_meeting_cancel(
        rec,
        school=SCHOOL,
        timezone=TZ,
        codes=CODES,
        meetings=[],
        existing={rm.key_of(r): r for r in rows},
        sibling=sibling,
    )


def test_cancel_restores_replaced_marks_and_deletes_created_ones() -> None:
    rec = record(LATE, 10, 15)
    p = plan(rec, [mark(2, "A", "absent")])
    rec = replace(rec, meetings=tuple(m.mark for m in p.meetings))
    rows = [
        MeetingAttendance(
            500 + m.meeting.period_id,
            600 + m.meeting.period_id,
            m.meeting.ccid,
            m.meeting.period_id,
            m.codeid,
            m.comment,
        )
        for m in p.writes
    ]
    c = cancel(rec, rows)
    assert c.state is AttendanceState.CANCELLED
    restored = {m.meeting.period: (m.codeid, m.comment) for m in c.writes}
    assert restored == {"P2": (4, "absent")}
    assert sorted(m.delete_dcid or 0 for m in c.deletes) == [601, 603]
    # A meeting a teacher has changed since (no tag) is left alone.
    rows[0] = replace(rows[0], comment="teacher fixed it")
    assert len(cancel(rec, rows).meetings) == 2
    # Nothing of it there: nothing to do.
    assert cancel(rec, []).message == "nothing of this record was in PowerSchool"


@pytest.mark.parametrize(
    ("configured", "counts", "problem"),
    [
        (AttendanceMode.DAILY, {}, ""),
        # Counts read but all zero (a new year): no evidence, as with no counts.
        (AttendanceMode.MEETING, {m: 0 for m in AttendanceMode}, ""),
        (AttendanceMode.MEETING, {AttendanceMode.MEETING: 40, AttendanceMode.DAILY: 2}, ""),
        (AttendanceMode.DAILY, {AttendanceMode.DAILY: 40, AttendanceMode.MEETING: 2}, ""),
        (AttendanceMode.DAILY, {AttendanceMode.MEETING: 40}, "takes Meeting attendance"),
        (AttendanceMode.MEETING, {AttendanceMode.DAILY: 40}, "takes Daily attendance"),
        (AttendanceMode.MEETING, {AttendanceMode.TIME: 9}, "takes Time attendance"),
        (AttendanceMode.TIME, {}, "Time attendance, which the service does not write"),
    ],
)
def test_mode_problems(
    configured: AttendanceMode, counts: dict[AttendanceMode, int], problem: str
) -> None:
    school = replace(SCHOOL, attendance_mode=configured)
    found = rm.mode_problem(school, rm.observed_mode(counts), counts)
    assert (problem in found) if problem else found == ""
    if problem:
        assert problem in found


def test_a_student_who_left_and_came_back() -> None:
    """Out at 9:15 (during P2), back at 11:15 (during P4): P2 early, P3 missed, P4 tardy; the
    check-out's marks after the return are put back (removed: nothing was there)."""
    early = record(EARLY, 9, 15)
    first = plan(early)
    assert codes_by_period(first) == {f"P{p}": "ED" for p in range(2, 7)}
    rows = [
        MeetingAttendance(
            500 + m.meeting.period_id,
            600 + m.meeting.period_id,
            m.meeting.ccid,
            m.meeting.period_id,
            m.codeid,
            m.comment,
        )
        for m in first.writes
    ]
    early = replace(early, meetings=tuple(m.mark for m in first.meetings))
    second = plan(record(LATE, 11, 15), rows, sibling=early)
    assert codes_by_period(second) == {"P2": "ED", "P3": "AE", "P4": "T"}
    assert sorted(m.delete_dcid or 0 for m in second.deletes) == [605, 606]


def test_cancelling_one_event_of_a_shared_meeting_keeps_the_others_code() -> None:
    """In at 10:15, out at 10:40 (P3 in progress at both: the combined code LE). Cancelling
    the check-in writes the check-out's own code in P3 with only its tag, notes that code on
    the check-out, hands it the teacher's value the check-in replaced, and removes P1-P2."""
    school = replace(SCHOOL, late_and_early_code="LE")
    late = record(LATE, 10, 15)
    first = plan(late, [mark(3, "A", "absent in P3")], school=school)
    late = replace(late, meetings=tuple(m.mark for m in first.meetings))
    rows = {
        m.meeting.period_id: MeetingAttendance(
            500 + m.meeting.period_id,
            600 + m.meeting.period_id,
            m.meeting.ccid,
            m.meeting.period_id,
            m.codeid,
            m.comment,
        )
        for m in first.writes
    }
    early = record(EARLY, 10, 40)
    second = plan(early, list(rows.values()), sibling=late, school=school)
    early = replace(early, meetings=tuple(m.mark for m in second.meetings))
    for m in second.writes:
        rows[m.meeting.period_id] = replace(
            rows.get(m.meeting.period_id) or mark(m.meeting.period_id, "ED"),
            attendance_codeid=m.codeid,
            comment=m.comment,
        )
    c = rm.plan_meeting_cancel(
        late,
        school=school,
        timezone=TZ,
        codes=CODES,
        meetings=[],
        existing={rm.key_of(r): r for r in rows.values()},
        sibling=early,
    )
    (shared,) = c.writes
    assert shared.meeting.period == "P3"
    assert (shared.mark.attendance_code, shared.codeid) == ("ED", CODES["ED"].id)
    assert early.record_id in shared.comment
    assert late.record_id not in shared.comment
    assert shared.keep_code_for == early.record_id
    assert shared.hand_over_to == early.record_id
    assert sorted(m.delete_dcid or 0 for m in c.deletes) == [601, 602]
