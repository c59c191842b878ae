"""One delivery attempt of a stored record to PowerSchool: the attendance rules.

Every attempt reads the student's daily row for the date first (the read-before-write),
which makes delivery exactly-once in effect: a row carrying this record's tag means an
earlier attempt already wrote it (its answer was lost, or the process died), so nothing is
written again. The same read decides what to do with a row someone else wrote:

- nothing there: write the record's code;
- a teacher's absence: replace it with the record's code, keeping the old value;
- the service's row for the other event that day (late check-in and early check-out): the
  school's combined code if it has one, otherwise the later event's code, noting both;
- anything else (a teacher's tardy, a present mark...): leave it, record SKIPPED.

Cancelling puts back the value the record replaced, or deletes the row it created.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from service.domain._powerschool_calls import client_for
from service.domain._school_years import SchoolYears
from service.domain.students import StudentResolver
from service.errors import DomainError, NotFound, Unavailable
from service.models import (
    AttendanceEvent,
    AttendanceRecord,
    AttendanceState,
    District,
    School,
    Student,
)
from service.powerschool import (
    AttendanceCode,
    DailyAttendance,
    PowerSchoolClient,
    PowerSchoolError,
    PowerSchoolPool,
    PowerSchoolUnavailable,
)
from service.store import AttendanceStore, Replaced

_EVENT_LABEL = {
    AttendanceEvent.LATE_CHECK_IN: "Late check-in",
    AttendanceEvent.EARLY_CHECK_OUT: "Early check-out",
}
_COMMENT_MAX = 1000
# The tag lets the service recognise its own rows in PowerSchool when reconciling.
RECORD_TAG = "[writeback:{}]"
_TAG = re.compile(r"\[writeback:([0-9a-f-]{36})\]")


def local_timezone(district: District, school: School) -> str:
    """The school's time zone, else the district's."""
    return school.timezone or district.timezone


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


def attendance_comment(records: list[AttendanceRecord], timezone: str) -> str:
    """The ATT_COMMENT: each event's local time, reason and notes, then the record tags."""
    tags = " ".join(RECORD_TAG.format(r.record_id) for r in records)
    text = " | ".join(_describe(r, timezone) for r in records)
    return f"{text[: _COMMENT_MAX - len(tags) - 1]} {tags}"


@dataclass(frozen=True)
class Outcome:
    """The result of an attempt. ``state`` None means "try again later"."""

    state: AttendanceState | None
    error: str = ""
    retry_after: float | None = None
    server_down: bool = False
    reached: bool = False
    """PowerSchool answered (whatever it said): evidence for the circuit breaker."""
    attendance_id: int | None = None
    code: str | None = None
    status: int | None = None
    """HTTP status of the PowerSchool answer that failed the attempt, if one did."""


class _Permanent(Exception):
    """PowerSchool's data makes this record impossible to write as configured."""


class Deliverer:
    """Carries out write and cancel attempts against PowerSchool."""

    def __init__(
        self, resolver: StudentResolver, powerschool: PowerSchoolPool, records: AttendanceStore
    ) -> None:
        self._resolver = resolver
        self._powerschool = powerschool
        self._records = records
        self._years = SchoolYears()

    async def write(
        self,
        record: AttendanceRecord,
        district: District,
        school: School,
        student: Student,
        remember: Callable[[Replaced], Awaitable[None]],
    ) -> Outcome:
        """One write attempt. ``remember`` saves the value about to be replaced before the
        write is sent, so it survives a lost answer or a crash."""
        return await self._attempt(self._write(record, district, school, student, remember))

    async def cancel(
        self, record: AttendanceRecord, district: District, school: School | None, student: Student
    ) -> Outcome:
        """One cancel attempt."""
        return await self._attempt(self._cancel(record, district, school, student))

    async def _attempt(self, work: Awaitable[Outcome]) -> Outcome:
        try:
            return await work
        except PowerSchoolUnavailable as exc:
            return _transient(exc)
        except Unavailable as exc:
            if isinstance(exc.__cause__, PowerSchoolUnavailable):  # during the student lookup
                return _transient(exc.__cause__)
            raise  # our own database: not PowerSchool's fault, not this record's
        except PowerSchoolError as exc:
            return Outcome(AttendanceState.FAILED, str(exc), reached=True, status=exc.status)
        except (DomainError, _Permanent) as exc:
            return Outcome(AttendanceState.FAILED, getattr(exc, "message", None) or str(exc))

    async def _context(
        self, record: AttendanceRecord, district: District, student: Student
    ) -> tuple[PowerSchoolClient, int, int, dict[str, AttendanceCode]]:
        client = client_for(self._powerschool, district)
        student = await self._resolver.ensure_powerschool_id(district, student)
        if student.powerschool_id is None:  # pragma: no cover  (ensure_powerschool_id raises)
            raise _Permanent("student has no PowerSchool ID")
        yearid = await self._years.yearid(client, record.school_number, record.att_date)
        if yearid is None:
            raise _Permanent(
                f"PowerSchool has no school year (TERMS with isyearrec=1) for school "
                f"{record.school_number} that contains {record.att_date.isoformat()}"
            )
        codes = await self._years.codes(
            client, record.school_number, yearid, record.attendance_code
        )
        return client, student.powerschool_id, yearid, codes

    async def _write(
        self,
        record: AttendanceRecord,
        district: District,
        school: School,
        student: Student,
        remember: Callable[[Replaced], Awaitable[None]],
    ) -> Outcome:
        client, students_id, yearid, codes = await self._context(record, district, student)
        timezone = local_timezone(district, school)
        existing = await client.daily_attendance(students_id, record.att_date)
        tags = _TAG.findall(existing.comment) if existing else []
        sibling = await self._sibling(record, tags)
        by_id = {c.id: c for c in codes.values()}
        held = by_id.get(existing.attendance_codeid or -1) if existing else None

        code, notes, replaced = record.attendance_code, [record], None
        ours = record.record_id in tags or sibling is not None
        if existing is not None and not ours:
            # Someone else's row: only an absence may be overwritten.
            if not _is_absence(held, school):
                shown = repr(held.att_code) if held else f"code id {existing.attendance_codeid}"
                return Outcome(
                    AttendanceState.SKIPPED,
                    f"PowerSchool already has {shown} for this student on "
                    f"{record.att_date.isoformat()}, entered outside the writeback service; "
                    "left unchanged",
                    reached=True,
                )
            replaced = Replaced(
                existing.attendance_codeid, held.att_code if held else "", existing.comment
            )
        elif existing is not None and sibling is not None and sibling.event is not record.event:
            code, notes = _combine(record, sibling, school)
            replaced = Replaced(
                existing.attendance_codeid, sibling.attendance_code, existing.comment
            )
        comment = attendance_comment(sorted(notes, key=lambda r: r.occurred_at), timezone)
        wanted = codes.get(code)
        if wanted is None:
            raise _Permanent(
                f"attendance code {code!r} does not exist in PowerSchool for school "
                f"{record.school_number}, yearid {yearid}; create it or fix the school's "
                "code setting"
            )
        if existing is not None and record.record_id in tags and _same(existing, wanted, comment):
            # An earlier attempt wrote exactly this; its answer never reached us.
            return Outcome(AttendanceState.WRITTEN, attendance_id=existing.id, code=code)
        if replaced is not None and record.record_id not in tags:
            await remember(replaced)
        result = await client.write_daily_attendance(
            students_id=students_id,
            school_number=record.school_number,
            yearid=yearid,
            att_date=record.att_date,
            attendance_codeid=wanted.id,
            comment=comment,
        )
        return Outcome(
            AttendanceState.WRITTEN,
            attendance_id=result.attendance_id or (existing.id if existing else None),
            code=code,
        )

    async def _sibling(self, record: AttendanceRecord, tags: list[str]) -> AttendanceRecord | None:
        """The service's live record for the other event that PowerSchool's row carries."""
        for tag in tags:
            if tag == record.record_id:
                continue
            other = await self._records.get(record.district_id, tag)
            if other is not None and other.state is not AttendanceState.CANCELLED:
                return other
        return None

    async def _cancel(
        self, record: AttendanceRecord, district: District, school: School | None, student: Student
    ) -> Outcome:
        try:
            client, students_id, yearid, codes = await self._context(record, district, student)
        except (NotFound, _Permanent):
            # PowerSchool does not know the student, or has no school year for the date:
            # nothing of this record can be there.
            return Outcome(AttendanceState.CANCELLED, "nothing of this record was in PowerSchool")
        existing = await client.daily_attendance(students_id, record.att_date)
        tags = _TAG.findall(existing.comment) if existing else []
        if existing is None or record.record_id not in tags:
            return Outcome(AttendanceState.CANCELLED, "nothing of this record was in PowerSchool")
        sibling = await self._sibling(record, tags)
        if sibling is not None:
            # The row also carries the day's other event: keep that one, alone, with its own
            # code (its record may say the combined code it was written with).
            own = (
                school.code_for(sibling.event, excused=sibling.excused)
                if school
                else sibling.attendance_code
            )
            kept = codes.get(own)
            if kept is None:
                raise _Permanent(
                    f"attendance code {own!r} no longer exists in "
                    f"PowerSchool for school {record.school_number}, yearid {yearid}"
                )
            timezone = local_timezone(district, school) if school else district.timezone
            await client.write_daily_attendance(
                students_id=students_id,
                school_number=record.school_number,
                yearid=yearid,
                att_date=record.att_date,
                attendance_codeid=kept.id,
                comment=attendance_comment([sibling], timezone),
            )
            await self._records.set_code(sibling.record_id, own)
            if RECORD_TAG.format(record.record_id) in sibling.replaced_comment:
                # The other event was written over this record's row: what this record
                # replaced is what the other event's cancel must put back now.
                await self._records.hand_over_replaced(record.record_id, sibling.record_id)
            return Outcome(
                AttendanceState.CANCELLED, f"kept the other event's {own!r} in PowerSchool"
            )
        if record.replaced_set and record.replaced_attendance_codeid is not None:
            await client.write_daily_attendance(
                students_id=students_id,
                school_number=record.school_number,
                yearid=yearid,
                att_date=record.att_date,
                attendance_codeid=record.replaced_attendance_codeid,
                comment=record.replaced_comment,
            )
            return Outcome(
                AttendanceState.CANCELLED,
                f"restored {record.replaced_att_code!r} in PowerSchool",
            )
        try:
            await client.delete_attendance(existing.dcid)
        except PowerSchoolUnavailable:
            raise
        except PowerSchoolError as exc:
            return Outcome(
                AttendanceState.FAILED,
                f"PowerSchool would not let the service delete the {record.attendance_code!r} "
                f"it wrote for this student on {record.att_date.isoformat()} ({exc}); remove "
                "it on the student's attendance page in PowerSchool",
                reached=True,
                status=exc.status,
            )
        return Outcome(AttendanceState.CANCELLED, "removed the row from PowerSchool")


def _transient(exc: PowerSchoolUnavailable) -> Outcome:
    """Try again later; a 429 is a busy server, not a down one."""
    return Outcome(
        None,
        str(exc),
        retry_after=exc.retry_after,
        server_down=exc.status != 429,
        status=exc.status,
    )


def _is_absence(code: AttendanceCode | None, school: School) -> bool:
    if code is None:
        return False
    if school.absence_codes:
        return code.att_code in school.absence_codes
    return code.presence_status.lower() == "absent" and code.att_code not in school.own_codes()


def _combine(
    record: AttendanceRecord, sibling: AttendanceRecord, school: School
) -> tuple[str, list[AttendanceRecord]]:
    """Late check-in and early check-out on one day: the combined code, else the later's."""
    if school.late_and_early_code:
        return school.late_and_early_code, [record, sibling]
    later = max(record, sibling, key=lambda r: r.occurred_at)
    return later.attendance_code, [record, sibling]


def _same(existing: DailyAttendance, code: AttendanceCode, comment: str) -> bool:
    return existing.attendance_codeid == code.id and existing.comment == comment
