"""Roster students and the PowerSchool keys resolved for them."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from service.models import ImportCounts, RosterStudent, Student
from service.store._queries import load

_Q = load("students")


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
    """Upserts roster students and finds them by any key."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def upsert(self, district_id: str, students: Sequence[RosterStudent]) -> ImportCounts:
        """Insert or update a batch in one statement; unchanged rows are not written."""
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
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_Q["upsert_students"], district_id, *map(list, columns))
        created = sum(1 for r in rows if r["inserted"])
        updated = len(rows) - created
        return ImportCounts(created=created, updated=updated, unchanged=len(students) - len(rows))

    async def _find(self, query: str, district_id: str, value: object) -> list[Student]:
        async with self._pool.acquire() as conn:
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
        """Remember what PowerSchool said, unless the roster changed sis_id meanwhile."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                _Q["save_powerschool_ids"],
                district_id,
                roster_id,
                sis_id,
                dcid,
                powerschool_id,
                school_number,
            )
