"""Sharing one read of a school's day between the records claimed together: when it pays,
how a batch's records are put in lanes, and what the shared read may answer. Pure: no
database, no HTTP, a fake clock."""

from __future__ import annotations

import pytest

from service.domain import rules
from service.domain.delivery import DAY_READ_FRESH, DayRows
from service.powerschool import DailyAttendance


@pytest.mark.parametrize(
    ("students", "rows_last_seen", "pays"),
    [
        (1, None, False),  # one student: their own read is as cheap, and fresher
        (2, None, True),  # first read of the day: one page expected
        (2, 99, True),
        (2, 100, False),  # 100 rows: a full page, then an empty one; a tie goes to per-student
        (3, 100, True),
        (5, 450, False),  # five pages for five students
        (6, 450, True),
        (100, 2_000, True),
    ],
)
def test_a_day_read_pays_when_it_takes_fewer_calls(
    students: int, rows_last_seen: int | None, pays: bool
) -> None:
    assert rules.day_read_pays(students, rows_last_seen, 100) is pays


@pytest.mark.parametrize(
    ("last_done", "answers"),
    [
        (None, True),  # no attempt for the student in this process lately
        (99.0, True),  # the last one ended before the read began: the read saw its write
        (100.0, False),
        (101.0, False),  # it ended after: its write may have landed after the read passed
    ],
)
def test_a_day_read_does_not_answer_after_a_later_attempt(
    last_done: float | None, answers: bool
) -> None:
    assert rules.day_read_answers(100.0, last_done) is answers


def test_lanes_keep_each_students_records_in_order() -> None:
    items = [("ann", 1), ("bob", 2), ("ann", 3), ("cy", 4), ("bob", 5)]
    assert rules.lanes(items, key=lambda item: item[0]) == [
        [("ann", 1), ("ann", 3)],
        [("bob", 2), ("bob", 5)],
        [("cy", 4)],
    ]


def test_lanes_of_nothing() -> None:
    assert rules.lanes([], key=str) == []


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ROW = DailyAttendance(id=7, dcid=70, attendance_codeid=5, comment="Absent in period 1")


def test_each_students_row_is_answered_once() -> None:
    """The first record of a student gets the shared read's answer; a second record of the
    same student must read again, to see what the first one wrote."""
    day = DayRows({3001: ROW}, read_at=100.0, clock=_Clock())
    assert day.take(3001) == (True, ROW)
    assert day.take(3001) == (False, None)


def test_no_row_is_an_answer() -> None:
    day = DayRows({3001: ROW}, read_at=100.0, clock=_Clock())
    assert day.take(3002) == (True, None)
    assert day.take(3002) == (False, None)


def test_a_stale_read_answers_nothing() -> None:
    clock = _Clock()
    day = DayRows({3001: ROW}, read_at=100.0, clock=clock)
    clock.now = 100.0 + DAY_READ_FRESH
    assert day.take(3001) == (False, None)
    assert day.take(3002) == (False, None)
