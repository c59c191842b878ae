"""Attendance intake: what a check-in or check-out becomes, idempotent submission and
corrections, cancellation, and the operations views (listing, retries, delivery stats).

A record and its delivery job are committed together before the RPC answers; delivery is
the queue's job (a :class:`DeliveryQueue`), so nothing accepted is lost whatever PowerSchool
does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from service.domain.districts import DistrictService
from service.domain.politeness import BreakerState
from service.domain.rules import local_time
from service.domain.students import StudentResolver, school_number_of
from service.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from service.models import (
    AttendanceRecord,
    AttendanceRequest,
    AttendanceState,
    DeliveryStats,
    District,
    KeyKind,
    RecordFilter,
    School,
    Student,
    StudentKey,
)
from service.store import AttendanceStore, Submitted


def request_fields(request: AttendanceRequest, key: StudentKey) -> dict[str, Any]:
    """Everything the caller asked for, as JSON values named after the fields of
    SubmitAttendanceRequest: what a later use of the same idempotency key is compared with."""
    return {
        "student": [key.kind.value, key.value],
        "event": request.event.value,
        "occurred_at": request.occurred_at.isoformat(),
        "school_number": request.school_number,
        "reason": request.reason,
        "excused": request.excused,
        "comment": request.comment,
        "checked_out_by": request.checked_out_by,
    }


def canonical_fields(fields: dict[str, Any]) -> str:
    """A request's fields (see :func:`request_fields`) as the JSON text kept with its key."""
    return json.dumps(fields, sort_keys=True)


def request_hash(canonical: str) -> str:
    """A fingerprint of a request's :func:`canonical_fields`, to tell a replay from a reuse;
    stable, so keys stored before the fields were kept compare too."""
    return hashlib.sha256(canonical.encode()).hexdigest()


class DeliveryQueue(Protocol):
    """What intake needs of delivery: a nudge, a wait for an outcome, the breaker view."""

    def wake(self, district_id: str = "") -> None:
        """Look for due jobs now."""
        ...

    async def wait_for(self, record_id: str, district_id: str, seconds: float) -> None:
        """Return when the record leaves PENDING or ``seconds`` pass."""
        ...

    def breaker(self, base_url: str) -> tuple[BreakerState, float]:
        """A PowerSchool host's breaker state and seconds its calls are held back."""
        ...


def differing_fields(first: dict[str, Any], again: dict[str, Any]) -> list[str]:
    """The names of the request fields whose values differ between two uses of a key."""
    names = first.keys() | again.keys()
    return sorted(name for name in names if first.get(name) != again.get(name))


def _writeback_off(district: District, school: School) -> str:
    if not district.writeback_enabled:
        return "writeback is not enabled for this district"
    if not school.writeback_enabled:
        return f"writeback is not enabled for school {school.school_number}"
    return ""


class AttendanceService:
    """Accepts check-ins and check-outs and answers questions about them."""

    def __init__(
        self,
        districts: DistrictService,
        resolver: StudentResolver,
        records: AttendanceStore,
        queue: DeliveryQueue,
    ) -> None:
        self._districts = districts
        self._resolver = resolver
        self._records = records
        self._queue = queue

    async def submit(
        self, request: AttendanceRequest, key: StudentKey, *, wait: float = 0.0
    ) -> tuple[AttendanceRecord, bool]:
        """Store the record and queue its delivery; returns ``(record, replayed)``.

        A key already used with the same fields answers its stored record, whatever the
        settings, roster or PowerSchool say now; with other fields, :class:`AlreadyExists`
        naming them. With ``wait`` > 0, answer once delivery has an outcome or after ``wait``
        seconds. A second submission for the same student, day and event corrects the first
        record.
        """
        fields = request_fields(request, key)
        canonical = canonical_fields(fields)
        fingerprint = request_hash(canonical)
        # A caller retrying after a timeout must get the answer it missed, whatever changed
        # since. A retry that passes the checks below reaches the key's claim, which answers
        # the stored record; so the key is looked up first only when the checks fail, or when
        # they may call PowerSchool (for a STUDENTS.ID nobody has resolved), which may be down.
        # A new check-in saves that round trip.
        if key.kind is KeyKind.POWERSCHOOL_ID:
            stored = await self._records.replay(request.district_id, request.idempotency_key)
            if stored is not None:
                return await self._replay(stored, fields, fingerprint, wait)
        try:
            district, student, school, code, off = await self._accepting(request, key)
        except DomainError:
            stored = await self._records.replay(request.district_id, request.idempotency_key)
            if stored is None:
                raise
            return await self._replay(stored, fields, fingerprint, wait)
        timezone = school.timezone or district.timezone
        submitted = await self._records.submit(
            AttendanceRecord(
                record_id=str(uuid.uuid4()),
                district_id=district.district_id,
                idempotency_key=request.idempotency_key,
                request_hash=fingerprint,
                roster_id=student.roster.roster_id,
                event=request.event,
                occurred_at=request.occurred_at,
                school_number=school.school_number,
                att_date=local_time(request.occurred_at, timezone).date(),
                attendance_code=code,
                state=AttendanceState.SKIPPED if off else AttendanceState.PENDING,
                reason=request.reason,
                excused=request.excused,
                comment=request.comment,
                checked_out_by=request.checked_out_by,
                last_error=off,
            ),
            canonical,
        )
        if submitted.replayed:
            # A concurrent submission with the same key committed first.
            return await self._replay(submitted, fields, fingerprint, wait)
        record = submitted.record
        if record.state is AttendanceState.PENDING:
            self._queue.wake(record.district_id)
        return await self._maybe_wait(record, wait), False

    async def _accepting(
        self, request: AttendanceRequest, key: StudentKey
    ) -> tuple[District, Student, School, str, str]:
        """The district, student, school and code a new record of ``request`` gets, and why
        it is not written back ("" if it is); a domain error if it cannot be accepted."""
        district = await self._districts.get(request.district_id)
        student = await self._resolver.find(district, key)
        school = self._school(district, request, school_number_of(district, student))
        off = _writeback_off(district, school)
        code = school.code_for(request.event, excused=request.excused)
        if not off and not code:
            raise FailedPrecondition(
                f"school {school.school_number} has no PowerSchool attendance code configured "
                f"for {request.event.value.replace('_', ' ')}",
                reason="ATTENDANCE_CODE_NOT_CONFIGURED",
            )
        if not off and not district.powerschool.configured:
            raise FailedPrecondition(
                f"district {district.district_id!r} has writeback enabled but no PowerSchool "
                "connection configured",
                reason="POWERSCHOOL_NOT_CONFIGURED",
            )
        return district, student, school, code, off

    async def _replay(
        self, stored: Submitted, fields: dict[str, Any], fingerprint: str, wait: float
    ) -> tuple[AttendanceRecord, bool]:
        if stored.key_hash != fingerprint:
            names = [] if stored.key_fields is None else differing_fields(stored.key_fields, fields)
            raise AlreadyExists(
                "this idempotency key was already used for a different attendance request"
                + (f" (different {', '.join(names)})" if names else ""),
                reason="IDEMPOTENCY_KEY_REUSED",
                violations=[
                    FieldViolation(name, "differs from the request first sent with this key")
                    for name in names
                ],
            )
        # As a fresh read gives it (with its delivery history), like the first answer.
        record = await self.get(stored.record.district_id, stored.record.record_id)
        return await self._maybe_wait(record, wait), True

    async def _maybe_wait(self, record: AttendanceRecord, wait: float) -> AttendanceRecord:
        if wait <= 0 or record.state is not AttendanceState.PENDING:
            return record
        await self._queue.wait_for(record.record_id, record.district_id, wait)
        return await self.get(record.district_id, record.record_id)

    async def cancel(
        self, district_id: str, record_id: str, reason: str, *, wait: float = 0.0
    ) -> AttendanceRecord:
        """Withdraw a record; PowerSchool is put back by a cancel job."""
        record = await self.get(district_id, record_id)
        if record.state is AttendanceState.CANCELLED:
            return record
        cancelled = await self._records.cancel(record, reason)
        self._queue.wake()
        return await self._maybe_wait(cancelled, wait)

    async def get(self, district_id: str, record_id: str) -> AttendanceRecord:
        """One record of a district, or :class:`NotFound`."""
        record = await self._records.get(district_id, record_id)
        if record is None:
            raise NotFound(
                f"no attendance record {record_id} in district {district_id!r}",
                reason="RECORD_NOT_FOUND",
            )
        return record

    async def list(
        self, district_id: str, where: RecordFilter, *, page_size: int, page_token: str
    ) -> tuple[list[AttendanceRecord], str]:
        """A page of records, newest first, and the token of the next page ("" at the end)."""
        await self._districts.get(district_id)
        after = _decode_token(page_token)
        records = await self._records.list(district_id, where, limit=page_size + 1, after=after)
        if len(records) <= page_size:
            return records, ""
        last = records[page_size - 1]
        assert last.created_at is not None
        return records[:page_size], _encode_token(last.created_at, last.record_id)

    async def retry(
        self, district_id: str, record_id: str, first: date | None, last: date | None
    ) -> int:
        """Queue one FAILED/PENDING record, or every FAILED record in a date range."""
        await self._districts.get(district_id)
        if record_id:
            record = await self.get(district_id, record_id)
            if await self._records.retry_one(district_id, record_id) is None:
                raise FailedPrecondition(
                    f"record {record_id} is {record.state.value}; only FAILED or PENDING "
                    "records can be retried",
                    reason="RECORD_NOT_RETRYABLE",
                )
            count = 1
        else:
            assert first is not None
            assert last is not None
            count = await self._records.retry_failed(district_id, first, last)
        self._queue.wake()
        return count

    async def stats(self, district_id: str) -> DeliveryStats:
        """Backlog, failures, recent writes and this process's breaker view."""
        district = await self._districts.get(district_id)
        stats = await self._records.stats(district_id)
        state, paused_for = self._queue.breaker(district.powerschool.base_url)
        return replace(
            stats,
            breaker_state=state.value,
            paused_until=datetime.now(UTC) + timedelta(seconds=paused_for) if paused_for else None,
        )

    @staticmethod
    def _school(district: District, request: AttendanceRequest, default: int | None) -> School:
        number = request.school_number or default
        if number is None:
            raise FailedPrecondition(
                "the student's roster school is not mapped to a PowerSchool school number; "
                "add it to the district's schools or pass school_number",
                reason="SCHOOL_NOT_MAPPED",
            )
        school = district.school_by_number(number)
        if school is None:
            raise FailedPrecondition(
                f"school {number} is not configured for district {district.district_id!r}",
                reason="SCHOOL_NOT_CONFIGURED",
            )
        return school


def _encode_token(created_at: datetime, record_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{record_id}".encode()).decode()


def _decode_token(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        created, record_id = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        uuid.UUID(record_id)
        return datetime.fromisoformat(created), record_id
    except ValueError:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token returned by ListAttendance")]
        ) from None
