"""Postgres keeps a plan per connection for a statement run often (asyncpg's prepared
statements, the statements of a PL/pgSQL function), and one made while attendance_records was
nearly empty reads far more of it once it has grown, until the autovacuum's next ANALYZE:
a fresh install's first morning, with accepts slowing down as check-ins pile up. A batch of
submissions stays a handful of index lookups however far the table has grown since the
connection first ran one."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

from service.store import open_pool
from service.store._queries import load

DISTRICT = "d-plans"
NEW = "d-new"
BATCH = load("attendance")["submit_batch"]
GROWN = 20_000


async def _batch(
    conn: asyncpg.Connection,
    first: int,
    rows: int,
    *,
    key: str = "key",
    student: str = "",
    district: str = DISTRICT,
) -> None:
    """``rows`` late check-ins under keys ``{key}-{i}``, each of student ``student-{i}`` (a new
    record, unless that student already has one: a correction), or all of ``student``."""
    n = range(first, first + rows)
    day = date(2026, 9, 1)
    await conn.fetch(
        BATCH,
        [uuid.uuid4() for _ in n],
        [district for _ in n],
        [f"{key}-{i}" for i in n],
        ["hash" for _ in n],
        [student or f"student-{i}" for i in n],
        ["late_check_in" for _ in n],
        [datetime(2026, 9, 1, 13, tzinfo=UTC) + timedelta(seconds=i) for i in n],
        [100 for _ in n],
        [day for _ in n],
        ["T" for _ in n],
        ["" for _ in n],
        [False for _ in n],
        ["" for _ in n],
        ["" for _ in n],
        ["skipped" for _ in n],
        ["writeback is off" for _ in n],
        ["request" for _ in n],
        ["" for _ in n],
        ["{}" for _ in n],
    )


async def _district(conn: asyncpg.Connection, district: str = DISTRICT) -> None:
    await conn.execute(
        "INSERT INTO districts (district_id, roster_source, id_mode, visible_student_id,"
        " timezone) VALUES ($1, 'clever', 'dcid', 'student_number', 'UTC')",
        district,
    )
    # An ANALYZE would make the connection plan again: the hours before it are the case.
    await conn.execute("ALTER TABLE attendance_records SET (autovacuum_enabled = false)")


async def test_a_batch_reads_a_handful_of_rows_after_the_table_has_grown(
    own_database: str,
) -> None:
    """New records, a correction and a key used again: each kind of batch, first run on a
    nearly empty table (where a plan kept from then would be made), reads a handful of rows
    once the table has grown."""
    pool = await open_pool(own_database, size=1)
    try:
        async with pool.acquire() as conn:
            await _district(conn)
            # The first batches of the day on a nearly empty table: new records, a correction
            # of one of them (a new key, the same student), a key used again.
            for i in range(10):
                await _batch(conn, i, 1)
            await _batch(conn, 0, 1, key="again", student="student-1")
            await _batch(conn, 2, 1)
            for first in range(10, 10 + GROWN, 1000):
                await _batch(conn, first, 1000)
            read = {}
            for kind, first, key, student in [
                ("a new record", 10 + GROWN, "key", ""),
                ("a correction", 1, "again", "student-3"),
                ("a key used again", 4, "key", ""),
            ]:
                before = await _rows_read(conn)
                await _batch(conn, first, 1, key=key, student=student)
                read[kind] = await _rows_read(conn) - before
    finally:
        await pool.close()
    assert max(read.values()) < 1000, f"rows read of the {GROWN + 10} records: {read}"


async def _rows_read(conn: asyncpg.Connection) -> int:
    """Rows and index entries of attendance_records read so far, this connection's
    included (a backend reports its counts at most once a second unless told to)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    read: int = await conn.fetchval(
        "SELECT t.seq_tup_read + (SELECT sum(i.idx_tup_read) FROM pg_stat_user_indexes i"
        " WHERE i.relid = t.relid)"
        " FROM pg_stat_user_tables t WHERE t.relname = 'attendance_records'"
    )
    return read


async def test_a_correction_corrects_the_newest_of_a_students_live_records(
    own_database: str,
) -> None:
    """Records from before the student-day locks (0013) can hold two live records of one
    student, day and event: a correction goes to the newest, as it always has."""
    pool = await open_pool(own_database, size=1)
    try:
        async with pool.acquire() as conn:
            await _district(conn)
            await _batch(conn, 0, 1)
            # An older live twin of student-0's record, as an old install could hold.
            await conn.execute(
                "CREATE TEMP TABLE twin AS SELECT * FROM attendance_records;"
                " UPDATE twin SET record_id = gen_random_uuid(), idempotency_key = 'old',"
                " created_at = created_at - interval '1 hour';"
                " INSERT INTO attendance_records SELECT * FROM twin"
            )
            await _batch(conn, 0, 1, key="again", student="student-0")
            rows = await conn.fetch(
                "SELECT r.idempotency_key, r.record_id = k.record_id AS corrected"
                " FROM attendance_records r"
                " JOIN idempotency_keys k ON k.idempotency_key = 'again-0'"
                " ORDER BY r.created_at"
            )
    finally:
        await pool.close()
    assert [(r["idempotency_key"], r["corrected"]) for r in rows] == [
        ("old", False),
        ("key-0", True),
    ]


async def test_a_correction_in_a_district_new_since_the_last_analyze_reads_a_handful(
    own_database: str,
) -> None:
    """A district onboarded since the table's last ANALYZE has no rows in Postgres's
    statistics, so every index that starts with district_id looks as cheap as another to
    the planner; the look for the live record a correction replaces must still go straight
    to the student's day, not read the district's records (on a large table an autovacuum
    ANALYZE can be hours away)."""
    pool = await open_pool(own_database, size=1)
    try:
        async with pool.acquire() as conn:
            await _district(conn)
            for first in range(0, GROWN, 1000):
                await _batch(conn, first, 1000)
            await conn.execute("ANALYZE attendance_records")
            await _district(conn, NEW)
            for first in range(0, 3000, 500):
                await _batch(conn, first, 500, district=NEW)
            before = await _rows_read(conn)
            await _batch(conn, 1, 1, key="again", student="student-2999", district=NEW)
            read = await _rows_read(conn) - before
            corrected = await conn.fetchval(
                "SELECT count(*) FROM attendance_records r JOIN idempotency_keys k"
                " ON k.record_id = r.record_id"
                " WHERE r.district_id = $1 AND r.roster_id = 'student-2999'"
                " AND k.idempotency_key = 'again-1'",
                NEW,
            )
    finally:
        await pool.close()
    assert corrected == 1
    assert read < 100, f"rows read for one correction among 3,000 records: {read}"
