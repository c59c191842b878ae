"""Delivery of one stored attendance record to PowerSchool, and the record's outcome.

Every path ends with the outcome saved on the record: WRITTEN with PowerSchool's id,
PENDING with the transient error (to be tried again), or FAILED with an error an admin
can act on.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from service.domain._powerschool_calls import client_for
from service.domain._school_years import SchoolYears
from service.domain.students import StudentResolver
from service.errors import DomainError, Unavailable
from service.models import (
    AttendanceEvent,
    AttendanceRecord,
    AttendanceState,
    District,
    School,
    Student,
)
from service.powerschool import PowerSchoolError, PowerSchoolPool, PowerSchoolUnavailable
from service.store import AttendanceStore

log = structlog.get_logger("delivery")

_EVENT_LABEL = {
    AttendanceEvent.LATE_CHECK_IN: "Late check-in",
    AttendanceEvent.EARLY_CHECK_OUT: "Early check-out",
}
_COMMENT_MAX = 1000
# The tag lets the service recognise its own rows in PowerSchool when reconciling.
RECORD_TAG = "[writeback:{}]"


class _Permanent(Exception):
    """PowerSchool's data makes this record impossible to write as configured."""


def attendance_comment(record: AttendanceRecord, timezone: str) -> str:
    """The ATT_COMMENT written to PowerSchool: event, local time, reason, notes, record tag."""
    local = record.occurred_at.astimezone(ZoneInfo(timezone))
    parts = [f"{_EVENT_LABEL[record.event]} {local:%H:%M}"]
    if record.reason:
        parts.append(f"Reason: {record.reason}")
    if record.excused:
        parts.append("Excused")
    if record.checked_out_by:
        parts.append(f"Checked out by: {record.checked_out_by}")
    if record.comment:
        parts.append(record.comment)
    tag = RECORD_TAG.format(record.record_id)
    text = ". ".join(parts)
    return f"{text[: _COMMENT_MAX - len(tag) - 1]} {tag}"


def local_timezone(district: District, school: School) -> str:
    """The school's time zone, else the district's."""
    return school.timezone or district.timezone


def local_date(occurred_at: datetime, timezone: str) -> datetime:
    """``occurred_at`` in the school's time zone (its date is the attendance date)."""
    return occurred_at.astimezone(ZoneInfo(timezone))


class Deliverer:
    """Writes a stored record to PowerSchool and saves the outcome on the record."""

    def __init__(
        self,
        records: AttendanceStore,
        resolver: StudentResolver,
        powerschool: PowerSchoolPool,
    ) -> None:
        self._records = records
        self._resolver = resolver
        self._powerschool = powerschool
        self._years = SchoolYears()

    async def deliver(
        self, record: AttendanceRecord, district: District, school: School, student: Student
    ) -> AttendanceRecord:
        """One delivery attempt; returns the record with its new state."""
        try:
            attendance_id = await self._write(record, district, school, student)
        except (Unavailable, PowerSchoolUnavailable) as exc:
            return await self._outcome(record, AttendanceState.PENDING, error=str(exc))
        except (DomainError, PowerSchoolError, _Permanent) as exc:
            return await self._outcome(record, AttendanceState.FAILED, error=str(exc))
        return await self._outcome(
            record, AttendanceState.WRITTEN, powerschool_attendance_id=attendance_id
        )

    async def _write(
        self, record: AttendanceRecord, district: District, school: School, student: Student
    ) -> int | None:
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
        code_id = await self._years.code_id(
            client, record.school_number, yearid, record.attendance_code
        )
        if code_id is None:
            raise _Permanent(
                f"attendance code {record.attendance_code!r} does not exist in PowerSchool for "
                f"school {record.school_number}, yearid {yearid}; create it or fix the "
                "school's code setting"
            )
        result = await client.write_daily_attendance(
            students_id=student.powerschool_id,
            school_number=record.school_number,
            yearid=yearid,
            att_date=record.att_date,
            attendance_codeid=code_id,
            comment=attendance_comment(record, local_timezone(district, school)),
        )
        return result.attendance_id

    async def _outcome(
        self,
        record: AttendanceRecord,
        state: AttendanceState,
        *,
        powerschool_attendance_id: int | None = None,
        error: str = "",
    ) -> AttendanceRecord:
        saved = await self._records.record_outcome(
            record.record_id,
            state,
            powerschool_attendance_id=powerschool_attendance_id,
            last_error=error,
        )
        log.info(
            "attendance_delivery",
            record_id=record.record_id,
            state=state.value,
            attempts=saved.attempts,
            error=error or None,
        )
        return saved
