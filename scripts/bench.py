"""`make bench`: throughput figures for the writeback service, each next to a baseline
measured in the same run on the same machine (these machines are shared and noisy, so
compare ratios, not absolute numbers).

1. RPC overhead: a bare grpc.aio server (health Check) vs cached ResolveStudent.
2. SubmitAttendance accept rate, and end-to-end delivery to the PowerSchool simulator at
   50 ms latency, with PowerSchool calls per delivered record: a Daily school (goal: <= 2.1)
   and a Meeting school (goal: <= 3: schedule, existing marks, one write).
3. Roster sync of a 100,000-student district from the Clever and from the ClassLink
   simulator: students/s and the service process's peak memory (each in a fresh process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from service import Server, Settings
from service.logs import configure
from service.store import EmbeddedPostgres
from service.store.sealing import new_key_text
from simulators.powerschool import PowerSchoolSimulator, demo_dataset, recent_school_day
from simulators.roster import school_roster_id

# The benchmark's own admin: every service it starts takes it as the bootstrap token.
TOKEN = secrets.token_urlsafe(32)

ROOT = Path(__file__).resolve().parent.parent
TZ = "America/Chicago"
CONCURRENCY = 32


# Simulators on plain http on loopback; a throwaway key for the bench database's secrets.
_BENCH_UPSTREAMS: dict[str, Any] = {
    "allow_insecure_upstreams": True,
    "secret_key": os.environ.get("WRITEBACK_SECRET_KEY") or new_key_text(),
}


async def rate(call: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """Calls per second with CONCURRENCY callers in a closed loop."""
    done = 0
    stop = time.monotonic() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < stop:
            await call(i)
            done += 1
            i += CONCURRENCY

    started = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(CONCURRENCY)))
    return done / (time.monotonic() - started)


async def echo_baseline(seconds: float) -> float:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            return await rate(lambda _: stub.Check(request), seconds)
    finally:
        await server.stop(None)


def _district(
    district_id: str,
    sim_url: str,
    sim: PowerSchoolSimulator,
    numbers: tuple[int, ...] = (100, 200),
    **school: object,
) -> pb.District:
    return pb.District(
        district_id=district_id,
        roster_source=pb.ROSTER_SOURCE_CLEVER,
        writeback_enabled=True,
        timezone=TZ,
        powerschool=pb.PowerSchoolConnection(
            base_url=sim_url, client_id=sim.client_id, client_secret=sim.client_secret
        ),
        schools=[
            pb.School(
                school_number=n,
                roster_school_id=school_roster_id("clever", n),
                writeback_enabled=True,
                late_check_in_code="T",
                early_check_out_code="ED",
                **school,  # type: ignore[arg-type]
            )
            for n in numbers
        ],
        max_in_flight=CONCURRENCY,
        max_requests_per_second=1000,
    )


async def _sim_control(url: str, path: str, body: object = None) -> object:
    async with aiohttp.ClientSession() as http:
        method = http.post if body is not None else http.get
        async with method(f"{url}/_sim/{path}", json=body) as resp:
            return await resp.json()


async def _district_with_students(
    stub: writeback_pb2_grpc.WritebackServiceStub, district: pb.District, students: list[Any]
) -> None:
    """Create the district, import ``students`` and resolve each once (what the post-sync
    prefetch does), so deliveries find STUDENTS.ID cached."""
    await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))
    did = district.district_id
    await stub.ImportStudents(
        pb.ImportStudentsRequest(
            district_id=did,
            students=[
                pb.RosterStudent(
                    roster_id=f"u{s.dcid}",
                    sis_id=str(s.dcid),
                    student_number=s.student_number,
                    roster_school_id=school_roster_id("clever", s.schoolid),
                    active=True,
                )
                for s in students
            ],
        )
    )
    sem = asyncio.Semaphore(CONCURRENCY)

    async def resolve(dcid: int) -> None:
        async with sem:
            await stub.ResolveStudent(
                pb.ResolveStudentRequest(district_id=did, key=pb.StudentKey(sis_id=str(dcid)))
            )

    await asyncio.gather(*(resolve(s.dcid) for s in students))


async def _delivery(
    stub: writeback_pb2_grpc.WritebackServiceStub,
    did: str,
    sim_url: str,
    students: list[Any],
    start: datetime,
) -> dict[str, float]:
    """Late check-ins of ``students`` from ``start`` on (one second apart) delivered to a
    simulator answering in 50 ms: accept and delivery rates, PowerSchool calls per record.
    The first record is delivered alone beforehand, warming the token, term, code and mode
    caches."""
    await stub.SubmitAttendance(_submit(did, students[0], start, 0, wait=True), timeout=30)
    await _sim_control(sim_url, "faults", {"latency": 0.05})
    await _sim_control(sim_url, "reset-calls", {})
    records = len(students) - 1
    started = time.monotonic()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def submit(i: int) -> None:
        async with sem:
            await stub.SubmitAttendance(_submit(did, students[i], start, i), timeout=30)

    await asyncio.gather(*(submit(i) for i in range(1, records + 1)))
    accepted = time.monotonic() - started
    while True:
        stats = (await stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(district_id=did))).stats
        if stats.pending == 0:
            break
        await asyncio.sleep(0.2)
    delivered = time.monotonic() - started
    calls = await _sim_control(sim_url, "calls")
    return {
        "accept_rps": records / accepted,
        "delivery_rps": records / delivered,
        "calls_per_record": len(calls) / records,  # type: ignore[arg-type]
        "records": records,
        "failed": stats.failed,
    }


async def service_figures(
    database_url: str, seconds: float, *, delivery_only: bool = False
) -> dict[str, float]:
    """Cached ResolveStudent rate (unless ``delivery_only``), then delivery to a Daily and
    to a Meeting school; the meeting figures' keys start with ``meeting_``."""
    # The simulators run in their own processes so their CPU is not charged to the service.
    dataset = demo_dataset(students_per_school=1000)
    sim_proc, sim_url = _simulator("simulators.powerschool", 1000)
    meeting_proc, meeting_url = _simulator(
        "simulators.powerschool", 1000, "--meeting-schools", "100"
    )
    sim = PowerSchoolSimulator(dataset)  # not started: the same seeded data, for IDs and terms
    server = Server(
        Settings(
            database_url=database_url,
            grpc_host="127.0.0.1",
            grpc_port=0,
            data_dir=Path(tempfile.mkdtemp()),
            **_BENCH_UPSTREAMS,
            bootstrap_admin_token=TOKEN,
        )
    )
    await server.start()
    out: dict[str, float] = {}
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", interceptors=[BearerToken(TOKEN)]
        ) as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            did = f"bench-{uuid.uuid4().hex[:6]}"
            students = list(sim.dataset.students)
            await _district_with_students(stub, _district(did, sim_url, sim), students)
            if not delivery_only:
                numbers = [s.student_number for s in students]
                out["resolve_rps"] = await rate(
                    lambda i: stub.ResolveStudent(
                        pb.ResolveStudentRequest(
                            district_id=did,
                            key=pb.StudentKey(student_number=numbers[i % len(numbers)]),
                        )
                    ),
                    seconds,
                )
            out.update(await _delivery(stub, did, sim_url, students, _school_day(sim)))
            # A Meeting school: each check-in at 10:15 or a little later misses two class
            # meetings and is tardy in the third, all three in one write.
            did = f"bench-meeting-{uuid.uuid4().hex[:6]}"
            lincoln = [s for s in students if s.schoolid == 100]
            district = _district(
                did,
                meeting_url,
                sim,
                (100,),
                attendance_mode=pb.ATTENDANCE_MODE_MEETING,
                missed_code="A",
            )
            await _district_with_students(stub, district, lincoln)
            start = _school_day(sim).replace(hour=10, minute=15)
            meeting = await _delivery(stub, did, meeting_url, lincoln, start)
            out.update({f"meeting_{k}": v for k, v in meeting.items()})
    finally:
        await server.stop()
        for proc in (sim_proc, meeting_proc):
            proc.terminate()
            proc.wait()
    return out


def _school_day(sim: PowerSchoolSimulator) -> datetime:
    """Yesterday (or the last day of the school year), 08:47 local time."""
    return datetime.combine(recent_school_day(sim.dataset), dtime(8, 0), tzinfo=ZoneInfo(TZ))


def _submit(
    did: str, student: object, day: datetime, i: int, *, wait: bool = False
) -> pb.SubmitAttendanceRequest:
    when = Timestamp()
    when.FromDatetime((day + timedelta(seconds=i)).astimezone(UTC))
    return pb.SubmitAttendanceRequest(
        district_id=did,
        idempotency_key=f"bench-{i}",
        student=pb.StudentKey(sis_id=str(student.dcid)),  # type: ignore[attr-defined]
        event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
        occurred_at=when,
        reason="Bus late",
        wait_for_writeback=wait,
    )


# --- roster sync of 100,000 students, each source in a fresh process -----------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _simulator(module: str, per_school: int, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--port",
            str(port),
            "--students-per-school",
            str(per_school),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, url
        time.sleep(0.2)
    raise SystemExit(f"{module} did not start")


async def sync_child(source: str, database_url: str, ps_url: str, roster_url: str) -> None:
    """Runs in a fresh process: one full sync through the real gRPC API; prints JSON."""
    configure("WARNING", "json")
    server = Server(
        Settings(
            database_url=database_url,
            grpc_host="127.0.0.1",
            grpc_port=0,
            run_scheduler=False,
            **_BENCH_UPSTREAMS,
            bootstrap_admin_token=TOKEN,
        )
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", interceptors=[BearerToken(TOKEN)]
        ) as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            did = f"sync-{source}-{uuid.uuid4().hex[:6]}"
            roster = (
                {
                    "clever": pb.CleverConnection(
                        base_url=roster_url,
                        client_id="clever-client",
                        client_secret="clever-secret",
                        clever_district_id=CLEVER_DISTRICT,
                    )
                }
                if source == "clever"
                else {
                    "classlink": pb.ClassLinkConnection(
                        endpoint_url=roster_url,
                        client_id="classlink-client",
                        client_secret="classlink-secret",
                    )
                }
            )
            district = pb.District(
                district_id=did,
                roster_source=pb.ROSTER_SOURCE_CLEVER
                if source == "clever"
                else pb.ROSTER_SOURCE_CLASSLINK,
                timezone=TZ,
                powerschool=pb.PowerSchoolConnection(
                    base_url=ps_url, client_id="sim-client", client_secret="sim-secret"
                ),
                schools=[
                    pb.School(school_number=n, roster_school_id=school_roster_id(source, n))  # type: ignore[arg-type]
                    for n in (100, 200)
                ],
                **roster,  # type: ignore[arg-type]
            )
            await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.monotonic()
            result = await stub.SyncRoster(
                pb.SyncRosterRequest(district_id=did, full=True), timeout=600
            )
            elapsed = time.monotonic() - started
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        await server.stop()
    print(
        json.dumps(
            {
                "students": result.created,
                "prefetched": result.prefetched,
                "seconds": round(elapsed, 2),
                "students_per_s": round(result.created / elapsed),
                "peak_rss_mb": round(peak / 1024),
                "rss_before_mb": round(rss_before / 1024),
            }
        )
    )


CLEVER_DISTRICT = "5f0c1e7e5e0d157100000001"


def sync_figures(database_url: str, per_school: int) -> dict[str, dict[str, float]]:
    ps, ps_url = _simulator("simulators.powerschool", per_school)
    out = {}
    try:
        for source, module in (
            ("clever", "simulators.clever"),
            ("classlink", "simulators.classlink"),
        ):
            sim, url = _simulator(module, per_school)
            try:
                child = subprocess.run(
                    [sys.executable, __file__, "sync-child", source, database_url, ps_url, url],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                out[source] = json.loads(child.stdout.strip().splitlines()[-1])
            finally:
                sim.terminate()
                sim.wait()
    finally:
        ps.terminate()
        ps.wait()
    return out


def _print_delivery(figures: dict[str, float]) -> None:
    for mode, prefix in (("Daily", ""), ("Meeting", "meeting_")):
        print(
            f"{'delivery end to end, ' + mode + ':':<35}{figures[prefix + 'delivery_rps']:8.0f}"
            f" records/s  ({figures[prefix + 'records']:.0f} records,"
            f" {figures[prefix + 'failed']:.0f} failed, 50 ms PS, {CONCURRENCY} in flight)"
        )
    print(
        f"PowerSchool calls per record:      {figures['calls_per_record']:8.2f} Daily"
        f" (goal <= 2.1), {figures['meeting_calls_per_record']:.2f} Meeting (goal <= 3)"
    )


async def main(args: argparse.Namespace) -> None:
    configure("WARNING", "json")
    pg = None
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp()) / "pg")
        database_url = pg.start()
    try:
        if args.delivery_only:
            figures = await service_figures(database_url, args.seconds, delivery_only=True)
            _print_delivery(figures)
            return
        baseline = await echo_baseline(args.seconds)
        figures = await service_figures(database_url, args.seconds)
        print(f"bare grpc.aio health Check:        {baseline:8.0f} calls/s (baseline)")
        print(
            f"ResolveStudent (cached):           {figures['resolve_rps']:8.0f} calls/s"
            f"  = {figures['resolve_rps'] / baseline:.2f} x baseline"
        )
        print(
            f"SubmitAttendance accept:           {figures['accept_rps']:8.0f} records/s"
            f"  = {figures['accept_rps'] / baseline:.2f} x baseline"
        )
        _print_delivery(figures)
        if not args.skip_sync:
            for source, f in sync_figures(database_url, args.students // 2).items():
                print(
                    f"roster sync {source:<9} {f['students']:>7} students in {f['seconds']:6.1f} s"
                    f" = {f['students_per_s']:6.0f} students/s, prefetched {f['prefetched']},"
                    f" peak RSS {f['peak_rss_mb']} MB (before sync {f['rss_before_mb']} MB)"
                )
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sync-child":
        asyncio.run(sync_child(*sys.argv[2:6]))
    else:
        parser = argparse.ArgumentParser(description=__doc__)
        parser.add_argument("--seconds", type=float, default=5.0, help="per closed-loop figure")
        parser.add_argument("--students", type=int, default=100_000, help="roster size to sync")
        parser.add_argument("--skip-sync", action="store_true")
        parser.add_argument(
            "--delivery-only",
            action="store_true",
            help="only the delivery figures (Daily and Meeting), without baseline or sync",
        )
        asyncio.run(main(parser.parse_args()))
