"""Attendance records and their delivery state."""

from __future__ import annotations

import uuid

import asyncpg

from service.models import AttendanceEvent, AttendanceRecord, AttendanceState
from service.store._queries import load

_Q = load("attendance")


def _record(row: asyncpg.Record) -> AttendanceRecord:
    return AttendanceRecord(
        record_id=str(row["record_id"]),
        district_id=row["district_id"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        roster_id=row["roster_id"],
        event=AttendanceEvent(row["event"]),
        occurred_at=row["occurred_at"],
        school_number=row["school_number"],
        att_date=row["att_date"],
        attendance_code=row["attendance_code"],
        state=AttendanceState(row["state"]),
        reason=row["reason"],
        excused=row["excused"],
        comment=row["comment"],
        checked_out_by=row["checked_out_by"],
        powerschool_attendance_id=row["powerschool_attendance_id"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class AttendanceStore:
    """Stores records before anything is sent, and their outcomes after."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, record: AttendanceRecord) -> AttendanceRecord | None:
        """Store a new record; None when its idempotency key is already taken."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _Q["insert_record"],
                uuid.UUID(record.record_id),
                record.district_id,
                record.idempotency_key,
                record.request_hash,
                record.roster_id,
                record.event.value,
                record.occurred_at,
                record.school_number,
                record.att_date,
                record.attendance_code,
                record.reason,
                record.excused,
                record.comment,
                record.checked_out_by,
                record.state.value,
                record.last_error,
            )
        return None if row is None else _record(row)

    async def by_key(self, district_id: str, idempotency_key: str) -> AttendanceRecord | None:
        """The record stored under an idempotency key, if any."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_Q["get_by_key"], district_id, idempotency_key)
        return None if row is None else _record(row)

    async def get(self, district_id: str, record_id: str) -> AttendanceRecord | None:
        """One record of a district, if it exists."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_Q["get_record"], district_id, uuid.UUID(record_id))
        return None if row is None else _record(row)

    async def record_outcome(
        self,
        record_id: str,
        state: AttendanceState,
        *,
        powerschool_attendance_id: int | None = None,
        last_error: str = "",
        attempted: bool = True,
    ) -> AttendanceRecord:
        """Save the result of a delivery attempt and return the updated record."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _Q["record_outcome"],
                uuid.UUID(record_id),
                state.value,
                powerschool_attendance_id,
                last_error,
                1 if attempted else 0,
            )
        if row is None:  # pragma: no cover  (records are never deleted)
            raise LookupError(record_id)
        return _record(row)
