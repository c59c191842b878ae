"""Roster syncs as jobs: a sync outlives its caller, runs in the background on request, and
shows its phase and progress through GetSyncStatus; the CLI follows it with ``sync --wait``.
Real gRPC, embedded Postgres, and the Clever and PowerSchool simulators over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import stamina
from google.protobuf.duration_pb2 import Duration
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator
from simulators.roster import school_roster_id
from tests.helpers import TZ, World, authed_channel, failure, fast_settings
from tests.test_roster_sync import clever_district

PAGE = 4  # students per roster page on this module's server: several pages per sync


@pytest.fixture(scope="module")
async def paged(database_url: str) -> AsyncIterator[Server]:
    """A service reading small roster pages, with a quick schedule."""
    srv = Server(fast_settings(database_url, roster_page_size=PAGE, sync_poll_seconds=0.2))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(paged: Server) -> AsyncIterator[writeback_pb2_grpc.WritebackServiceStub]:
    async with authed_channel(f"127.0.0.1:{paged.port}") as channel:
        yield writeback_pb2_grpc.WritebackServiceStub(channel)


@pytest.fixture
def world(stub: writeback_pb2_grpc.WritebackServiceStub, sim: PowerSchoolSimulator) -> World:
    return World(stub, sim)


async def status(world: World, sync_id: str = "") -> pb.SyncStatus:
    reply = await world.stub.GetSyncStatus(
        pb.GetSyncStatusRequest(district_id=world.district_id, sync_id=sync_id), timeout=5
    )
    return reply.status


async def until_finished(
    world: World, sync_id: str = "", seconds: float = 20.0
) -> tuple[pb.SyncStatus, list[pb.SyncStatus]]:
    """Poll the job until it ends; returns its last status and every one seen on the way."""
    seen: list[pb.SyncStatus] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = await status(world, sync_id)
        seen.append(got)
        if got.phase in (pb.SYNC_PHASE_DONE, pb.SYNC_PHASE_FAILED):
            return got, seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"the sync did not end within {seconds} s: {seen[-1]}")


async def last_sync_error(world: World) -> str:
    reply = await world.stub.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id))
    return reply.district.last_sync_error


class TestJobs:
    async def test_sync_outlives_a_caller_deadline_shorter_than_the_sync(
        self, world: World, clever: CleverSimulator
    ) -> None:
        """The caller's deadline passes long before the slow roster is read: the caller hears
        the sync is still running (with its id), and the sync finishes anyway."""
        await clever_district(world, clever)
        clever.faults.latency = 0.3  # about eight requests: over two seconds
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.stub.SyncRoster(
                pb.SyncRosterRequest(district_id=world.district_id), timeout=1.0
            )
        got = failure(err.value)
        assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "SYNC_STILL_RUNNING")
        sync_id = got.metadata["sync_id"]
        assert (await status(world, sync_id)).phase == pb.SYNC_PHASE_READING
        final, _ = await until_finished(world, sync_id)
        n = len(world.students)
        assert (final.phase, final.full, final.created, final.students_done) == (
            pb.SYNC_PHASE_DONE,
            True,
            n,
            n,
        )
        assert (final.prefetched, final.unresolved, final.error) == (n, 0, "")
        assert final.HasField("finished_at")
        assert (await status(world)).sync_id == sync_id  # the latest, without an id
        ps = world.student(200, 1)
        assert (await world.resolve(student_number=ps.student_number)).powerschool_id == ps.id

    async def test_waiting_caller_gets_the_counts_and_the_sync_id(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        result = await world.stub.SyncRoster(
            pb.SyncRosterRequest(district_id=world.district_id), timeout=20
        )
        assert (result.created, result.prefetched) == (len(world.students),) * 2
        job = await status(world, result.sync_id)
        assert (job.phase, job.created) == (pb.SYNC_PHASE_DONE, result.created)

    async def test_background_answers_at_once_then_progress_then_done(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        clever.faults.latency = 0.2
        started = time.monotonic()
        reply = await world.stub.SyncRoster(
            pb.SyncRosterRequest(district_id=world.district_id, background=True), timeout=5
        )
        assert time.monotonic() - started < 0.5  # less than two of the roster's answers
        assert reply.sync_id
        assert reply.created == 0
        again = await world.stub.SyncRoster(
            pb.SyncRosterRequest(district_id=world.district_id, background=True), timeout=5
        )
        assert again.sync_id == reply.sync_id  # joined the running job, not a second sync
        final, seen = await until_finished(world, reply.sync_id)
        reading = [s.students_done for s in seen if s.phase == pb.SYNC_PHASE_READING]
        assert len(set(reading)) >= 3, reading  # students done rose page by page
        assert reading == sorted(reading)
        pages = [s.pages_done for s in seen]
        assert pages == sorted(pages)
        n = len(world.students)
        assert (final.phase, final.created, final.students_done) == (pb.SYNC_PHASE_DONE, n, n)
        assert final.pages_done == -(-n // PAGE)

    async def test_failed_sync_is_failed_with_the_error_and_last_sync_error(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        await clever.stop()  # the roster service is down
        with stamina.set_testing(True, attempts=2):
            reply = await world.stub.SyncRoster(
                pb.SyncRosterRequest(district_id=world.district_id, background=True)
            )
            final, _ = await until_finished(world, reply.sync_id)
        assert (final.phase, final.error_reason) == (pb.SYNC_PHASE_FAILED, "ROSTER_UNAVAILABLE")
        assert "Clever unreachable" in final.error
        assert final.HasField("finished_at")
        assert "Clever unreachable" in await last_sync_error(world)

    async def test_scheduled_sync_that_fails_records_last_sync_error(
        self, world: World, clever: CleverSimulator
    ) -> None:
        clever.faults.outage = True
        with stamina.set_testing(True, attempts=2):
            await clever_district(world, clever, sync_interval=Duration(seconds=3600))
            for _ in range(100):
                if error := await last_sync_error(world):
                    break
                await asyncio.sleep(0.1)
        assert "503" in error
        # The district's error is written as the sync fails; the job row right after.
        for _ in range(50):
            job = await status(world)
            if job.phase == pb.SYNC_PHASE_FAILED:
                break
            await asyncio.sleep(0.1)
        assert (job.phase, job.error_reason) == (pb.SYNC_PHASE_FAILED, "ROSTER_UNAVAILABLE")

    async def test_a_stopping_service_records_the_sync_as_interrupted(
        self, world: World, clever: CleverSimulator, database_url: str
    ) -> None:
        other = Server(fast_settings(database_url, run_scheduler=False))
        await other.start()
        try:
            async with authed_channel(f"127.0.0.1:{other.port}") as channel:
                there = World(
                    writeback_pb2_grpc.WritebackServiceStub(channel), world.sim, world.district_id
                )
                await clever_district(there, clever)
                clever.faults.latency = 2.0
                reply = await there.stub.SyncRoster(
                    pb.SyncRosterRequest(district_id=world.district_id, background=True)
                )
        finally:
            await other.stop()
        job = await status(world, reply.sync_id)  # read through another process
        assert (job.phase, job.error_reason) == (pb.SYNC_PHASE_FAILED, "SYNC_INTERRUPTED")
        assert "interrupted" in await last_sync_error(world)

    async def test_bad_and_unknown_sync_ids(self, world: World, clever: CleverSimulator) -> None:
        await clever_district(world, clever)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.stub.GetSyncStatus(
                pb.GetSyncStatusRequest(district_id=world.district_id, sync_id="nope")
            )
        got = failure(err.value)
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "sync_id" in got.violations
        for sync_id in (str(uuid.uuid4()), ""):  # never synced: no latest either
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await status(world, sync_id)
            got = failure(err.value)
            assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "SYNC_NOT_FOUND")


async def cli(port: int | None, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients",
        "--target",
        f"127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


_PROGRESS = re.compile(r"sync \w+ (\w+): ([\d,]+) pages, ([\d,]+) students")


def progress(stderr: str) -> list[tuple[str, int, int]]:
    """The CLI's progress lines as (phase, pages, students)."""
    return [
        (m[1], int(m[2].replace(",", "")), int(m[3].replace(",", "")))
        for m in _PROGRESS.finditer(stderr)
    ]


class TestCli:
    async def test_sync_wait_shows_progress_and_exits_0(
        self, world: World, clever: CleverSimulator, paged: Server
    ) -> None:
        await clever_district(world, clever)
        clever.faults.latency = 0.3
        code, out, err = await cli(paged.port, "sync", world.district_id, "--full", "--wait")
        assert code == 0, err
        n = len(world.students)
        lines = progress(err)
        assert [p for p in lines if p[0] == "reading" and 0 < p[2] < n], err
        assert lines[-1] == ("done", -(-n // PAGE), n)
        final = json.loads(out)
        assert (final["phase"], final["created"]) == ("SYNC_PHASE_DONE", n)

    async def test_sync_wait_exits_1_when_the_sync_fails(
        self, world: World, clever: CleverSimulator, paged: Server
    ) -> None:
        await clever_district(world, clever)
        clever.faults.outage = True
        with stamina.set_testing(True, attempts=2):
            code, out, err = await cli(paged.port, "sync", world.district_id, "--wait")
        assert code == 1
        assert json.loads(out)["phase"] == "SYNC_PHASE_FAILED"
        assert "sync failed: ROSTER_UNAVAILABLE" in err

    async def test_sync_without_wait_prints_the_sync_id(
        self, world: World, clever: CleverSimulator, paged: Server
    ) -> None:
        await clever_district(world, clever)
        code, out, _ = await cli(paged.port, "sync", world.district_id)
        assert code == 0
        sync_id = json.loads(out)["sync_id"]
        final, _ = await until_finished(world, sync_id)
        assert final.created == len(world.students)


# --- 100,000 students from the CLI with the defaults ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_process(
    module: str, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def listening(port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    return check


@pytest.mark.slow
async def test_hundred_thousand_students_sync_from_the_cli_with_the_defaults(
    database_url: str,
) -> None:
    """The issue's case: 100,000 Clever students, `sync --wait` with the CLI's default 10 s
    deadline per call, a service with default settings in its own process."""
    per_school = 50_000
    ps_port, clever_port, grpc_port = free_port(), free_port(), free_port()
    sims = [
        await start_process(
            "simulators.powerschool", "--port", str(ps_port),
            "--students-per-school", str(per_school),
        ),
        await start_process(
            "simulators.clever", "--port", str(clever_port),
            "--students-per-school", str(per_school),
        ),
    ]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_PORT": str(grpc_port)}
    env["SYNC_SCHEDULER"] = "false"
    service = await start_process("service", env=env)
    procs = [*sims, service]
    try:
        for port in (ps_port, clever_port, grpc_port):
            await until(listening(port), 60)
        did = f"big-{uuid.uuid4().hex[:8]}"
        async with authed_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            await stub.UpsertDistrict(
                pb.UpsertDistrictRequest(
                    district=pb.District(
                        district_id=did,
                        roster_source=pb.ROSTER_SOURCE_CLEVER,
                        timezone=TZ,
                        powerschool=pb.PowerSchoolConnection(
                            base_url=f"http://127.0.0.1:{ps_port}",
                            client_id="sim-client",
                            client_secret="sim-secret",
                        ),
                        clever=pb.CleverConnection(
                            base_url=f"http://127.0.0.1:{clever_port}",
                            client_id="clever-client",
                            client_secret="clever-secret",
                            clever_district_id="5f0c1e7e5e0d157100000001",
                        ),
                        schools=[
                            pb.School(
                                school_number=n, roster_school_id=school_roster_id("clever", n)
                            )
                            for n in (100, 200)
                        ],
                    )
                ),
                timeout=10,
            )
        started = time.monotonic()
        code, out, err = await cli(grpc_port, "sync", did, "--wait")
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0, err
    assert "DEADLINE_EXCEEDED" not in err
    lines = progress(err)
    reading = [p[2] for p in lines if p[0] == "reading"]
    assert len(reading) >= 3, err  # a moving display
    assert reading == sorted(reading)
    assert lines[-1][::2] == ("done", 2 * per_school)
    final = json.loads(out)
    assert (final["created"], final["prefetched"]) == (2 * per_school,) * 2
    assert elapsed < 60


@pytest.mark.slow
async def test_a_killed_process_sync_shows_interrupted(
    world: World, clever: CleverSimulator, database_url: str
) -> None:
    """SIGKILL leaves the job unfinished in the table; its lock died with the process, so
    another process reports it failed instead of reading forever."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_PORT": str(port)}
    env["SYNC_SCHEDULER"] = "false"
    proc = await start_process("service", env=env)
    try:
        await until(listening(port), 60)
        async with authed_channel(f"127.0.0.1:{port}") as channel:
            there = World(
                writeback_pb2_grpc.WritebackServiceStub(channel), world.sim, world.district_id
            )
            await clever_district(there, clever)
            clever.faults.latency = 5.0
            reply = await there.stub.SyncRoster(
                pb.SyncRosterRequest(district_id=world.district_id, background=True), timeout=10
            )
            assert (await status(there, reply.sync_id)).phase == pb.SYNC_PHASE_READING
    finally:
        proc.kill()
        await proc.wait()
    job, _ = await until_finished(world, reply.sync_id, seconds=10)
    assert (job.phase, job.error_reason) == (pb.SYNC_PHASE_FAILED, "SYNC_INTERRUPTED")
