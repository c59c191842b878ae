"""Roster sync jobs in Postgres: their phase, progress and outcome, readable from every
service process."""

from __future__ import annotations

import uuid

import asyncpg

from service.models import ImportCounts, SyncJob, SyncPhase, SyncResult
from service.store._database import connection
from service.store._queries import load

_Q = load("sync_jobs")
_LOCK = load("sync_state")


def _job(row: asyncpg.Record) -> SyncJob:
    return SyncJob(
        sync_id=str(row["sync_id"]),
        district_id=row["district_id"],
        phase=SyncPhase(row["phase"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        pages_done=row["pages_done"],
        students_done=row["students_done"],
        full=row["full_read"],
        counts=ImportCounts(
            created=row["created"],
            updated=row["updated"],
            unchanged=row["unchanged"],
            deactivated=row["deactivated"],
        ),
        prefetched=row["prefetched"],
        unresolved=row["unresolved"],
        error=row["error"],
        error_reason=row["error_reason"],
    )


def _uuid(sync_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(sync_id)
    except ValueError:
        return None


class SyncJobStore:
    """Creates, advances and reads sync jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, district_id: str) -> SyncJob:
        """A new job in the reading phase. Call it holding the district's sync lock: any
        unfinished job it finds belongs to a dead process and is closed as interrupted."""
        async with connection(self._pool) as conn, conn.transaction():
            await conn.execute(_Q["close_abandoned"], district_id)
            row = await conn.fetchrow(_Q["create"], uuid.uuid4(), district_id)
        assert row is not None
        return _job(row)

    async def page_done(self, sync_id: str, students: int) -> None:
        """Count one more roster page written, with its students."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["page_done"], uuid.UUID(sync_id), students)

    async def set_phase(self, sync_id: str, phase: SyncPhase) -> None:
        """Move a running job to another phase."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["set_phase"], uuid.UUID(sync_id), phase.value)

    async def finish(
        self,
        sync_id: str,
        result: SyncResult | None,
        *,
        error: str = "",
        error_reason: str = "",
    ) -> SyncJob | None:
        """End the job: done with ``result``, or failed with ``error`` when it is None."""
        done = result or SyncResult(counts=ImportCounts(), full=False, duration=0.0)
        counts = done.counts
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(
                _Q["finish"],
                uuid.UUID(sync_id),
                (SyncPhase.DONE if result is not None else SyncPhase.FAILED).value,
                done.full,
                counts.created,
                counts.updated,
                counts.deactivated,
                counts.unchanged,
                done.prefetched,
                done.unresolved,
                error,
                error_reason,
            )
        return _job(row) if row is not None else None

    async def get(self, district_id: str, sync_id: str = "") -> SyncJob | None:
        """One of the district's jobs (its latest when ``sync_id`` is empty), or None.

        An unfinished job whose district lock nobody holds was left by a process that died:
        it is closed as interrupted before it is returned.
        """
        key = _uuid(sync_id) if sync_id else None
        if sync_id and key is None:
            return None
        async with connection(self._pool) as conn:
            row = await (
                conn.fetchrow(_Q["get"], district_id, key)
                if key is not None
                else conn.fetchrow(_Q["latest"], district_id)
            )
            if row is None or row["finished_at"] is not None:
                return _job(row) if row is not None else None
            if await conn.fetchval(_LOCK["try_lock"], district_id):
                try:
                    await conn.execute(_Q["close_abandoned"], district_id)
                finally:
                    await conn.fetchval(_LOCK["unlock"], district_id)
                row = await conn.fetchrow(_Q["get"], district_id, row["sync_id"])
        return _job(row) if row is not None else None

    async def running(self, district_id: str) -> SyncJob | None:
        """The district's unfinished job, if any."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["running"], district_id)
        return _job(row) if row is not None else None
