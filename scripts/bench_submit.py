"""SubmitAttendance accept rate against a bare grpc.aio echo server, each in its own process.

The service (delivery running in the same process, to a PowerSchool simulator answering in
50 ms), a bare grpc.aio health server and the client are separate processes; for each
in-flight count the echo server and the service are measured back to back (the machine is
shared and noisy: compare the ratio). Every submission is a new record: unique keys, and no
student has two submissions for the same day.

    python scripts/bench_submit.py [--seconds 5] [--in-flight 16 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from scripts.bench import (
    _BENCH_UPSTREAMS,
    TOKEN,
    _district,
    _district_with_students,
    _free_port,
    _school_day,
    _sim_control,
    _simulator,
)
from service import Server, Settings
from service.logs import configure
from service.store import EmbeddedPostgres
from simulators.powerschool import PowerSchoolSimulator, demo_dataset

PER_SCHOOL = 1000


async def serve(port: int, dsn: str, token: str, env: dict[str, str]) -> None:
    configure("WARNING", "json")
    upstreams = {**_BENCH_UPSTREAMS, "secret_key": env["secret_key"]}
    server = Server(
        Settings(
            database_url=dsn,
            grpc_host="127.0.0.1",
            grpc_port=port,
            data_dir=Path(tempfile.mkdtemp()),
            bootstrap_admin_token=token,
            # SUBMIT_BATCH_WAIT_MS from the environment, to compare waits.
            submit_batch_wait_ms=float(os.environ.get("SUBMIT_BATCH_WAIT_MS", "1")),
            **upstreams,
        )
    )
    await server.start()
    await asyncio.Event().wait()


async def echo(port: int) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def closed_loop(call, in_flight: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def caller() -> None:
        nonlocal errors
        while time.monotonic() < stop:
            i = next(counter)
            t0 = time.monotonic()
            try:
                await call(i)
            except grpc.aio.AioRpcError as exc:
                if not errors:
                    print(exc.code(), exc.details(), file=sys.stderr)
                errors += 1
            latencies.append(time.monotonic() - t0)

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "errors": errors,
    }


async def client(
    service_port: int, echo_port: int, sim_url: str, seconds: float, in_flights: list[int]
) -> None:
    sim = PowerSchoolSimulator(demo_dataset(students_per_school=PER_SCHOOL))
    students = list(sim.dataset.students)
    day = _school_day(sim)
    async with (
        grpc.aio.insecure_channel(
            f"127.0.0.1:{service_port}", interceptors=[BearerToken(os.environ["BENCH_TOKEN"])]
        ) as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel,
    ):
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        did = f"bench-{uuid.uuid4().hex[:6]}"
        await _district_with_students(stub, _district(did, sim_url, sim), students)
        # PowerSchool down: delivery backs off and leaves the event loop to the accepts.
        faults = {"outage": True} if os.environ.get("BENCH_NO_DELIVERY") else {"latency": 0.05}
        await _sim_control(sim_url, "faults", faults)
        health_stub = health_pb2_grpc.HealthStub(echo_channel)
        check = health_pb2.HealthCheckRequest()

        def submit_call(base: int):  # type: ignore[no-untyped-def]
            def call(i: int):  # type: ignore[no-untyped-def]
                n = base + i
                # A new day for each pass over the roster: never a correction.
                when = day - timedelta(days=n // len(students), seconds=-(n % 3600))
                ts = Timestamp()
                ts.FromDatetime(when.astimezone(UTC))
                return stub.SubmitAttendance(
                    pb.SubmitAttendanceRequest(
                        district_id=did,
                        idempotency_key=f"b-{n}",
                        student=pb.StudentKey(sis_id=str(students[n % len(students)].dcid)),
                        event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
                        occurred_at=ts,
                        reason="Bus late",
                    ),
                    timeout=30,
                )

            return call

        await closed_loop(submit_call(0), 4, 1.0)  # warm-up
        await closed_loop(lambda _: health_stub.Check(check), 4, 1.0)
        out = []
        for run, in_flight in enumerate(in_flights, 1):
            e = await closed_loop(lambda _: health_stub.Check(check), in_flight, seconds)
            s = await closed_loop(submit_call(run * 100_000), in_flight, seconds)
            out.append({"in_flight": in_flight, "echo": e, "submit": s})
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", nargs="?", default="run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--port", type=int)
    parser.add_argument("--echo-port", type=int)
    parser.add_argument("--dsn")
    parser.add_argument("--sim-url")
    args = parser.parse_args()
    if args.role == "serve":
        asyncio.run(
            serve(
                args.port,
                args.dsn,
                os.environ["BENCH_TOKEN"],
                {"secret_key": os.environ["BENCH_KEY"]},
            )
        )
        return
    if args.role == "echo":
        asyncio.run(echo(args.port))
        return
    if args.role == "client":
        asyncio.run(client(args.port, args.echo_port, args.sim_url, args.seconds, args.in_flight))
        return
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-submit-pg-")))
    dsn = pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim_proc, sim_url = _simulator("simulators.powerschool", PER_SCHOOL)
        procs.append(sim_proc)
        port, echo_port = _free_port(), _free_port()
        me = [sys.executable, __file__]
        env = {**os.environ, "BENCH_KEY": _BENCH_UPSTREAMS["secret_key"], "BENCH_TOKEN": TOKEN}
        os.environ.update(env)
        procs.append(
            subprocess.Popen(
                [*me, "serve", "--port", str(port), "--dsn", dsn],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(subprocess.Popen([*me, "echo", "--port", str(echo_port)]))
        time.sleep(8)
        if profile := os.environ.get("BENCH_PROFILE"):
            # Collapsed stacks of the service while the client runs (py-spy, in PATH).
            spy = subprocess.Popen(
                [
                    shutil.which("py-spy") or "py-spy",
                    "record",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-o",
                    profile,
                    "-p",
                    str(procs[1].pid),
                ],
                stdout=subprocess.DEVNULL,
            )
        result = subprocess.run(
            [
                *me,
                "client",
                "--port",
                str(port),
                "--echo-port",
                str(echo_port),
                "--sim-url",
                sim_url,
                "--seconds",
                str(args.seconds),
                "--in-flight",
                *map(str, args.in_flight),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        if profile:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        for row in json.loads(result.stdout):
            e, s = row["echo"], row["submit"]
            print(
                f"in flight {row['in_flight']:3d}: echo {e['rps']:6.0f}/s p50 {e['p50_ms']:5.1f} ms"
                f" | submit {s['rps']:6.0f}/s p50 {s['p50_ms']:5.1f} ms p99 {s['p99_ms']:6.1f} ms"
                f" errors {s['errors']} | ratio {s['rps'] / e['rps']:.2f}x"
            )
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
        pg.stop()


if __name__ == "__main__":
    main()
