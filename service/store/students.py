"""Roster students and the PowerSchool keys resolved for them."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from service.models import ImportCounts, RosterStudent, Student
from service.store._database import connection
from service.store._queries import load
from service.store.changes import StudentChanges

_Q = load("students")
_ANALYZE_AFTER = 500


def _student(row: asyncpg.Record) -> Student:
    return Student(
        roster=RosterStudent(
            roster_id=row["roster_id"],
            sis_id=row["sis_id"],
            student_number=row["student_number"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            roster_school_id=row["roster_school_id"],
            grade=row["grade"],
            active=row["active"],
        ),
        dcid=row["dcid"],
        powerschool_id=row["powerschool_id"],
        powerschool_school_number=row["ps_school_number"],
    )


class StudentStore:
    """Upserts roster students and finds them by any key; every write that may change what
    a process keeps is announced on ``changes`` (see :mod:`service.store.changes`)."""

    def __init__(self, pool: asyncpg.Pool, changes: StudentChanges) -> None:
        self._pool = pool
        self._changes = changes
        self._created_since_analyze = 0
        self._rows_at_analyze = 0

    async def upsert(self, district_id: str, students: Sequence[RosterStudent]) -> ImportCounts:
        """Insert or update a batch in one transaction; unchanged rows are not written, and
        an older record holding a DCID that a now-active record carries is deactivated."""
        if not students:
            return ImportCounts()
        columns = list(
            zip(
                *(
                    (
                        s.roster_id,
                        s.sis_id,
                        s.student_number,
                        s.first_name,
                        s.last_name,
                        s.roster_school_id,
                        s.grade,
                        s.active,
                    )
                    for s in students
                ),
                strict=True,
            )
        )
        active = [s for s in students if s.active and s.sis_id]
        async with connection(self._pool) as conn, conn.transaction():
            rows = await conn.fetch(_Q["upsert_students"], district_id, *map(list, columns))
            displaced = await conn.fetch(
                _Q["deactivate_dcid_holders"],
                district_id,
                [s.roster_id for s in active],
                [s.sis_id for s in active],
            )
            if rows or displaced:
                await self._changes.announce(conn, district_id)
        if rows or displaced:
            self._changes.changed(district_id)
        created = sum(1 for r in rows if r["inserted"])
        self._created_since_analyze += created
        if self._created_since_analyze >= max(_ANALYZE_AFTER, self._rows_at_analyze // 2):
            # Planner statistics lag a bulk load; without them each batch's lookups scan the
            # whole district instead of using the (district_id, ...) indexes. Re-analyzing
            # each time the table grows by half keeps that to a handful of ANALYZEs.
            self._rows_at_analyze += self._created_since_analyze
            self._created_since_analyze = 0
            async with connection(self._pool) as conn:
                await conn.execute(_Q["analyze"])
        switched_off = sum(1 for r in rows if r["deactivated"])
        return ImportCounts(
            created=created,
            updated=len(rows) - created - switched_off,
            unchanged=len(students) - len(rows),
            deactivated=len(displaced) + switched_off,
        )

    async def _find(self, query: str, district_id: str, value: object) -> list[Student]:
        async with connection(self._pool) as conn:
            return [_student(r) for r in await conn.fetch(_Q[query], district_id, value)]

    async def by_roster_id(self, district_id: str, roster_id: str) -> list[Student]:
        """The student with that roster ID (zero or one)."""
        return await self._find("find_by_roster_id", district_id, roster_id)

    async def by_sis_id(self, district_id: str, sis_id: str) -> list[Student]:
        """Up to two students with that roster student-ID field, active first."""
        return await self._find("find_by_sis_id", district_id, sis_id)

    async def by_student_number(self, district_id: str, student_number: str) -> list[Student]:
        """Up to two students with that student number, active first."""
        return await self._find("find_by_student_number", district_id, student_number)

    async def by_powerschool_id(self, district_id: str, powerschool_id: int) -> list[Student]:
        """Up to two students already resolved to that STUDENTS.ID, active first."""
        return await self._find("find_by_powerschool_id", district_id, powerschool_id)

    async def save_powerschool_ids(
        self,
        district_id: str,
        roster_id: str,
        sis_id: str,
        *,
        dcid: int,
        powerschool_id: int,
        school_number: int | None,
    ) -> None:
        """Remember what PowerSchool said, unless the roster changed sis_id meanwhile.
        Announced only when a kept copy may be wrong now: the student's keys from PowerSchool
        changed, or another student already holds ``powerschool_id``. A first resolution,
        the morning's common case, leaves every process's copies of the district be."""
        async with connection(self._pool) as conn, conn.transaction():
            stale = await conn.fetchval(
                _Q["save_powerschool_ids"],
                district_id,
                roster_id,
                sis_id,
                dcid,
                powerschool_id,
                school_number,
            )
            if stale:
                await self._changes.announce(conn, district_id)
        if stale:
            self._changes.changed(district_id)

    async def _deactivating(self, query: str, district_id: str, roster_ids: list[str]) -> int:
        async with connection(self._pool) as conn, conn.transaction():
            gone = len(await conn.fetch(_Q[query], district_id, roster_ids))
            if gone:
                await self._changes.announce(conn, district_id)
        if gone:
            self._changes.changed(district_id)
        return gone

    async def deactivate_missing(self, district_id: str, seen: Sequence[str]) -> int:
        """Deactivate every active student whose roster ID is not in ``seen``."""
        return await self._deactivating("deactivate_missing", district_id, list(seen))

    async def deactivate(self, district_id: str, roster_ids: Sequence[str]) -> int:
        """Deactivate these students; returns how many were active."""
        if not roster_ids:
            return 0
        return await self._deactivating("deactivate_ids", district_id, list(roster_ids))

    async def unresolved(self, district_id: str, limit: int) -> list[tuple[str, str]]:
        """``(roster_id, sis_id)`` of active students without a STUDENTS.ID yet."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["unresolved"], district_id, limit)
        return [(r["roster_id"], r["sis_id"]) for r in rows]

    async def save_powerschool_ids_batch(
        self, district_id: str, found: Sequence[tuple[str, int, int]]
    ) -> None:
        """Save ``(sis_id, dcid, students_id)`` for every student carrying that sis_id and
        no STUDENTS.ID yet; announced only if another student already held one of the IDs
        (see :meth:`save_powerschool_ids`)."""
        if not found:
            return
        sis_ids, dcids, ids = (list(col) for col in zip(*found, strict=True))
        async with connection(self._pool) as conn, conn.transaction():
            stale = await conn.fetchval(
                _Q["save_powerschool_ids_batch"], district_id, sis_ids, dcids, ids
            )
            if stale:
                await self._changes.announce(conn, district_id)
        if stale:
            self._changes.changed(district_id)

    async def count_active(self, district_id: str) -> int:
        """How many active students the district has."""
        async with connection(self._pool) as conn:
            return int(await conn.fetchval(_Q["count_active"], district_id))

    async def sample_active(self, district_id: str, size: int) -> list[Student]:
        """Up to ``size`` active students picked at random."""
        return await self._find("sample_active", district_id, size)

    async def _roster_ids(self, query: str, district_id: str) -> list[str]:
        async with connection(self._pool) as conn:
            return [r["roster_id"] for r in await conn.fetch(_Q[query], district_id)]

    async def non_numeric_sis_ids(self, district_id: str) -> list[str]:
        """Roster IDs of active students whose sis_id is not a number."""
        return await self._roster_ids("non_numeric_sis_ids", district_id)

    async def missing_student_numbers(self, district_id: str) -> list[str]:
        """Roster IDs of active students without a student number."""
        return await self._roster_ids("missing_student_numbers", district_id)

    async def duplicate_student_numbers(self, district_id: str) -> dict[str, list[str]]:
        """Student numbers held by more than one active student, with their roster IDs."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["duplicate_student_numbers"], district_id)
        return {r["student_number"]: list(r["roster_ids"]) for r in rows}

    async def roster_school_counts(self, district_id: str) -> dict[str, int]:
        """Active students per roster school ID."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["roster_school_counts"], district_id)
        return {r["roster_school_id"]: r["students"] for r in rows}
