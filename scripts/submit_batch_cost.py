"""What a batch of new check-ins costs Postgres: ``submit_batch`` as migrated (its common path
on plans kept per connection) against the same function planned at every run, which is how
the service's sessions run every other statement (``service/store/_database.py``).

``python scripts/submit_batch_cost.py --batches 2000``. A scratch embedded Postgres
(``DATABASE_URL`` for another: a scratch database only, the script changes ``submit_batch``);
one connection sends batches one after another, each of new students, as the group commit
does at 1 and at 8 in flight. Prints, per batch size and mode, the Postgres backend's CPU per
batch (from ``/proc``: a server on this host) and the median time a batch took. A
diagnosis, not a deployment figure: ``make bench`` measures those.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
from bench import cpu_seconds  # scripts/: the bench's /proc reading

from service.store._database import EmbeddedPostgres, open_pool
from service.store._queries import load

SUBMIT_BATCH = load("attendance")["submit_batch"]
# The kept plans last, so the function is left as migrated.
MODES = {
    "planned at every run": "ALTER FUNCTION submit_batch SET plan_cache_mode = force_custom_plan",
    "kept plans (as migrated)": "ALTER FUNCTION submit_batch SET plan_cache_mode = "
    "force_generic_plan",
}


async def _run(url: str, mode: str, rows: int, batches: int, district: str) -> tuple[str, str]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(MODES[mode])
        await conn.execute(
            "INSERT INTO districts (district_id, roster_source, id_mode, visible_student_id,"
            " timezone) VALUES ($1, 'clever', 'dcid', 'student_number', 'UTC')",
            district,
        )
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
        took = []
        cpu_before = cpu_seconds(pid)
        for b in range(batches):
            n = range(b * rows, (b + 1) * rows)
            columns = (
                [uuid.uuid4() for _ in n],
                [district] * rows,
                [f"key-{i}" for i in n],
                ["hash"] * rows,
                [f"student-{i}" for i in n],
                ["late_check_in"] * rows,
                [datetime.now(UTC)] * rows,
                [100] * rows,
                [date(2026, 9, 1)] * rows,
                ["T"] * rows,
                [""] * rows,
                [False] * rows,
                [""] * rows,
                [""] * rows,
                ["pending"] * rows,
                [""] * rows,
                ["request"] * rows,
                [""] * rows,
                ["{}"] * rows,
            )
            start = time.perf_counter()
            await conn.fetch(SUBMIT_BATCH, *columns)
            took.append(time.perf_counter() - start)
        cpu_after = cpu_seconds(pid)
    finally:
        await conn.close()
    median = f"{statistics.median(took) * 1000:.2f} ms"
    return f"{(cpu_after - cpu_before) / batches * 1e6:.0f} us", median


async def _main(batches: int) -> None:
    url = os.environ.get("DATABASE_URL")
    server = None
    if not url:
        server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="submit-batch-cost-")) / "pg")
        url = server.start()
    try:
        pool = await open_pool(url, size=1)  # migrates
        await pool.close()
        print(f"{'batch':>5}  {'submit_batch':<26} {'Postgres CPU/batch':>18} {'median':>10}")
        for rows in (1, 8):
            for mode in MODES:
                district = f"cost-{uuid.uuid4().hex[:8]}"
                cpu, median = await _run(url, mode, rows, batches, district)
                print(f"{rows:>5}  {mode:<26} {cpu:>18} {median:>10}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000, help="batches per row")
    asyncio.run(_main(parser.parse_args().batches))
