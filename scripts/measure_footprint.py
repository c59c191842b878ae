"""Memory and CPU of one ``python -m service`` process, idle and under load: the figures the
Kubernetes resource requests in ``deploy/k8s/deployment.yaml`` are taken from.

``.venv/bin/python scripts/measure_footprint.py`` starts an embedded Postgres (or uses
``DATABASE_URL``), the PowerSchool simulator (50 ms per call, its own process) and the
service (its own process, default settings), then reads the service's ``/proc`` entries:

1. idle: RSS and CPU over ``--idle`` seconds after start (roster scheduler and delivery
   polling running, nothing to do);
2. load: 2,000 students imported and resolved, then 1,999 late check-ins submitted 32 at a
   time and delivered (the ``make bench`` delivery figure), CPU over that window and the peak
   RSS (VmHWM) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
from bench import district_with_students  # scripts/: the bench's district setup
from google.protobuf.timestamp_pb2 import Timestamp
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from service.store import EmbeddedPostgres
from service.store.sealing import new_key_text
from simulators.powerschool import PowerSchoolSimulator, demo_dataset, recent_school_day
from simulators.roster import school_roster_id

TZ = "America/Chicago"
# The measured service's bootstrap admin, made for this run.
TOKEN = secrets.token_urlsafe(32)
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_mb(pid: int, key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


async def load(port: int, sim_url: str, sim: PowerSchoolSimulator) -> tuple[int, float]:
    """Import, resolve, submit and deliver; returns (records, seconds from first submit to
    an empty queue)."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=[BearerToken(TOKEN)]
    ) as channel:
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        did = f"footprint-{uuid.uuid4().hex[:6]}"
        schools = [
            pb.School(
                school_number=n,
                roster_school_id=school_roster_id("clever", n),
                writeback_enabled=True,
                late_check_in_code="T",
                early_check_out_code="ED",
            )
            for n in (100, 200)
        ]
        district = pb.District(
            district_id=did,
            roster_source=pb.ROSTER_SOURCE_CLEVER,
            writeback_enabled=True,
            timezone=TZ,
            max_in_flight=32,
            max_requests_per_second=1000,
            powerschool=pb.PowerSchoolConnection(
                base_url=sim_url, client_id=sim.client_id, client_secret=sim.client_secret
            ),
            schools=schools,
        )
        students = list(sim.dataset.students)
        await district_with_students(stub, district, students)
        sem = asyncio.Semaphore(32)
        day = datetime.combine(recent_school_day(sim.dataset), dtime(8, 0), tzinfo=ZoneInfo(TZ))

        async def submit(i: int) -> None:
            when = Timestamp()
            when.FromDatetime((day + timedelta(seconds=i)).astimezone(UTC))
            async with sem:
                await stub.SubmitAttendance(
                    pb.SubmitAttendanceRequest(
                        district_id=did,
                        idempotency_key=f"fp-{i}",
                        student=pb.StudentKey(sis_id=str(students[i].dcid)),
                        event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
                        occurred_at=when,
                        reason="Bus late",
                    ),
                    timeout=30,
                )

        started = time.monotonic()
        await asyncio.gather(*(submit(i) for i in range(1, len(students))))
        while True:
            stats = await stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(district_id=did))
            if not stats.stats.pending:
                break
            await asyncio.sleep(0.2)
        return len(students) - 1, time.monotonic() - started


def main(args: argparse.Namespace) -> None:
    pg = None
    scratch = Path(tempfile.mkdtemp(prefix="writeback-footprint-"))
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        pg = EmbeddedPostgres(scratch / "pg")
        database_url = pg.start()
    sim_port, port = _free_port(), _free_port()
    sim_proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "simulators.powerschool", "--port", str(sim_port)),
            *("--students-per-school", "1000", "--latency", "0.05"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_HOST": "127.0.0.1"}
    env |= {"GRPC_PORT": str(port), "LOG_LEVEL": "WARNING", "ALLOW_INSECURE_UPSTREAMS": "1"}
    env.setdefault("WRITEBACK_SECRET_KEY", new_key_text())
    env["WRITEBACK_BOOTSTRAP_ADMIN_TOKEN"] = TOKEN
    service = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    try:
        _wait_port(sim_port)
        _wait_port(port)
        time.sleep(5)
        cpu0, t0 = cpu_seconds(service.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(service.pid) - cpu0) / (time.monotonic() - t0)
        idle_rss = memory_mb(service.pid, "VmRSS")
        sim = PowerSchoolSimulator(demo_dataset(students_per_school=1000))  # IDs only
        cpu0 = cpu_seconds(service.pid)
        records, seconds = asyncio.run(load(port, f"http://127.0.0.1:{sim_port}", sim))
        busy_cpu = (cpu_seconds(service.pid) - cpu0) / seconds
        print(f"idle:  RSS {idle_rss:5.0f} MB, CPU {idle_cpu * 1000:4.0f} millicores")
        print(
            f"load:  peak RSS {memory_mb(service.pid, 'VmHWM'):5.0f} MB, CPU "
            f"{busy_cpu * 1000:4.0f} millicores ({records} records in {seconds:.1f} s"
            f" = {records / seconds:.0f} records/s)"
        )
    finally:
        service.terminate()
        service.wait()
        sim_proc.terminate()
        sim_proc.wait()
        if pg is not None:
            pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle sampling")
    main(parser.parse_args())
