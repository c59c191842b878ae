"""District and school configuration in Postgres."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from service.models import (
    AttendanceMode,
    ClassLinkConnection,
    CleverConnection,
    District,
    IdMode,
    PowerSchoolConnection,
    RosterSource,
    School,
    VisibleId,
)
from service.store._database import connection
from service.store._queries import load
from service.store.changes import StudentChanges
from service.store.sealing import Sealer

_Q = load("districts")


def _school(row: asyncpg.Record) -> School:
    return School(
        school_number=row["school_number"],
        roster_school_id=row["roster_school_id"],
        name=row["name"],
        timezone=row["timezone"],
        writeback_enabled=row["writeback_enabled"],
        late_check_in_code=row["late_check_in_code"],
        early_check_out_code=row["early_check_out_code"],
        late_check_in_excused_code=row["late_check_in_excused_code"],
        early_check_out_excused_code=row["early_check_out_excused_code"],
        late_and_early_code=row["late_and_early_code"],
        absence_codes=tuple(row["absence_codes"]),
        attendance_mode=AttendanceMode(row["attendance_mode"]),
        missed_code=row["missed_code"],
    )


class DistrictStore:
    """Reads and writes district configuration; secrets are sealed before they are written
    and opened as they are read (a value that does not open raises
    :class:`~service.store.sealing.SealError`)."""

    def __init__(self, pool: asyncpg.Pool, sealer: Sealer, changes: StudentChanges) -> None:
        self._pool = pool
        self._sealer = sealer
        self._changes = changes

    async def get(self, district_id: str) -> District | None:
        """The district with its schools, or None."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["get_district"], district_id)
            if row is None:
                return None
            schools = await conn.fetch(_Q["get_schools"], district_id)

        def secret(column: str) -> str:
            return self._sealer.open(district_id, column, row[column] or "")

        return District(
            district_id=row["district_id"],
            name=row["name"],
            roster_source=RosterSource(row["roster_source"]),
            id_mode=IdMode(row["id_mode"]),
            visible_student_id=VisibleId(row["visible_student_id"]),
            writeback_enabled=row["writeback_enabled"],
            timezone=row["timezone"],
            powerschool=PowerSchoolConnection(
                base_url=row["ps_base_url"],
                client_id=row["ps_client_id"],
                client_secret=secret("ps_client_secret"),
            ),
            schools=tuple(_school(s) for s in schools),
            clever=CleverConnection(
                base_url=row["clever_base_url"],
                client_id=row["clever_client_id"],
                client_secret=secret("clever_client_secret"),
                district_token=secret("clever_district_token"),
                clever_district_id=row["clever_district_id"],
            ),
            classlink=ClassLinkConnection(
                endpoint_url=row["classlink_endpoint_url"],
                client_id=row["classlink_client_id"],
                client_secret=secret("classlink_client_secret"),
            ),
            sync_interval_seconds=row["sync_interval_seconds"],
            max_in_flight=row["max_in_flight"],
            max_requests_per_second=row["max_requests_per_second"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            last_sync_at=row["last_sync_at"],
            last_sync_error=row["last_sync_error"],
        )

    async def page(
        self, *, after: str, limit: int, only: Collection[str] | None = None
    ) -> list[District]:
        """Up to ``limit`` districts with their schools, by district_id, those after ``after``
        (and among ``only``, unless None)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                _Q["list_district_ids"], after, limit, None if only is None else sorted(only)
            )
        ids = [r["district_id"] for r in rows]
        # Each through get(), so a listed district is exactly what GetDistrict shows; an admin's
        # page is small, and one read per district keeps a single way to build a District.
        districts = [await self.get(i) for i in ids]
        return [d for d in districts if d is not None]  # None: removed since the page was read

    async def upsert(self, district: District) -> None:
        """Create or replace a district and its full list of schools, in one transaction.

        An empty secret keeps the stored one for the same server and client ID. A new ID mode
        or PowerSchool server forgets every STUDENTS.ID looked up before.
        """
        d_id = district.district_id

        def seal(column: str, value: str) -> str:
            return self._sealer.seal(d_id, column, value)

        async with connection(self._pool) as conn, conn.transaction():
            before = await conn.fetchrow(_Q["lock_district"], district.district_id)
            await conn.execute(
                _Q["upsert_district"],
                district.district_id,
                district.name,
                district.roster_source.value,
                district.id_mode.value,
                district.visible_student_id.value,
                district.writeback_enabled,
                district.timezone,
                district.powerschool.base_url,
                district.powerschool.client_id,
                seal("ps_client_secret", district.powerschool.client_secret),
                district.clever.base_url,
                district.clever.client_id,
                seal("clever_client_secret", district.clever.client_secret),
                seal("clever_district_token", district.clever.district_token),
                district.clever.clever_district_id,
                district.classlink.endpoint_url,
                district.classlink.client_id,
                seal("classlink_client_secret", district.classlink.client_secret),
                district.sync_interval_seconds,
                district.max_in_flight,
                district.max_requests_per_second,
            )
            if before is not None and (before["id_mode"], before["ps_base_url"]) != (
                district.id_mode.value,
                district.powerschool.base_url,
            ):
                await conn.execute(_Q["forget_powerschool_ids"], district.district_id)
            await conn.execute(_Q["delete_schools"], district.district_id)
            await conn.executemany(
                _Q["insert_school"],
                [
                    (
                        district.district_id,
                        s.school_number,
                        s.roster_school_id,
                        s.name,
                        s.timezone,
                        s.writeback_enabled,
                        s.late_check_in_code,
                        s.early_check_out_code,
                        s.late_check_in_excused_code,
                        s.early_check_out_excused_code,
                        s.late_and_early_code,
                        list(s.absence_codes),
                        s.attendance_mode.value,
                        s.missed_code,
                    )
                    for s in district.schools
                ],
            )
            await self._changes.announce(conn, district.district_id)
        self._changes.changed(district.district_id)

    async def due_for_sync(self, full_sync_interval: float) -> list[tuple[str, bool]]:
        """(district ID, read in full) for each district whose sync schedule is due; a Clever
        district whose Events cannot be trusted is read in full every ``full_sync_interval``
        seconds."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["due_for_sync"], full_sync_interval)
        return [(r["district_id"], r["full"]) for r in rows]
