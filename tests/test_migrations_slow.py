"""Several replicas starting at once on a fresh database (a deploy, a compose `up` with 2
replicas): migrations are applied once, under the advisory lock, and every replica serves."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from service.store._database import _MIGRATION_LOCK
from tests.test_delivery_slow import ServiceProcess

pytestmark = pytest.mark.slow

MIGRATIONS = sorted(
    (Path(__file__).resolve().parent.parent / "service" / "store" / "migrations").glob("*.sql")
)


async def waiting_for_the_lock(conn: asyncpg.Connection) -> int:
    """Sessions blocked on the migration lock right now."""
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objid = $1 AND database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database())",
        _MIGRATION_LOCK,
    )
    return int(count)


async def test_three_replicas_starting_together_apply_each_migration_once(
    own_database: str, tmp_path: Path
) -> None:
    procs = [ServiceProcess(own_database, tmp_path / f"p{i}.log") for i in range(3)]
    holder = await asyncpg.connect(own_database)
    # Holding the lock ourselves makes all three reach the migration step before any of
    # them may run it, so they contend for real instead of by luck of start-up timing.
    await holder.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    starting = [asyncio.create_task(p.start()) for p in procs]
    try:
        deadline = time.monotonic() + 60
        while await waiting_for_the_lock(holder) < 3:
            assert time.monotonic() < deadline, "the replicas did not all wait for the lock"
            assert not any(t.done() for t in starting), "a replica started without the lock"
            await asyncio.sleep(0.1)
        await holder.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await asyncio.gather(*starting)  # each serves gRPC

        rows = await holder.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == [p.stem for p in MIGRATIONS]
        applied = Counter(e["migration"] for p in procs for e in p.events("migration_applied"))
        assert applied == Counter({p.stem: 1 for p in MIGRATIONS})
        # None died on the way (a second CREATE TABLE would have ended one).
        assert all(p.proc is not None and p.proc.returncode is None for p in procs)
    finally:
        for task in starting:
            task.cancel()
        await holder.close()
        for p in procs:
            await p.stop()
