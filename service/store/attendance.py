"""Attendance records, their idempotency keys, and the durable delivery queue.

A record and its delivery job are written in one transaction. Workers claim due jobs with
``FOR UPDATE SKIP LOCKED`` under a lease that is committed before PowerSchool is called, and
renewed while the attempt runs. Every claim gets a fencing token and every outcome needs it,
so an attempt whose lease was taken back, or whose job was reset by a correction or a cancel
(even by the same process), cannot overwrite newer state; a reset job also waits for the old
attempt's lease to end before it runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from service.errors import NotFound
from service.models import (
    AttemptOutcome,
    AttendanceEvent,
    AttendanceRecord,
    AttendanceState,
    DeliveryAttempt,
    DeliveryJob,
    DeliveryStats,
    JobKind,
    MeetingMark,
    RecordFilter,
    Replaced,
)
from service.request_context import current_request_id
from service.store import notifications
from service.store._database import connection
from service.store._group_commit import GroupCommit
from service.store._queries import load
from service.tracing import current_traceparent

_Q = load("attendance")
CHANNEL = "writeback_jobs"
# What a cancel that never needed PowerSchool did.
_WITHDRAWN_UNSENT = "withdrawn before it was sent to PowerSchool"
_WITHDRAWN_SKIPPED = "withdrawn; it had been skipped, so PowerSchool was never changed"


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
        replaced_attendance_codeid=row["replaced_attendance_codeid"],
        replaced_att_code=row["replaced_att_code"],
        replaced_comment=row["replaced_comment"],
        replaced_set=row["replaced_set"],
        cancel_reason=row["cancel_reason"],
        cancel_requested=row["cancel_requested"],
        next_attempt_at=row["next_attempt_at"],
        cancel_outcome=row["cancel_outcome"],
        history=tuple(_attempt(a) for a in row.get("history", ())),
        meetings=tuple(_meeting(m) for m in row.get("meetings", ())),
    )


def _meeting(row: asyncpg.Record) -> MeetingMark:
    return MeetingMark(
        ccid=row["ccid"],
        period_id=row["period_id"],
        period=row["period"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        attendance_code=row["attendance_code"],
        left_unchanged=row["left_unchanged"],
        replaced=Replaced(
            row["replaced_attendance_codeid"], row["replaced_att_code"], row["replaced_comment"]
        )
        if row["replaced_set"]
        else None,
    )


def _schedule(marks: Sequence[MeetingMark]) -> tuple[list[object], ...]:
    """The meetings' key and schedule columns, as the arrays the meeting statements take."""
    return (
        [m.ccid for m in marks],
        [m.period_id for m in marks],
        [m.period for m in marks],
        [m.start_time for m in marks],
        [m.end_time for m in marks],
    )


def _attempt(row: asyncpg.Record) -> DeliveryAttempt:
    return DeliveryAttempt(
        at=row["at"],
        kind=JobKind(row["kind"]),
        outcome=AttemptOutcome(row["outcome"]),
        powerschool_status=row["powerschool_status"],
        attendance_code=row["attendance_code"],
        yearid=row["yearid"],
        error=row["error"],
    )


def _must(row: asyncpg.Record | None) -> asyncpg.Record:
    """A row a statement always returns inside its transaction."""
    if row is None:  # pragma: no cover
        raise LookupError("expected a row")
    return row


def _attempt_args(attempt: DeliveryAttempt) -> tuple[object, ...]:
    """An attempt's columns in the order the logging statements take them (its error is
    passed separately: a successful cancel's text is not an error)."""
    return (
        attempt.at,
        attempt.kind.value,
        attempt.outcome.value,
        attempt.powerschool_status,
        attempt.attendance_code,
        attempt.yearid,
    )


def _job(row: asyncpg.Record) -> DeliveryJob:
    return DeliveryJob(
        record_id=str(row["record_id"]),
        district_id=row["district_id"],
        kind=JobKind(row["kind"]),
        attempts=row["attempts"],
        first_attempt_at=row["first_attempt_at"],
        created_at=row["created_at"],
        lease_token=str(row["lease_token"]),
        request_id=row["request_id"],
        traceparent=row["traceparent"],
    )


@dataclass(frozen=True)
class Submitted:
    """What a submission did: a new record, a correction of one, or a replay of a key.

    On a replay, ``key_hash`` and ``key_fields`` describe the request the key was first used
    for; ``key_fields`` is None for keys stored before the fields were kept.
    """

    record: AttendanceRecord
    replayed: bool = False
    key_hash: str = ""
    # Front-office text may name people: kept out of reprs.
    key_fields: dict[str, Any] | None = field(default=None, repr=False)


def _batch_columns(batch: list[_Submission]) -> tuple[list[Any], ...]:
    """The columns submit_batch takes, one array each."""
    rs = [s.record for s in batch]
    return (
        [uuid.UUID(r.record_id) for r in rs],
        [r.district_id for r in rs],
        [r.idempotency_key for r in rs],
        [r.request_hash for r in rs],
        [r.roster_id for r in rs],
        [r.event.value for r in rs],
        [r.occurred_at for r in rs],
        [r.school_number for r in rs],
        [r.att_date for r in rs],
        [r.attendance_code for r in rs],
        [r.reason for r in rs],
        [r.excused for r in rs],
        [r.comment for r in rs],
        [r.checked_out_by for r in rs],
        [r.state.value for r in rs],
        [r.last_error for r in rs],
        [s.request_id for s in batch],
        [s.traceparent for s in batch],
        [s.fields_json for s in batch],
    )


def _outcome_of(
    item: _Submission,
    first: dict[tuple[str, str], _Submission],
    outcome: dict[str, Submitted],
) -> Submitted:
    """What ``item`` gets once its batch is stored: its own record, the stored record its
    key stands for, or (a later use of a key in the same batch) a replay of the first use."""
    record = item.record
    original = first[(record.district_id, record.idempotency_key)]
    got = outcome[original.record.record_id]
    if original is item or got.replayed:
        return got
    return Submitted(
        got.record,
        replayed=True,
        key_hash=original.record.request_hash,
        key_fields=json.loads(original.fields_json),
    )


def _replayed(row: asyncpg.Record, record: asyncpg.Record) -> Submitted:
    fields = row["key_fields"]
    return Submitted(
        _record(record),
        replayed=True,
        key_hash=row["key_hash"],
        key_fields=None if fields is None else json.loads(fields),
    )


@dataclass(frozen=True)
class _Submission:
    """One submission waiting for its batch, with the request context of its caller (the
    batch runs in a task of its own)."""

    record: AttendanceRecord
    fields_json: str = field(repr=False)
    request_id: str | None
    traceparent: str | None


class AttendanceStore:
    """Stores records, keys and jobs; hands jobs to workers. A job queued or re-queued while
    a request is handled keeps that request's id (:mod:`service.request_context`) and trace
    context (:mod:`service.tracing`).

    Concurrent submissions share a transaction (group commit): one that finds no batch being
    written goes at once (with those of the same event-loop turn); while one is, each waits up
    to ``batch_wait`` seconds, or until ``batch_rows`` are queued. Each is answered after the
    commit. ``on_batch`` is told each batch's size.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        batch_rows: int = 100,
        batch_wait: float = 0.001,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn  # for the LISTEN connection, which is not the pool's to recycle
        self._batches = GroupCommit(
            self._submit_batch, max_rows=batch_rows, wait=batch_wait, on_batch=on_batch
        )

    async def replay(self, district_id: str, idempotency_key: str) -> Submitted | None:
        """The stored answer for a key already used (``replayed=True``), or None."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["get_by_key"], district_id, idempotency_key)
        return None if row is None else _replayed(row, row)

    async def submit(self, record: AttendanceRecord, request_fields_json: str) -> Submitted:
        """Durably, before returning: claim the idempotency key (kept with
        ``request_fields_json``, a JSON object); then correct the live record of the same
        student, day and event, or insert this one; and queue its delivery. A key already
        taken (also by a submission committed in the same batch) is a replay of its stored
        record. A submission is committed whole or not at all."""
        return await self._batches.submit(
            _Submission(
                record,
                request_fields_json,
                current_request_id(),
                current_traceparent(),
            )
        )

    async def _submit_batch(self, batch: list[_Submission]) -> Sequence[Submitted | Exception]:
        try:
            return await self._store_batch(batch)
        except asyncpg.PostgresError:
            # Something one row did (say, its district deleted meanwhile) must not fail the
            # others: each is tried again on its own.
            return [await self._submit_alone(s) for s in batch]

    async def _submit_alone(self, item: _Submission) -> Submitted | Exception:
        try:
            return (await self._store_batch([item]))[0]
        except asyncpg.ForeignKeyViolationError:
            return NotFound(
                f"district {item.record.district_id!r} does not exist",
                reason="DISTRICT_NOT_FOUND",
            )
        except Exception as exc:
            return exc

    async def _store_batch(self, batch: list[_Submission]) -> list[Submitted]:
        # The first use of a key in the batch is its original; later ones replay it.
        first: dict[tuple[str, str], _Submission] = {}
        for item in batch:
            first.setdefault((item.record.district_id, item.record.idempotency_key), item)
        # One statement, its own transaction: the keys, records, jobs and NOTIFYs of the
        # batch are committed together or not at all.
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["submit_batch"], *_batch_columns(list(first.values())))
        outcome = {
            str(row["submission"]): _replayed(row, row["stored"])
            if row["replayed"]
            else Submitted(_record(row["stored"]))
            for row in rows
        }
        return [_outcome_of(s, first, outcome) for s in batch]

    async def get(self, district_id: str, record_id: str) -> AttendanceRecord | None:
        """One record of a district, with its attempt history, if it exists."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["get_record"], district_id, uuid.UUID(record_id))
        return None if row is None else _record(row)

    async def cancel(self, record: AttendanceRecord, reason: str) -> AttendanceRecord:
        """Withdraw a record: at once if PowerSchool was never touched, else by queuing a
        cancel job that puts PowerSchool back."""
        rid = uuid.UUID(record.record_id)
        async with connection(self._pool) as conn, conn.transaction():
            job = await conn.fetchrow(_Q["get_job"], rid)
            untouched = record.attempts == 0 and (
                job is None or (job["attempts"] == 0 and job["lease_token"] is None)
            )
            if untouched or record.state is AttendanceState.SKIPPED:
                await conn.execute(_Q["delete_job"], rid)
                done = _WITHDRAWN_UNSENT if untouched else _WITHDRAWN_SKIPPED
                row = await conn.fetchrow(_Q["cancel_at_once"], rid, reason, done)
            else:
                row = await conn.fetchrow(_Q["request_cancel"], rid, reason)
                await conn.execute(
                    _Q["upsert_job"],
                    rid,
                    record.district_id,
                    JobKind.CANCEL.value,
                    current_request_id(),
                    current_traceparent(),
                )
                await conn.execute(_Q["notify"], record.district_id)
        return _record(_must(row))

    async def claim(
        self,
        owner: str,
        limit: int,
        *,
        lease: float,
        exclude: list[str],
        only: str | None = None,
    ) -> list[DeliveryJob]:
        """Lease up to ``limit`` due jobs (committed before returning)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["claim_jobs"], owner, lease, exclude, only, limit)
        return [_job(r) for r in rows]

    async def claim_batch(
        self, owner: str, limit: int, *, lease: float, exclude: list[str]
    ) -> list[DeliveryJob]:
        """Lease the oldest due job and up to ``limit - 1`` more of the same district,
        school and date, oldest first (committed before returning; empty if none is due)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["claim_batch"], owner, lease, exclude, limit)
        return [_job(r) for r in rows]

    async def finish(
        self,
        job: DeliveryJob,
        state: AttendanceState,
        *,
        attempt: DeliveryAttempt,
        powerschool_attendance_id: int | None = None,
        code: str | None = None,
    ) -> AttendanceRecord | None:
        """Record a final outcome, add ``attempt`` to the history and drop the job, all only
        under the job's lease; None (and nothing recorded) if the lease was lost.
        ``attempt.error`` becomes ``last_error``, except for a cancel that ends CANCELLED:
        that text says what the cancel did, and becomes ``cancel_outcome`` instead."""
        cancelled = job.kind is JobKind.CANCEL and state is AttendanceState.CANCELLED
        error = "" if cancelled else attempt.error
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(
                _Q["finish_job"],
                uuid.UUID(job.record_id),
                uuid.UUID(job.lease_token),
                state.value,
                powerschool_attendance_id,
                error,
                code,
                attempt.error if cancelled else None,
                *_attempt_args(attempt),
            )
        return None if row is None else _record(row)

    async def remember_replaced(self, record_id: str, replaced: Replaced) -> None:
        """Keep the PowerSchool value a write is about to replace (first one wins)."""
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["remember_replaced"],
                uuid.UUID(record_id),
                replaced.attendance_codeid,
                replaced.att_code,
                replaced.comment,
            )

    async def remember_meetings(self, record_id: str, marks: Sequence[MeetingMark]) -> None:
        """Keep the meetings a Meeting-mode write is about to change, each with the value it
        replaces (the first value seen for a meeting is the one kept)."""
        replaced = [m.replaced for m in marks]
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["remember_meetings"],
                uuid.UUID(record_id),
                *_schedule(marks),
                [r.attendance_codeid if r else None for r in replaced],
                [r.att_code if r else "" for r in replaced],
                [r.comment if r else "" for r in replaced],
                [r is not None for r in replaced],
            )

    async def meetings_written(self, record_id: str, marks: Sequence[MeetingMark]) -> None:
        """Record what each of the record's meetings holds now (its code, or why it was left
        alone)."""
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["meetings_written"],
                uuid.UUID(record_id),
                *_schedule(marks),
                [m.attendance_code for m in marks],
                [m.left_unchanged for m in marks],
            )

    async def hand_over_meeting(
        self, from_record: str, to_record: str, ccid: int, period_id: int
    ) -> None:
        """Give ``to_record`` the value ``from_record`` replaced in one shared meeting."""
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["hand_over_meeting"],
                uuid.UUID(from_record),
                uuid.UUID(to_record),
                ccid,
                period_id,
            )

    async def set_meeting_code(self, record_id: str, ccid: int, period_id: int, code: str) -> None:
        """Record the ATT_CODE PowerSchool now holds in one of the record's meetings."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["set_meeting_code"], uuid.UUID(record_id), ccid, period_id, code)

    async def set_code(self, record_id: str, code: str) -> None:
        """Record the ATT_CODE PowerSchool now holds for this record."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["set_code"], uuid.UUID(record_id), code)

    async def hand_over_replaced(self, from_record: str, to_record: str) -> None:
        """Give ``to_record`` the PowerSchool value ``from_record`` replaced (or none)."""
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["hand_over_replaced"], uuid.UUID(from_record), uuid.UUID(to_record)
            )

    async def reschedule(
        self, job: DeliveryJob, run_at: datetime, attempt: DeliveryAttempt
    ) -> AttendanceRecord | None:
        """Try again at ``run_at``, with ``attempt.error`` as ``last_error`` and ``attempt``
        added to the history, only under the job's lease; None (and nothing recorded) if the
        lease was lost."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(
                _Q["reschedule_job"],
                uuid.UUID(job.record_id),
                uuid.UUID(job.lease_token),
                run_at,
                attempt.error,
                *_attempt_args(attempt),
            )
        return None if row is None else _record(row)

    async def release(self, job: DeliveryJob, *, run_at: datetime | None = None) -> None:
        """Give a claimed job back without counting an attempt, due again at ``run_at``."""
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["release_job"],
                uuid.UUID(job.record_id),
                uuid.UUID(job.lease_token),
                run_at or datetime.now(UTC),
            )

    async def renew(self, owner: str, tokens: list[str], *, lease: float) -> set[str]:
        """Extend the leases of ``owner``'s claims with these tokens; returns the tokens
        still held (a missing one was taken by another claim, or its job was reset)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                _Q["renew_leases"], owner, [uuid.UUID(t) for t in tokens], lease
            )
        return {str(r["lease_token"]) for r in rows}

    async def hand_over(self, jobs: list[DeliveryJob]) -> int:
        """Give unfinished claims back, due now, and wake every process: this one is
        shutting down. Their attempts count (a write may have been sent)."""
        async with connection(self._pool) as conn, conn.transaction():
            rows = await conn.fetch(
                _Q["hand_over_jobs"],
                [uuid.UUID(j.record_id) for j in jobs],
                [uuid.UUID(j.lease_token) for j in jobs],
            )
            for district_id in {r["district_id"] for r in rows}:
                await conn.execute(_Q["notify"], district_id)
        return len(rows)

    async def release_district(self, district_id: str) -> None:
        """Make the district's backed-off jobs due now (its PowerSchool is back)."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["release_district"], district_id)
            await conn.execute(_Q["notify"], district_id)

    async def list(
        self,
        district_id: str,
        where: RecordFilter,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[AttendanceRecord]:
        """Records newest first, after the keyset position ``after``."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                _Q["list_records"],
                district_id,
                where.state.value if where.state else None,
                where.school_number,
                where.date_from,
                where.date_to,
                where.roster_id,
                after[0] if after else None,
                uuid.UUID(after[1]) if after else None,
                limit,
            )
        return [_record(r) for r in rows]

    async def retry_one(self, district_id: str, record_id: str) -> AttendanceRecord | None:
        """Queue a FAILED or PENDING record for delivery now; None if it is neither."""
        async with connection(self._pool) as conn, conn.transaction():
            row = await conn.fetchrow(_Q["retry_one"], district_id, uuid.UUID(record_id))
            if row is not None:
                await conn.execute(
                    _Q["retry_job"],
                    row["record_id"],
                    district_id,
                    row["cancel_requested"],
                    current_request_id(),
                    current_traceparent(),
                )
                await conn.execute(_Q["notify"], district_id)
        return None if row is None else _record(row)

    async def retry_failed(self, district_id: str, first: date, last: date) -> int:
        """Queue every FAILED record with an attendance date in [first, last]."""
        async with connection(self._pool) as conn, conn.transaction():
            rows = await conn.fetch(
                _Q["retry_failed"],
                district_id,
                first,
                last,
                current_request_id(),
                current_traceparent(),
            )
            await conn.execute(_Q["notify"], district_id)
        return len(rows)

    async def stats(self, district_id: str) -> DeliveryStats:
        """Backlog and recent outcomes of a district."""
        async with connection(self._pool) as conn:
            row = _must(await conn.fetchrow(_Q["stats"], district_id))
        return DeliveryStats(
            district_id=district_id,
            pending=row["pending"],
            oldest_pending_age=float(row["oldest_age"]) if row["oldest_age"] is not None else None,
            failed=row["failed"],
            written_last_hour=row["written_last_hour"],
        )

    @asynccontextmanager
    async def listening(self, on_notify: Callable[[str], None]) -> AsyncIterator[None]:
        """While the block runs, call ``on_notify(district_id)`` whenever a job is queued
        (by any process), and ``on_notify("")`` when notifications are back after the
        LISTEN connection was lost (see :mod:`service.store.notifications`)."""
        async with notifications.listening(self._dsn, CHANNEL, on_notify):
            yield
