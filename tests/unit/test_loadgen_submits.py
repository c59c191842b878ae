"""The load tool's submit and rush scenarios send new records, not corrections: a second
check-in of one student, day and event corrects the first, a slower path than a morning's
check-ins take."""

from __future__ import annotations

from datetime import UTC, date, datetime

from writeback.v1 import writeback_pb2 as pb

from clients.loadgen._scenarios import Kind, Options, Stream, Student

STUDENTS = tuple(Student(sis_id=f"s{i}", school_number=100) for i in range(5))
DAY = date(2026, 11, 30)


def _sent(processes: int, calls: int, scenario: str = "submit") -> list[pb.SubmitAttendanceRequest]:
    """Each process's first ``calls`` check-ins (a rush's resolves left out)."""
    options = Options(
        target="127.0.0.1:1",
        scenario=scenario,
        processes=processes,
        district="d1",
        students=STUDENTS,
        day=DAY,
    )
    streams = [Stream(options, index, run_id="r") for index in range(processes)]
    sent = [stream.call(i) for stream in streams for i in range(calls)]
    return [
        pb.SubmitAttendanceRequest.FromString(call.payload)
        for call in sent
        if call.kind is Kind.SUBMIT
    ]


def test_every_submission_is_a_new_student_day_and_event() -> None:
    # 2 processes x 40 calls over 5 students: eight laps of late check-ins and check-outs.
    sent = _sent(2, 40)
    days = {(r.student.sis_id, r.occurred_at.ToDatetime(tzinfo=UTC).date(), r.event) for r in sent}
    assert len(days) == len(sent) == 80
    assert len({r.idempotency_key for r in sent}) == 80
    events = {r.event for r in sent}
    assert events == {pb.ATTENDANCE_EVENT_LATE_CHECK_IN, pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT}


def test_each_lap_goes_back_a_week_from_the_day_given() -> None:
    sent = _sent(1, 30)
    dates = sorted({r.occurred_at.ToDatetime(tzinfo=UTC).date() for r in sent}, reverse=True)
    assert dates == [date(2026, 11, 30), date(2026, 11, 23), date(2026, 11, 16)]
    assert all(d.weekday() == DAY.weekday() for d in dates)
    assert max(r.occurred_at.ToDatetime(tzinfo=UTC) for r in sent) < datetime(
        2026, 12, 1, tzinfo=UTC
    )


def test_a_rush_longer_than_a_pass_checks_in_a_week_earlier() -> None:
    # 2 processes x 30 calls: 30 check-ins (each after its resolve) over 5 students.
    sent = _sent(2, 30, scenario="rush")
    assert len(sent) == 30
    days = {(r.student.sis_id, r.occurred_at.ToDatetime(tzinfo=UTC).date()) for r in sent}
    assert len(days) == 30
    assert {r.event for r in sent} == {pb.ATTENDANCE_EVENT_LATE_CHECK_IN}
