"""Scaling with GRPC_PROCESSES on one host: cached ResolveStudent QPS, closed loop at 32 in
flight, from h2load (nghttp2-client) in a process of its own, for each process count.

    .venv/bin/python scripts/bench_processes.py --processes 1 2 --seconds 10 --rounds 2

The service runs as ``python -m service`` (GRPC_PROCESSES=N, CALLER_RATE_LIMIT=0, logs to a
file) on an embedded Postgres this script starts; the PowerSchool simulator runs here and is
idle while measuring (every resolution is cached in Postgres). Rounds alternate the process
counts, so a neighbour's load on a shared machine hits each about equally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections import Counter
from pathlib import Path

import grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from service.store import EmbeddedPostgres
from service.store.sealing import new_key_text
from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from simulators.roster import school_roster_id

TOKEN = secrets.token_urlsafe(32)
IN_FLIGHT = 32
# 16 connections x 2 streams: enough connections that SO_REUSEPORT's hash spreads them.
CONNECTIONS = 16
DISTRICT = "bench-procs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _prepare(target: str, sim: PowerSchoolSimulator) -> int:
    """Create the district, import its students, resolve one; returns its DCID."""
    async with grpc.aio.insecure_channel(target, interceptors=[BearerToken(TOKEN)]) as channel:
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        district = pb.District(
            district_id=DISTRICT,
            roster_source=pb.ROSTER_SOURCE_CLEVER,
            timezone="America/Chicago",
            powerschool=pb.PowerSchoolConnection(
                base_url=sim.base_url, client_id=sim.client_id, client_secret=sim.client_secret
            ),
            schools=[
                pb.School(school_number=n, roster_school_id=school_roster_id("clever", n))
                for n in (100, 200)
            ],
        )
        await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))
        students = list(sim.dataset.students)
        await stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id=DISTRICT,
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
        dcid = students[0].dcid
        await stub.ResolveStudent(_request(dcid))
        return dcid


def _request(dcid: int) -> pb.ResolveStudentRequest:
    return pb.ResolveStudentRequest(district_id=DISTRICT, key=pb.StudentKey(sis_id=str(dcid)))


async def _service(env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=env, stderr=out
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=60)
    return proc


async def _h2load(port: int, payload: Path, seconds: float) -> tuple[float, str]:
    """Requests per second h2load measured, and its summary lines."""
    proc = await asyncio.create_subprocess_exec(
        "h2load",
        f"--duration={int(seconds)}",
        "--warm-up-time=2",
        f"--clients={CONNECTIONS}",
        f"--max-concurrent-streams={IN_FLIGHT // CONNECTIONS}",
        f"--data={payload}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--header=authorization: Bearer {TOKEN}",
        f"http://127.0.0.1:{port}/writeback.v1.WritebackService/ResolveStudent",
        stdout=asyncio.subprocess.PIPE,
    )
    out = (await proc.communicate())[0].decode()
    found = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    if proc.returncode != 0 or found is None or "2xx" not in out:
        raise SystemExit(f"h2load failed:\n{out}")
    summary = [line for line in out.splitlines() if "requests:" in line or "status codes" in line]
    return float(found.group(1)), "\n".join(summary)


def _resolve_codes(log: Path) -> dict[str, int]:
    """The status codes of the ResolveStudent calls in the access log, which then starts
    afresh: h2load counts any gRPC answer as success."""
    codes: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        if line.startswith("{") and "ResolveStudent" in line:
            entry = json.loads(line)
            if entry.get("event") == "rpc":
                codes[entry["grpc_code"]] += 1
    log.unlink()
    return dict(codes)


async def main(args: argparse.Namespace) -> None:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    work = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    pg = EmbeddedPostgres(work / "pg")
    sim = PowerSchoolSimulator(demo_dataset(students_per_school=20))
    await sim.start()
    try:
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": pg.start(),
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(port),
            "METRICS_PORT": "0",
            "WRITEBACK_SECRET_KEY": os.environ.get("WRITEBACK_SECRET_KEY") or new_key_text(),
            "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN": TOKEN,
            "ALLOW_INSECURE_UPSTREAMS": "true",
            "CALLER_RATE_LIMIT": "0",
            "SYNC_SCHEDULER": "false",
            "SHUTDOWN_DRAIN_SECONDS": "0",
        }
        results: dict[int, list[float]] = {n: [] for n in args.processes}
        dcid = 0
        for _ in range(args.rounds):
            for n in args.processes:
                proc = await _service({**env, "GRPC_PROCESSES": str(n)}, port, work / "svc.log")
                try:
                    dcid = dcid or await _prepare(f"127.0.0.1:{port}", sim)
                    body = _request(dcid).SerializeToString()
                    payload = work / "request.bin"
                    payload.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
                    qps, summary = await _h2load(port, payload, args.seconds)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
                results[n].append(qps)
                codes = _resolve_codes(work / "svc.log")
                print(f"GRPC_PROCESSES={n}: {qps:,.0f} req/s, answers {codes}\n{summary}")
        base = max(results[args.processes[0]])
        print(f"\ncores: {os.cpu_count()}; {IN_FLIGHT} in flight over {CONNECTIONS} connections")
        for n, figures in results.items():
            best = max(figures)
            shown = ", ".join(f"{f:,.0f}" for f in figures)
            print(f"GRPC_PROCESSES={n}: best {best:,.0f} req/s ({best / base:.2f}x); runs {shown}")
    finally:
        await sim.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
