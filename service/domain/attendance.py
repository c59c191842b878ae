"""Attendance rules: what a check-in or check-out becomes, and idempotent submission.

A record is in Postgres before PowerSchool is called, whatever PowerSchool then does.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from service.domain.delivery import Deliverer, local_date, local_timezone
from service.domain.districts import DistrictService
from service.domain.students import StudentResolver, school_number_of
from service.errors import AlreadyExists, FailedPrecondition, NotFound
from service.models import (
    AttendanceRecord,
    AttendanceRequest,
    AttendanceState,
    District,
    School,
    StudentKey,
)
from service.store import AttendanceStore


def request_hash(request: AttendanceRequest, key: StudentKey) -> str:
    """A fingerprint of everything the caller asked for, to tell a replay from a reuse."""
    canonical = json.dumps(
        {
            "student": [key.kind.value, key.value],
            "event": request.event.value,
            "occurred_at": request.occurred_at.isoformat(),
            "school_number": request.school_number,
            "reason": request.reason,
            "excused": request.excused,
            "comment": request.comment,
            "checked_out_by": request.checked_out_by,
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _writeback_off(district: District, school: School) -> str:
    if not district.writeback_enabled:
        return "writeback is not enabled for this district"
    if not school.writeback_enabled:
        return f"writeback is not enabled for school {school.school_number}"
    return ""


class AttendanceService:
    """Accepts check-ins and check-outs, stores them, and hands them to delivery."""

    def __init__(
        self,
        districts: DistrictService,
        resolver: StudentResolver,
        records: AttendanceStore,
        deliverer: Deliverer,
    ) -> None:
        self._districts = districts
        self._resolver = resolver
        self._records = records
        self._deliverer = deliverer

    async def submit(
        self, request: AttendanceRequest, key: StudentKey
    ) -> tuple[AttendanceRecord, bool]:
        """Store the record and try to write it; returns ``(record, replayed)``."""
        fingerprint = request_hash(request, key)
        replay = await self._replay(request, fingerprint)
        if replay is not None:
            return replay, True
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
        timezone = local_timezone(district, school)
        record = AttendanceRecord(
            record_id=str(uuid.uuid4()),
            district_id=district.district_id,
            idempotency_key=request.idempotency_key,
            request_hash=fingerprint,
            roster_id=student.roster.roster_id,
            event=request.event,
            occurred_at=request.occurred_at,
            school_number=school.school_number,
            att_date=local_date(request.occurred_at, timezone).date(),
            attendance_code=code,
            state=AttendanceState.SKIPPED if off else AttendanceState.PENDING,
            reason=request.reason,
            excused=request.excused,
            comment=request.comment,
            checked_out_by=request.checked_out_by,
            last_error=off,
        )
        stored = await self._records.insert(record)
        if stored is None:  # a concurrent call with the same key won the insert
            replay = await self._replay(request, fingerprint)
            if replay is None:  # pragma: no cover  (records are never deleted)
                raise NotFound("record vanished")
            return replay, True
        if stored.state is AttendanceState.PENDING:
            stored = await self._deliverer.deliver(stored, district, school, student)
        return stored, False

    async def _replay(
        self, request: AttendanceRequest, fingerprint: str
    ) -> AttendanceRecord | None:
        existing = await self._records.by_key(request.district_id, request.idempotency_key)
        if existing is None:
            return None
        if existing.request_hash != fingerprint:
            raise AlreadyExists(
                "this idempotency key was already used for a different attendance request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return existing

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

    async def get(self, district_id: str, record_id: str) -> AttendanceRecord:
        """One record of a district, or :class:`NotFound`."""
        record = await self._records.get(district_id, record_id)
        if record is None:
            raise NotFound(f"no attendance record {record_id} in district {district_id!r}")
        return record
