"""Delivery against a slow PowerSchool with the default per-district limits: 1,000 late
check-ins in one school day across two schools, the simulator answering every call in
100 ms, the district's ``max_in_flight`` and ``max_requests_per_second`` left unset (0 = the
defaults of ``service/domain/politeness.py``). Prints seconds from the first submit until
nothing is pending, and PowerSchool calls per record (the simulator's ``/_sim/calls``).

    PYTHONPATH=$PWD:$PWD/proto .venv/bin/python scripts/bench_delivery.py [--records 1000]

The goal (issue 13): under 30 s and at most 2.1 calls per record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    _BENCH_UPSTREAMS,
    CONCURRENCY,
    TOKEN,
    _district,
    _district_with_students,
    _school_day,
    _sim_control,
    _simulator,
    _submit,
)

from clients import BearerToken
from service import Server, Settings
from service.logs import configure
from service.store import EmbeddedPostgres
from simulators.powerschool import PowerSchoolSimulator, demo_dataset

READS = "/ws/schema/table/attendance"


async def measure(database_url: str, records: int, latency: float) -> dict[str, float]:
    """Deliver ``records`` late check-ins (alternating the two schools) and time it."""
    per_school = records // 2 + 1
    sim_proc, sim_url = _simulator("simulators.powerschool", per_school)
    sim = PowerSchoolSimulator(demo_dataset(students_per_school=per_school))
    server = Server(
        Settings(
            database_url=database_url,
            grpc_host="127.0.0.1",
            grpc_port=0,
            data_dir=Path(tempfile.mkdtemp()),
            **_BENCH_UPSTREAMS,
            bootstrap_admin_token=TOKEN,
            metrics_port=0,
        )
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", interceptors=[BearerToken(TOKEN)]
        ) as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            did = f"bench-delivery-{uuid.uuid4().hex[:6]}"
            district = _district(did, sim_url, sim)
            district.ClearField("max_in_flight")  # 0: the defaults
            district.ClearField("max_requests_per_second")
            students = list(sim.dataset.students)[: records + 1]
            await _district_with_students(stub, district, students)
            day = _school_day(sim)
            # One record alone first warms the token, term, code and mode caches.
            await stub.SubmitAttendance(_submit(did, students[0], day, 0, wait=True), timeout=60)
            await _sim_control(sim_url, "faults", {"latency": latency})
            await _sim_control(sim_url, "reset-calls", {})
            sem = asyncio.Semaphore(CONCURRENCY)
            started = time.monotonic()

            async def submit(i: int) -> None:
                async with sem:
                    await stub.SubmitAttendance(_submit(did, students[i], day, i), timeout=60)

            await asyncio.gather(*(submit(i) for i in range(1, records + 1)))
            accepted = time.monotonic() - started
            while True:
                stats = (
                    await stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(district_id=did))
                ).stats
                if stats.pending == 0:
                    break
                await asyncio.sleep(0.1)
            delivered = time.monotonic() - started
            calls = await _sim_control(sim_url, "calls")
    finally:
        await server.stop()
        sim_proc.terminate()
        sim_proc.wait()
    paths = Counter(c["path"] for c in calls)  # type: ignore[attr-defined]
    reads = [c["query"].get("q", "") for c in calls if c["path"] == READS]  # type: ignore[attr-defined]
    return {
        "records": records,
        "failed": stats.failed,
        "accept_s": accepted,
        "delivered_s": delivered,
        "calls_per_record": sum(paths.values()) / records,
        "student_reads": sum(1 for q in reads if q.startswith("studentid==")),
        "day_pages": sum(1 for q in reads if q.startswith("schoolid==")),
        "writes": paths["/ws/attendance/daily_time"],
    }


async def main(args: argparse.Namespace) -> None:
    configure("WARNING", "json")
    pg = None
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp()) / "pg")
        database_url = pg.start()
    try:
        f = await measure(database_url, args.records, args.latency)
    finally:
        if pg is not None:
            pg.stop()
    print(
        f"{f['records']:.0f} records ({f['failed']:.0f} failed) delivered in "
        f"{f['delivered_s']:.1f} s (all accepted after {f['accept_s']:.1f} s), "
        f"{f['calls_per_record']:.2f} PowerSchool calls per record "
        f"({f['writes']:.0f} writes, {f['student_reads']:.0f} reads of a student's row, "
        f"{f['day_pages']:.0f} pages of a school's day), "
        f"PowerSchool at {args.latency * 1000:.0f} ms, default per-district limits"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per PowerSchool call")
    asyncio.run(main(parser.parse_args()))
