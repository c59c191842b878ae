"""The delivery decisions, as pure functions of plain data: no I/O, no clock, no randomness
of their own. The worker gathers the facts (the record, what PowerSchool holds, the school's
current settings), asks these functions what to do, does it, and records the outcome.

Writing a check-in (``plan_write``), given the student's daily row for the date:

- nothing there: insert the event's code;
- a row tagged with this record whose code and comment are what this record would write:
  an earlier attempt wrote it (its answer was lost): nothing to do;
- a row tagged with this record (or with the service's record of the day's other event):
  rewrite it; for the other event (late check-in and early check-out on one day) use the
  school's combined code if it has one, otherwise the later event's code, noting both;
- a teacher's absence (a code whose presence status is Absent and that the service does not
  write itself, or one of the school's ``absence_codes``): replace it, keeping the old value;
- anything else (a teacher's tardy, a present mark...): leave it, SKIPPED with the reason.

The code, like the school year and STUDENTS.ID, comes from the settings and caches of the
attempt, never from what was stored at submit time, so a retry after an admin fixed a code
uses the fixed one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from service.models import (
    AttendanceEvent,
    AttendanceRecord,
    AttendanceState,
    District,
    Replaced,
    School,
)
from service.powerschool import AttendanceCode, DailyAttendance

_EVENT_LABEL = {
    AttendanceEvent.LATE_CHECK_IN: "Late check-in",
    AttendanceEvent.EARLY_CHECK_OUT: "Early check-out",
}
_COMMENT_MAX = 1000
_T = TypeVar("_T")
# The tag lets the service recognise its own rows in PowerSchool when reconciling.
RECORD_TAG = "[writeback:{}]"
_TAG = re.compile(r"\[writeback:([0-9a-f-]{36})\]")


def record_tags(comment: str) -> list[str]:
    """The record ids tagged in a PowerSchool ATT_COMMENT, in order."""
    return _TAG.findall(comment)


def local_time(occurred_at: datetime, timezone: str) -> datetime:
    """``occurred_at`` in the school's time zone (its date is the attendance date)."""
    return occurred_at.astimezone(ZoneInfo(timezone))


def _describe(record: AttendanceRecord, timezone: str) -> str:
    parts = [f"{_EVENT_LABEL[record.event]} {local_time(record.occurred_at, timezone):%H:%M}"]
    if record.reason:
        parts.append(f"Reason: {record.reason}")
    if record.excused:
        parts.append("Excused")
    if record.checked_out_by:
        parts.append(f"Checked out by: {record.checked_out_by}")
    if record.comment:
        parts.append(record.comment)
    return ". ".join(parts)


def attendance_comment(records: Sequence[AttendanceRecord], timezone: str) -> str:
    """The ATT_COMMENT: each event's local time, reason and notes in time order, then the
    record tags; at most 1,000 characters, tags always kept."""
    ordered = sorted(records, key=lambda r: r.occurred_at)
    tags = " ".join(RECORD_TAG.format(r.record_id) for r in ordered)
    text = " | ".join(_describe(r, timezone) for r in ordered)
    return f"{text[: _COMMENT_MAX - len(tags) - 1]} {tags}"


class Action(enum.StrEnum):
    """What an attempt does in PowerSchool."""

    WRITE = "write"
    """Send the daily row (PowerSchool creates or updates it)."""
    NOTHING = "nothing"
    """PowerSchool already holds what this attempt would write."""
    DELETE = "delete"
    """Delete the service's own row (a cancel of a row it created)."""


@dataclass(frozen=True)
class Plan:
    """An attempt's decision. ``action`` None means "no call": the record ends ``state``
    with ``message`` (SKIPPED, FAILED, or CANCELLED when nothing was there)."""

    action: Action | None
    state: AttendanceState
    message: str = ""
    code: str = ""
    """The ATT_CODE the row will hold (or holds)."""
    codeid: int | None = None
    comment: str = ""
    replaced: Replaced | None = None
    """The value about to be overwritten: saved before the write is sent."""
    keep_code_for: str = ""
    """A cancel that keeps the other event's row: the record id whose code is now ``code``."""
    hand_over_to: str = ""
    """The record that inherits this one's replaced value (a cancel that keeps the other
    event's row, written over this record's)."""


def code_for(school: School, event: AttendanceEvent, *, excused: bool) -> str:
    """The ATT_CODE the school's current settings give an event."""
    return school.code_for(event, excused=excused)


def write_blocked(district: District, school: School | None, school_number: int) -> Plan | None:
    """A write the district's current settings rule out before PowerSchool is asked."""
    if school is None:
        return Plan(
            None,
            AttendanceState.FAILED,
            f"school {school_number} is no longer configured for this district",
        )
    if not (district.writeback_enabled and school.writeback_enabled):
        return Plan(None, AttendanceState.SKIPPED, "writeback was switched off before delivery")
    return None


def no_school_year(record: AttendanceRecord) -> Plan:
    """A write for a date no school year of the school contains."""
    return Plan(
        None,
        AttendanceState.FAILED,
        f"PowerSchool has no school year (TERMS with isyearrec=1) for school "
        f"{record.school_number} that contains {record.att_date.isoformat()}",
    )


def _missing_code(code: str, school_number: int, yearid: int) -> Plan:
    return Plan(
        None,
        AttendanceState.FAILED,
        f"attendance code {code!r} does not exist in PowerSchool for school "
        f"{school_number}, yearid {yearid}; create it or fix the school's code setting",
        code=code,
    )


def is_absence(code: AttendanceCode | None, school: School) -> bool:
    """May the service overwrite a row holding ``code`` that it did not write?"""
    if code is None:
        return False
    if school.absence_codes:
        return code.att_code in school.absence_codes
    return code.presence_status.lower() == "absent" and code.att_code not in school.own_codes()


def plan_write(
    record: AttendanceRecord,
    *,
    school: School,
    timezone: str,
    yearid: int,
    codes: Mapping[str, AttendanceCode],
    existing: DailyAttendance | None,
    sibling: AttendanceRecord | None,
) -> Plan:
    """What to write for ``record``. ``sibling`` is the service's live record of the day's
    other event when PowerSchool's row carries its tag."""
    code = code_for(school, record.event, excused=record.excused)
    if not code:
        return Plan(
            None,
            AttendanceState.FAILED,
            f"school {record.school_number} has no attendance code configured for "
            f"{record.event.value.replace('_', ' ')}",
        )
    notes: list[AttendanceRecord] = [record]
    replaced: Replaced | None = None
    tags = record_tags(existing.comment) if existing else []
    by_id = {c.id: c for c in codes.values()}
    if existing is not None and record.record_id not in tags and sibling is None:
        held = by_id.get(existing.attendance_codeid or -1)
        if not is_absence(held, school):
            shown = repr(held.att_code) if held else f"code id {existing.attendance_codeid}"
            return Plan(
                None,
                AttendanceState.SKIPPED,
                f"PowerSchool already has {shown} for this student on "
                f"{record.att_date.isoformat()}, entered outside the writeback service; "
                "left unchanged",
            )
        replaced = Replaced(
            existing.attendance_codeid, held.att_code if held else "", existing.comment
        )
    elif existing is not None and sibling is not None and sibling.event is not record.event:
        notes.append(sibling)
        if school.late_and_early_code:
            code = school.late_and_early_code
        elif sibling.occurred_at > record.occurred_at:
            code = code_for(school, sibling.event, excused=sibling.excused)
        if record.record_id not in tags:
            replaced = Replaced(
                existing.attendance_codeid, sibling.attendance_code, existing.comment
            )
    wanted = codes.get(code)
    if wanted is None:
        return _missing_code(code, record.school_number, yearid)
    comment = attendance_comment(notes, timezone)
    if (
        existing is not None
        and record.record_id in tags
        and existing.attendance_codeid == wanted.id
        and existing.comment == comment
    ):
        return Plan(Action.NOTHING, AttendanceState.WRITTEN, code=code, codeid=wanted.id)
    return Plan(
        Action.WRITE,
        AttendanceState.WRITTEN,
        code=code,
        codeid=wanted.id,
        comment=comment,
        replaced=replaced,
    )


def day_read_pays(students: int, rows_last_seen: int | None, page_size: int) -> bool:
    """Is one read of a school's daily rows for a date cheaper, in PowerSchool calls, than
    one read per student for ``students`` students of that school and date? The day read
    takes a call per ``page_size`` rows (one more for an exact multiple: the last page
    must come back short); ``rows_last_seen`` is how many rows the previous read of that
    school's day found (None: no read yet), a hint of how many pages this one needs. A tie
    goes to the per-student reads, the fresher ones."""
    pages = (rows_last_seen or 0) // page_size + 1
    return students > pages


def day_read_answers(read_began: float, student_last_done: float | None) -> bool:
    """May a shared read of a school's day that began at ``read_began`` stand in for a
    student's own read? Not if an attempt for the student ended after it began: that
    attempt's write may have landed after the read saw the student's row."""
    return student_last_done is None or student_last_done < read_began


def lanes(items: Sequence[_T], key: Callable[[_T], Hashable]) -> list[list[_T]]:
    """``items`` split by ``key`` (a student): one lane per key, each lane in the order of
    ``items``, the lanes in the order of their first item. The records of one student run
    in their lane one after another, so each one's read sees what the one before wrote."""
    by_key: dict[Hashable, list[_T]] = {}
    for item in items:
        by_key.setdefault(key(item), []).append(item)
    return list(by_key.values())


_NOTHING_THERE = "nothing of this record was in PowerSchool"


def plan_cancel(
    record: AttendanceRecord,
    *,
    school: School | None,
    timezone: str,
    yearid: int | None,
    codes: Mapping[str, AttendanceCode],
    existing: DailyAttendance | None,
    sibling: AttendanceRecord | None,
) -> Plan:
    """What cancelling ``record`` does: keep the other event's part of a shared row, restore
    the value it replaced, delete the row it created, or nothing if its row is not there.
    ``yearid`` None means PowerSchool has no school year for the date (so no row either)."""
    if yearid is None or existing is None or record.record_id not in record_tags(existing.comment):
        return Plan(None, AttendanceState.CANCELLED, _NOTHING_THERE)
    if sibling is not None:
        own = (
            code_for(school, sibling.event, excused=sibling.excused)
            if school
            else sibling.attendance_code
        )
        kept = codes.get(own)
        if kept is None:
            return Plan(
                None,
                AttendanceState.FAILED,
                f"attendance code {own!r} no longer exists in PowerSchool for school "
                f"{record.school_number}, yearid {yearid}",
            )
        return Plan(
            Action.WRITE,
            AttendanceState.CANCELLED,
            f"kept the other event's {own!r} in PowerSchool",
            code=own,
            codeid=kept.id,
            comment=attendance_comment([sibling], timezone),
            keep_code_for=sibling.record_id,
            # The other event was written over this record's row: what this record replaced
            # is what the other event's cancel must put back now.
            hand_over_to=(
                sibling.record_id
                if RECORD_TAG.format(record.record_id) in sibling.replaced_comment
                else ""
            ),
        )
    if record.replaced_set and record.replaced_attendance_codeid is not None:
        return Plan(
            Action.WRITE,
            AttendanceState.CANCELLED,
            f"restored {record.replaced_att_code!r} in PowerSchool",
            code=record.replaced_att_code,
            codeid=record.replaced_attendance_codeid,
            comment=record.replaced_comment,
        )
    return Plan(Action.DELETE, AttendanceState.CANCELLED, "removed the row from PowerSchool")


def delete_refused(record: AttendanceRecord, why: str) -> str:
    """The FAILED message of a cancel whose delete PowerSchool refused."""
    return (
        f"PowerSchool would not let the service delete the {record.attendance_code!r} it "
        f"wrote for this student on {record.att_date.isoformat()} ({why}); remove it on the "
        "student's attendance page in PowerSchool"
    )


class Verdict(enum.StrEnum):
    """What a failed PowerSchool call means for the attempt."""

    RETRY = "retry"
    """Transient (timeout before the write, 5xx, 429, network): try again later."""
    UNKNOWN = "unknown"
    """The write was sent and no answer came back: it may have committed. Try again; the
    next attempt's read-before-write finds out and does not write twice."""
    GIVE_UP = "give_up"
    """PowerSchool refused (400, 401, 403, 404, an ERROR body): retrying cannot help."""


@dataclass(frozen=True)
class Failure:
    """A failed PowerSchool call, as plain data. ``status`` None: no HTTP answer (network
    error or timeout); ``transient`` is the adapter's judgement of the answer."""

    status: int | None
    transient: bool
    write_sent: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class Classified:
    """A failure's verdict, and what it says about the server for the circuit breaker."""

    verdict: Verdict
    server_down: bool
    """Evidence that the server is down (not merely busy, not refusing this request)."""
    retry_after: float | None = None


def classify(failure: Failure) -> Classified:
    """Sort a failed call: give up, retry after a while, or retry to reconcile."""
    if not failure.transient:
        return Classified(Verdict.GIVE_UP, server_down=False)
    busy = failure.status == 429  # a busy server is not a down one
    verdict = Verdict.UNKNOWN if failure.write_sent and failure.status is None else Verdict.RETRY
    return Classified(verdict, server_down=not busy, retry_after=failure.retry_after)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, in seconds. ``settle``: after a write whose
    answer was lost (``Verdict.UNKNOWN``) wait at least this long (the PowerSchool timeout),
    so a write PowerSchool is still working on has landed before the next attempt reads."""

    base: float = 1.0
    cap: float = 300.0
    settle: float = 0.0

    def ceiling(self, attempts: int) -> float:
        """The longest wait after the ``attempts``-th attempt (1-based)."""
        return min(self.cap, self.base * 2.0 ** max(attempts - 1, 0))

    def delay(
        self,
        attempts: int,
        jitter: float,
        *,
        failure: Classified | None = None,
        breaker_wait: float = 0.0,
    ) -> float:
        """The wait before the next attempt: ``jitter`` (uniform in [0, 1)) of the ceiling,
        but never sooner than the server's Retry-After, the breaker's next probe, or, after
        a lost answer to a write, the settle time."""
        floor = breaker_wait
        if failure is not None:
            floor = max(floor, failure.retry_after or 0.0)
            if failure.verdict is Verdict.UNKNOWN:
                floor = max(floor, self.settle)
        return max(jitter * self.ceiling(attempts), floor, 0.0)


def gives_up(age_seconds: float, max_age_seconds: float) -> bool:
    """A record whose delivery has been failing for longer than ``max_age`` ends FAILED."""
    return age_seconds > max_age_seconds


def give_up_message(attempts: int, age_seconds: float, last_error: str) -> str:
    """The FAILED message of a record that ran out of time."""
    return (
        f"gave up after {attempts} attempts over {age_seconds / 3600:.1f} hours; "
        f"last error: {last_error}"
    )
