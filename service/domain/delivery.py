"""One delivery attempt of a stored record to PowerSchool: gather the facts, ask the rules
(``rules.py``) what to do, do it.

Every attempt reads the student's daily row for the date first (the read-before-write),
which makes delivery exactly-once in effect: a row carrying this record's tag means an
earlier attempt already wrote it (its answer was lost, or the process died), so nothing is
written again. Records of one school and date claimed together may share one read of the
school's daily rows instead (:class:`DayRows`), made after they were claimed and used by
nobody else. The school year, the attendance code and STUDENTS.ID are looked up afresh
(from the current settings and caches) on every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from service.domain import rules, rules_meeting
from service.domain._powerschool_calls import client_for
from service.domain._school_years import SchoolYears
from service.domain.rules import Action, Classified, Failure, Plan, Verdict
from service.domain.students import StudentResolver
from service.errors import DomainError, NotFound, Unavailable
from service.models import (
    AttendanceMode,
    AttendanceRecord,
    AttendanceState,
    District,
    JobKind,
    KeyKind,
    MeetingMark,
    Replaced,
    School,
    StudentKey,
)
from service.powerschool import (
    PAGE_SIZE,
    AttendanceCode,
    DailyAttendance,
    MeetingWrite,
    PowerSchoolClient,
    PowerSchoolError,
    PowerSchoolPool,
    PowerSchoolUnavailable,
)

DAY_READ_FRESH = 10.0
"""Seconds a shared read of a school's day may answer for its records: an attempt that
starts later (a slow PowerSchool, a long batch) reads its student's row itself."""


class DayRows:
    """One read of a school's daily rows for a date, made after the records it serves were
    claimed, shared by them alone and never kept. Each student's row is handed out once
    and only while the read is fresh: a second record of the same student (its lane runs
    after the first) reads again, so it sees what the first one wrote."""

    def __init__(
        self,
        rows: dict[int, DailyAttendance],
        *,
        read_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rows = rows
        self._taken: set[int] = set()
        self.read_at = read_at
        """When the read began (the clock's time): a write for a student since then makes
        the read's answer for that student stale."""
        self._until = read_at + DAY_READ_FRESH
        self._clock = clock

    def take(self, students_id: int) -> tuple[bool, DailyAttendance | None]:
        """(True, the student's row or None if there is none) the first time, while fresh;
        (False, None) when this read cannot answer and the student's row must be read."""
        if students_id in self._taken or self._clock() >= self._until:
            return False, None
        self._taken.add(students_id)
        return True, self._rows.get(students_id)


class _UnknownStudent(NotFound):
    """PowerSchool does not know the record's student (by its DCID or STUDENTS.ID)."""


class LeaseLost(Exception):
    """Another attempt owns the job now: this one must neither write nor record anything."""


class Lease(Protocol):
    """The claim an attempt runs under."""

    def held(self) -> bool:
        """Still ours, as far as the last renewal and the clock can tell."""
        ...


class RecordBook(Protocol):
    """What an attempt reads and notes about records besides its own outcome."""

    async def get(self, district_id: str, record_id: str) -> AttendanceRecord | None:
        """One record of a district, if it exists."""
        ...

    async def remember_replaced(self, record_id: str, replaced: Replaced) -> None:
        """Keep the PowerSchool value a write is about to replace (first one wins)."""
        ...

    async def set_code(self, record_id: str, code: str) -> None:
        """Record the ATT_CODE PowerSchool now holds for this record."""
        ...

    async def hand_over_replaced(self, from_record: str, to_record: str) -> None:
        """Give ``to_record`` the PowerSchool value ``from_record`` replaced."""
        ...

    async def remember_meetings(self, record_id: str, marks: list[MeetingMark]) -> None:
        """Keep the meetings a write is about to change with the values they replace."""
        ...

    async def meetings_written(self, record_id: str, marks: list[MeetingMark]) -> None:
        """Record what each of the record's meetings holds now."""
        ...

    async def hand_over_meeting(
        self, from_record: str, to_record: str, ccid: int, period_id: int
    ) -> None:
        """Give ``to_record`` the value ``from_record`` replaced in one shared meeting."""
        ...

    async def set_meeting_code(self, record_id: str, ccid: int, period_id: int, code: str) -> None:
        """Record the ATT_CODE PowerSchool now holds in one of the record's meetings."""
        ...


@dataclass(frozen=True)
class Outcome:
    """The result of an attempt. ``state`` None means "try again later" (``failure`` says
    why and what it says about the server)."""

    state: AttendanceState | None
    message: str = ""
    failure: Classified | None = None
    status: int | None = None
    """HTTP status of PowerSchool's last answer in this attempt (None: it did not answer)."""
    code: str = ""
    yearid: int | None = None
    attendance_id: int | None = None

    @property
    def reached(self) -> bool:
        """PowerSchool answered something: evidence for the circuit breaker."""
        return self.status is not None


class _Facts:
    """What one attempt learned so far; kept so a failure can still report it."""

    def __init__(self, lease: Lease, day: DayRows | None) -> None:
        self.lease = lease
        self.day = day
        self.status: int | None = None
        self.code = ""
        self.yearid: int | None = None
        self.write_sent = False

    def outcome(self, plan: Plan, attendance_id: int | None = None) -> Outcome:
        return Outcome(
            plan.state,
            plan.message,
            status=self.status,
            code=plan.code or self.code,
            yearid=self.yearid,
            attendance_id=attendance_id,
        )


class Deliverer:
    """Carries out write and cancel attempts against PowerSchool."""

    def __init__(
        self, resolver: StudentResolver, powerschool: PowerSchoolPool, records: RecordBook
    ) -> None:
        self._resolver = resolver
        self._powerschool = powerschool
        self._records = records
        self._years = SchoolYears()
        # Rows the last read of each school's day found: how many pages the next one takes.
        self._day_sizes: dict[tuple[str, int], tuple[date, int]] = {}

    @staticmethod
    def calls_powerschool(kind: JobKind, record: AttendanceRecord, district: District) -> bool:
        """Whether an attempt may call PowerSchool. A write the district's settings rule out
        (writeback switched off, the school gone) ends without a call, so it takes none of
        the district's PowerSchool limits: a backlog switched off clears at once, not at the
        district's call rate."""
        if kind is JobKind.CANCEL:
            return True
        school = district.school_by_number(record.school_number)
        return rules.write_blocked(district, school, record.school_number) is None

    def day_read_pays(
        self, district_id: str, school_number: int, att_date: date, students: int
    ) -> bool:
        """Would one read of the school's day cost fewer calls than ``students`` reads?"""
        seen = self._day_sizes.get((district_id, school_number))
        rows = seen[1] if seen is not None and seen[0] == att_date else None
        return rules.day_read_pays(students, rows, PAGE_SIZE)

    async def read_day(
        self,
        district: District,
        school_number: int,
        att_date: date,
        pace: Callable[[], AbstractAsyncContextManager[None]],
    ) -> DayRows | None:
        """Every daily row of the school for ``att_date``, a page per call, each call made
        under ``pace`` (the district's limits). None if PowerSchool does not answer: each
        record then reads its own row and meets the failure in its own attempt."""
        client = client_for(self._powerschool, district)
        rows: dict[int, DailyAttendance] = {}
        after, count, started = 0, 0, time.monotonic()
        try:
            while True:
                async with pace():
                    page, more = await client.school_daily_attendance(
                        school_number, att_date, after_id=after
                    )
                for students_id, row in page:
                    rows.setdefault(students_id, row)  # the per-student read's first row
                    after = max(after, row.id)
                count += len(page)
                if not more or not page:
                    break
        except PowerSchoolError:
            return None
        self._day_sizes[(district.district_id, school_number)] = (att_date, count)
        return DayRows(rows, read_at=started)

    async def attempt(
        self,
        kind: JobKind,
        record: AttendanceRecord,
        district: District,
        lease: Lease,
        day: DayRows | None = None,
    ) -> Outcome:
        """One attempt of a write or cancel job; ``day``, a read of the record's school's
        day shared with the records claimed with it, stands in for the read of the
        student's row if it can. Raises :class:`LeaseLost` before sending a write if
        ``lease`` is no longer held, and :class:`Unavailable` if our own database is away
        (not PowerSchool's fault, not this record's)."""
        facts = _Facts(lease, day)
        try:
            if kind is JobKind.CANCEL:
                return await self._cancel(record, district, facts)
            return await self._write(record, district, lease, facts)
        except PowerSchoolUnavailable as exc:
            return _retry(exc, facts)
        except Unavailable as exc:
            if isinstance(exc.__cause__, PowerSchoolUnavailable):  # during the student lookup
                return _retry(exc.__cause__, facts)
            raise
        except PowerSchoolError as exc:
            verdict = rules.classify(Failure(exc.status, transient=False))
            assert verdict.verdict is Verdict.GIVE_UP
            return Outcome(
                AttendanceState.FAILED,
                str(exc),
                status=exc.status or facts.status,
                code=facts.code,
                yearid=facts.yearid,
            )
        except DomainError as exc:
            return Outcome(
                AttendanceState.FAILED, exc.message, code=facts.code, yearid=facts.yearid
            )

    async def _facts(
        self, record: AttendanceRecord, district: District, wanted: str, facts: _Facts
    ) -> tuple[PowerSchoolClient, int, int | None, dict[str, AttendanceCode]]:
        """PowerSchool client, STUDENTS.ID, yearid (None: no school year) and codes."""
        client = client_for(self._powerschool, district)
        student = await self._resolver.find(
            district, StudentKey(KeyKind.ROSTER_ID, record.roster_id)
        )
        try:
            student = await self._resolver.ensure_powerschool_id(district, student)
        except NotFound as exc:
            raise _UnknownStudent(exc.message) from exc
        if student.powerschool_id is None:  # pragma: no cover  (ensure_powerschool_id raises)
            raise _UnknownStudent("student has no PowerSchool ID")
        yearid = await self._years.yearid(client, record.school_number, record.att_date)
        facts.yearid = yearid
        if yearid is None:
            return client, student.powerschool_id, None, {}
        codes = await self._years.codes(client, record.school_number, yearid, wanted)
        return client, student.powerschool_id, yearid, codes

    async def _row(
        self, client: PowerSchoolClient, record: AttendanceRecord, students_id: int, facts: _Facts
    ) -> tuple[DailyAttendance | None, AttendanceRecord | None]:
        """The student's daily row for the date, and the live record of the day's other
        event whose tag it carries."""
        known, existing = facts.day.take(students_id) if facts.day else (False, None)
        if not known:
            existing = await client.daily_attendance(students_id, record.att_date)
        facts.status = 200
        sibling = None
        for tag in rules.record_tags(existing.comment) if existing else []:
            if tag == record.record_id:
                continue
            other = await self._records.get(record.district_id, tag)
            if other is not None and other.state is not AttendanceState.CANCELLED:
                sibling = other
                break
        return existing, sibling

    async def _send(
        self,
        client: PowerSchoolClient,
        record: AttendanceRecord,
        at: tuple[int, int],
        plan: Plan,
        facts: _Facts,
    ) -> int | None:
        """Send ``plan``'s daily row for the student and year ``at`` (STUDENTS.ID, yearid),
        unless the attempt's lease is gone."""
        if not facts.lease.held():
            raise LeaseLost(record.record_id)
        assert plan.codeid is not None
        facts.write_sent = True
        result = await client.write_daily_attendance(
            students_id=at[0],
            school_number=record.school_number,
            yearid=at[1],
            att_date=record.att_date,
            attendance_codeid=plan.codeid,
            comment=plan.comment,
        )
        facts.status = 200
        return result.attendance_id

    async def _write(
        self, record: AttendanceRecord, district: District, lease: Lease, facts: _Facts
    ) -> Outcome:
        school = district.school_by_number(record.school_number)
        blocked = rules.write_blocked(district, school, record.school_number)
        if blocked is not None:
            return facts.outcome(blocked)
        assert school is not None
        facts.code = rules.code_for(school, record.event, excused=record.excused)
        if school.attendance_mode is AttendanceMode.TIME:
            return facts.outcome(_mode_failed(rules_meeting.mode_problem(school, None, {})))
        client, students_id, yearid, codes = await self._facts(record, district, facts.code, facts)
        if yearid is None:
            return facts.outcome(rules.no_school_year(record))
        counts = await self._years.mode_counts(client, record.school_number, yearid)
        facts.status = 200
        problem = rules_meeting.mode_problem(school, rules_meeting.observed_mode(counts), counts)
        if problem:
            return facts.outcome(_mode_failed(problem))
        if school.attendance_mode is AttendanceMode.MEETING:
            return await self._write_meetings(
                client,
                record,
                school=school,
                district=district,
                at=(students_id, yearid),
                codes=codes,
                facts=facts,
            )
        existing, sibling = await self._row(client, record, students_id, facts)
        plan = rules.plan_write(
            record,
            school=school,
            timezone=school.timezone or district.timezone,
            yearid=yearid,
            codes=codes,
            existing=existing,
            sibling=sibling,
        )
        written = existing.id if existing else None
        if plan.action is Action.WRITE:
            if plan.replaced is not None:
                if not lease.held():
                    raise LeaseLost(record.record_id)
                # Saved before the write is sent, so it survives a lost answer or a crash.
                await self._records.remember_replaced(record.record_id, plan.replaced)
            sent = await self._send(client, record, (students_id, yearid), plan, facts)
            written = sent or written
        return facts.outcome(plan, written)

    async def _sibling(
        self, record: AttendanceRecord, comments: list[str]
    ) -> AttendanceRecord | None:
        """The live record of the day's other event whose tag one of ``comments`` carries."""
        for comment in comments:
            for tag in rules.record_tags(comment):
                if tag == record.record_id:
                    continue
                other = await self._records.get(record.district_id, tag)
                if other is not None and other.state is not AttendanceState.CANCELLED:
                    return other
        return None

    async def _send_meetings(
        self,
        client: PowerSchoolClient,
        record: AttendanceRecord,
        at: tuple[int, int],
        plan: rules_meeting.DayPlan,
        facts: _Facts,
    ) -> int | None:
        """Send every meeting ``plan`` writes in one request, unless the lease is gone."""
        if not facts.lease.held():
            raise LeaseLost(record.record_id)
        facts.write_sent = True
        results = await client.write_meeting_attendance(
            students_id=at[0],
            school_number=record.school_number,
            yearid=at[1],
            att_date=record.att_date,
            marks=[MeetingWrite(p.meeting, p.codeid or 0, p.comment) for p in plan.writes],
        )
        facts.status = 200
        return next((r.attendance_id for r in results if r.attendance_id), None)

    async def _delete_meetings(
        self,
        client: PowerSchoolClient,
        record: AttendanceRecord,
        plan: rules_meeting.DayPlan,
        facts: _Facts,
    ) -> Outcome | None:
        """Delete the service's own marks ``plan`` removes; a FAILED outcome if PowerSchool
        refuses."""
        for p in plan.deletes:
            assert p.delete_dcid is not None
            refused = await self._delete(client, record, p.delete_dcid, facts)
            if refused is not None:
                return refused
        return None

    @staticmethod
    async def _delete(
        client: PowerSchoolClient, record: AttendanceRecord, dcid: int, facts: _Facts
    ) -> Outcome | None:
        """Delete one of the service's own rows, unless the attempt's lease is gone; a
        FAILED outcome if PowerSchool refuses (transient failures are raised)."""
        if not facts.lease.held():
            raise LeaseLost(record.record_id)
        facts.write_sent = True
        try:
            await client.delete_attendance(dcid)
        except PowerSchoolUnavailable:
            raise
        except PowerSchoolError as exc:
            return Outcome(
                AttendanceState.FAILED,
                rules.delete_refused(record, str(exc)),
                status=exc.status or facts.status,
                yearid=facts.yearid,
            )
        return None

    async def _write_meetings(
        self,
        client: PowerSchoolClient,
        record: AttendanceRecord,
        *,
        school: School,
        district: District,
        at: tuple[int, int],
        codes: dict[str, AttendanceCode],
        facts: _Facts,
    ) -> Outcome:
        """Meeting mode: the student's meetings that day and their marks, then every meeting
        to change in one write."""
        meetings = await client.class_meetings(at[0], record.school_number, record.att_date)
        rows = await client.meeting_attendance(at[0], record.att_date)
        facts.status = 200
        sibling = await self._sibling(record, [r.comment for r in rows])
        plan = rules_meeting.plan_meeting_write(
            record,
            school=school,
            timezone=school.timezone or district.timezone,
            yearid=at[1],
            codes=codes,
            meetings=meetings,
            existing={rules_meeting.key_of(r): r for r in rows},
            sibling=sibling,
        )
        written: int | None = None
        if plan.writes or plan.deletes:
            if not facts.lease.held():
                raise LeaseLost(record.record_id)
            # Saved before the write is sent, so they survive a lost answer or a crash.
            await self._records.remember_meetings(
                record.record_id, [p.mark for p in plan.meetings if p.send]
            )
            if plan.writes:
                written = await self._send_meetings(client, record, at, plan, facts)
            refused = await self._delete_meetings(client, record, plan, facts)
            if refused is not None:
                return refused
        if plan.meetings:
            await self._records.meetings_written(record.record_id, [p.mark for p in plan.meetings])
        return Outcome(
            plan.state,
            plan.message,
            status=facts.status,
            code=plan.code,
            yearid=facts.yearid,
            attendance_id=written,
        )

    async def _cancel_meetings(
        self,
        client: PowerSchoolClient,
        record: AttendanceRecord,
        *,
        school: School | None,
        district: District,
        at: tuple[int, int],
        codes: dict[str, AttendanceCode],
        facts: _Facts,
    ) -> Outcome:
        """Meeting mode: put back every meeting the record changed, in one write, and
        delete the marks it created."""
        rows = await client.meeting_attendance(at[0], record.att_date)
        facts.status = 200
        sibling = await self._sibling(record, [r.comment for r in rows])
        plan = rules_meeting.plan_meeting_cancel(
            record,
            school=school,
            timezone=(school.timezone if school else "") or district.timezone,
            codes=codes,
            meetings=[],
            existing={rules_meeting.key_of(r): r for r in rows},
            sibling=sibling,
        )
        if plan.writes:
            await self._send_meetings(client, record, at, plan, facts)
            for p in plan.writes:
                if p.keep_code_for:
                    await self._records.set_meeting_code(
                        p.keep_code_for, p.meeting.ccid, p.meeting.period_id, p.mark.attendance_code
                    )
                if p.hand_over_to:
                    await self._records.hand_over_meeting(
                        record.record_id, p.hand_over_to, p.meeting.ccid, p.meeting.period_id
                    )
        refused = await self._delete_meetings(client, record, plan, facts)
        if refused is not None:
            return refused
        return Outcome(plan.state, plan.message, status=facts.status, yearid=facts.yearid)

    async def _cancel(self, record: AttendanceRecord, district: District, facts: _Facts) -> Outcome:
        school = district.school_by_number(record.school_number)
        try:
            client, students_id, yearid, codes = await self._facts(
                record, district, record.attendance_code, facts
            )
        except _UnknownStudent:
            # PowerSchool does not know the student: nothing of this record can be there.
            return facts.outcome(
                rules.plan_cancel(
                    record,
                    school=school,
                    timezone="",
                    yearid=None,
                    codes={},
                    existing=None,
                    sibling=None,
                )
            )
        meeting = record.meetings or (school and school.attendance_mode is AttendanceMode.MEETING)
        if meeting and yearid is not None:
            return await self._cancel_meetings(
                client,
                record,
                school=school,
                district=district,
                at=(students_id, yearid),
                codes=codes,
                facts=facts,
            )
        existing, sibling = (None, None)
        if yearid is not None:
            existing, sibling = await self._row(client, record, students_id, facts)
        plan = rules.plan_cancel(
            record,
            school=school,
            timezone=(school.timezone if school else "") or district.timezone,
            yearid=yearid,
            codes=codes,
            existing=existing,
            sibling=sibling,
        )
        if plan.action is Action.WRITE:
            assert yearid is not None
            await self._send(client, record, (students_id, yearid), plan, facts)
            if plan.keep_code_for:
                await self._records.set_code(plan.keep_code_for, plan.code)
            if plan.hand_over_to:
                await self._records.hand_over_replaced(record.record_id, plan.hand_over_to)
        elif plan.action is Action.DELETE:
            assert existing is not None
            refused = await self._delete(client, record, existing.dcid, facts)
            if refused is not None:
                return refused
        return facts.outcome(plan)


def _mode_failed(problem: str) -> Plan:
    return Plan(None, AttendanceState.FAILED, problem)


def _retry(exc: PowerSchoolUnavailable, facts: _Facts) -> Outcome:
    verdict = rules.classify(
        Failure(
            exc.status, transient=True, write_sent=facts.write_sent, retry_after=exc.retry_after
        )
    )
    message = str(exc)
    if verdict.verdict is Verdict.UNKNOWN:
        message += " (the write may have reached PowerSchool; the next attempt checks first)"
    return Outcome(
        None, message, failure=verdict, status=exc.status, code=facts.code, yearid=facts.yearid
    )
