"""Deliberately slow delivery tests (marker ``slow``, run by ``make test``): a 30-second
PowerSchool outage under 1,000 check-ins, a SIGKILL in the middle of 500 deliveries, and
three service processes sharing one database."""

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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from tests.conftest import LogCapture
from tests.helpers import FAST, World, authed_channel, fast_settings, local, ts

pytestmark = pytest.mark.slow

WRITES = "/ws/attendance/daily_time"
_TAG = re.compile(r"\[writeback:([0-9a-f-]{36})\]")


def write_counts(sim: PowerSchoolSimulator) -> Counter[str]:
    """How many accepted writes PowerSchool saw per record (by the record's tag)."""
    counts: Counter[str] = Counter()
    for call in sim.calls:
        if call.path == WRITES and call.status == 200:
            comment = call.body["record"][0]["tables"]["attendance"]["att_comment"]
            counts.update(set(_TAG.findall(comment)))
    return counts


def assert_each_written_once(sim: PowerSchoolSimulator, record_ids: list[str]) -> None:
    """Every record reached PowerSchool in exactly one accepted write."""
    counts = write_counts(sim)
    assert set(counts) == set(record_ids)
    assert set(counts.values()) == {1}, Counter(counts.values())


@pytest.fixture
async def big_sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(demo_dataset(students_per_school=500))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def prepare(world: World, max_in_flight: int = 32) -> None:
    """A district allowed 32 calls in flight, its roster imported and resolved."""
    await world.setup(max_in_flight=max_in_flight, max_requests_per_second=1000)
    sem = asyncio.Semaphore(32)

    async def resolve(dcid: int) -> None:
        async with sem:
            await world.resolve(sis_id=str(dcid))

    await asyncio.gather(*(resolve(s.dcid) for s in world.students))


async def submit_all(
    stubs: list[writeback_pb2_grpc.WritebackServiceStub], world: World, count: int, first: int = 0
) -> list[str]:
    """``count`` late check-ins of the students from index ``first`` on (districts sharing a
    simulator use different students, or they would find each other's rows)."""
    day = world.school_day()
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> str:
        student = world.students[first + i]
        async with sem:
            response = await stubs[i % len(stubs)].SubmitAttendance(
                pb.SubmitAttendanceRequest(
                    district_id=world.district_id,
                    idempotency_key=f"load-{i}",
                    student=pb.StudentKey(sis_id=str(student.dcid)),
                    event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
                    occurred_at=ts(local(day, 8, i % 60)),
                    reason="Bus late",
                ),
                timeout=30,
            )
        return response.record.record_id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def stats(world: World) -> pb.DeliveryStats:
    response = await world.stub.GetDeliveryStats(
        pb.GetDeliveryStatsRequest(district_id=world.district_id)
    )
    return response.stats


async def until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """``python -m service`` in its own process, configured like the test server."""

    def __init__(self, database_url: str, log: Path, **overrides: str) -> None:
        self.port = free_port()
        self.log = log
        env = {key.upper(): str(value) for key, value in FAST.items() if key != "grpc_port"}
        self.env = {
            **os.environ,
            **env,
            "DATABASE_URL": database_url,
            "GRPC_PORT": str(self.port),
            "DELIVERY_LEASE_SECONDS": "3",
            "SYNC_POLL_SECONDS": "3600",
            **overrides,
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", env=self.env, stderr=out
            )
        async with authed_channel(f"127.0.0.1:{self.port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), timeout=30)

    def events(self, name: str) -> list[dict[str, object]]:
        """The process's log lines with this event name."""
        lines = [line for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [entry for entry in map(json.loads, lines) if entry.get("event") == name]

    def deliveries(self) -> int:
        return len(self.events("attendance_delivery"))


async def test_thousand_check_ins_survive_a_thirty_second_outage(
    stub: writeback_pb2_grpc.WritebackServiceStub, big_sim: PowerSchoolSimulator
) -> None:
    world = World(stub, big_sim)
    await prepare(world)
    big_sim.faults.outage_until = time.time() + 30
    started = time.monotonic()
    record_ids = await submit_all([stub], world, 1000)
    assert (await stats(world)).written_last_hour == 0

    async def all_written() -> bool:
        s = await stats(world)
        return s.written_last_hour == 1000 and s.pending == 0

    await until(all_written, 150)
    assert time.monotonic() - started >= 30
    assert_each_written_once(big_sim, record_ids)
    assert len(big_sim.attendance_rows()) == 1000


async def test_sigkill_mid_delivery_then_restart_writes_each_once(
    big_sim: PowerSchoolSimulator, own_database: str, tmp_path: Path
) -> None:
    # A database of its own: the session's in-process service would otherwise take over the
    # killed process's jobs too, and the restarted one might find none left.
    first = ServiceProcess(own_database, tmp_path / "first.log")
    second = ServiceProcess(own_database, tmp_path / "second.log")
    await first.start()
    try:
        async with authed_channel(f"127.0.0.1:{first.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), big_sim)
            await prepare(world)
            big_sim.faults.latency = 0.05
            record_ids = await submit_all([world.stub], world, 500)

            async def some_written() -> bool:
                return (await stats(world)).written_last_hour >= 50

            await until(some_written, 60)
            written_at_kill = (await stats(world)).written_last_hour
        await first.kill()
        assert written_at_kill < 500, "delivery finished before the kill; nothing was tested"
        await second.start()
        async with authed_channel(f"127.0.0.1:{second.port}") as channel:
            world = World(
                writeback_pb2_grpc.WritebackServiceStub(channel), big_sim, world.district_id
            )

            async def all_written() -> bool:
                s = await stats(world)
                return s.written_last_hour == 500 and s.pending == 0

            await until(all_written, 120)
    finally:
        await first.stop()
        await second.stop()
    await asyncio.sleep(0.5)
    assert_each_written_once(big_sim, record_ids)
    assert second.deliveries() > 0


async def test_three_processes_share_the_work_without_duplicates(
    big_sim: PowerSchoolSimulator, own_database: str, tmp_path: Path
) -> None:
    # Its own database: every job goes to one of the three, none to the session's service.
    procs = [ServiceProcess(own_database, tmp_path / f"p{i}.log") for i in range(3)]
    await asyncio.gather(*(p.start() for p in procs))
    channels = [authed_channel(f"127.0.0.1:{p.port}") for p in procs]
    try:
        stubs = [writeback_pb2_grpc.WritebackServiceStub(c) for c in channels]
        world = World(stubs[0], big_sim)
        await prepare(world)
        big_sim.faults.latency = 0.02
        record_ids = await submit_all(stubs, world, 1000)

        async def all_written() -> bool:
            s = await stats(world)
            return s.written_last_hour == 1000 and s.pending == 0

        await until(all_written, 120)
    finally:
        for c in channels:
            await c.close()
        for p in procs:
            await p.stop()
    assert_each_written_once(big_sim, record_ids)
    assert all(p.deliveries() > 0 for p in procs), [p.deliveries() for p in procs]


async def test_slow_writes_outlive_the_lease_and_are_still_written_once(
    big_sim: PowerSchoolSimulator, own_database: str, tmp_path: Path
) -> None:
    """Leases of 2 s, PowerSchool taking 6 s to answer each write, two processes: renewal
    keeps each job with the attempt that runs it, so no second process writes it again."""
    slow = {"DELIVERY_LEASE_SECONDS": "2", "POWERSCHOOL_TIMEOUT": "15"}
    procs = [ServiceProcess(own_database, tmp_path / f"p{i}.log", **slow) for i in range(2)]
    await asyncio.gather(*(p.start() for p in procs))
    channels = [authed_channel(f"127.0.0.1:{p.port}") for p in procs]
    try:
        stubs = [writeback_pb2_grpc.WritebackServiceStub(c) for c in channels]
        world = World(stubs[0], big_sim)
        await world.setup(max_in_flight=64, max_requests_per_second=1000)
        big_sim.faults.write_latency = 6.0
        record_ids = await submit_all(stubs, world, 200)

        async def all_written() -> bool:
            s = await stats(world)
            return s.written_last_hour == 200 and s.pending == 0

        await until(all_written, 150)
    finally:
        for c in channels:
            await c.close()
        for p in procs:
            await p.stop()
    assert_each_written_once(big_sim, record_ids)
    assert sum(1 for call in big_sim.calls if call.path == WRITES) == 200
    assert len(big_sim.attendance_rows()) == 200
    assert all(p.deliveries() > 0 for p in procs), [p.deliveries() for p in procs]


async def test_sigterm_hands_deliveries_in_flight_to_the_other_process_at_once(
    big_sim: PowerSchoolSimulator, own_database: str, tmp_path: Path
) -> None:
    """100 deliveries in flight in one process (two districts of 50; leases of 60 s) when it
    gets SIGTERM: after its 1 s grace it hands them back, and the other process finishes
    them within 5 s of its exit, not after the leases expire; each is written once."""
    common = {"DELIVERY_LEASE_SECONDS": "60", "POWERSCHOOL_TIMEOUT": "60"}
    first = ServiceProcess(
        own_database,
        tmp_path / "first.log",
        **common,
        SHUTDOWN_GRACE_SECONDS="1",
        WORKER_CONCURRENCY="128",
        POWERSCHOOL_CONNECTIONS="256",
        POWERSCHOOL_CONNECTIONS_PER_HOST="128",
    )
    second = ServiceProcess(own_database, tmp_path / "second.log", **common)
    await first.start()
    try:
        async with authed_channel(f"127.0.0.1:{first.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            worlds = [World(stub, big_sim), World(stub, big_sim)]
            for world in worlds:
                await prepare(world, max_in_flight=64)
            # Every PowerSchool call hangs: the attempts are stuck before their writes.
            big_sim.faults.latency = 30.0
            record_ids = [
                r
                for n, world in enumerate(worlds)
                for r in await submit_all([stub], world, 50, 50 * n)
            ]

            async def all_in_flight() -> bool:
                # Each district's 50 are one batch of one school's day: all 100 jobs
                # claimed, and each batch stuck on its shared read.
                conn = await asyncpg.connect(own_database)
                try:
                    claimed = await conn.fetchval(
                        "SELECT count(*) FROM delivery_jobs WHERE lease_owner IS NOT NULL"
                    )
                finally:
                    await conn.close()
                return claimed == 100 and big_sim.in_flight >= 2

            await until(all_in_flight, 30)
        await second.start()
        big_sim.faults.latency = 0.0
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(first.proc.wait(), timeout=30)
        exited = time.monotonic()
        async with authed_channel(f"127.0.0.1:{second.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)

            async def all_written() -> bool:
                for world in worlds:
                    s = await stats(World(stub, big_sim, world.district_id))
                    if s.written_last_hour != 50 or s.pending != 0:
                        return False
                return True

            await until(all_written, 60)
            took = time.monotonic() - exited
    finally:
        await first.stop()
        await second.stop()
    assert first.proc.returncode == 0
    assert [e["jobs"] for e in first.events("deliveries_handed_over")] == [100]
    assert took < 5, f"the other process took {took:.1f} s after the first exited"
    assert_each_written_once(big_sim, record_ids)
    assert second.deliveries() == 100


async def test_an_attempt_that_lost_its_lease_does_not_write(
    own_database: str, logs: LogCapture
) -> None:
    """Another claim takes the job while the attempt waits on PowerSchool's read: the next
    renewal finds the lease gone, and the attempt neither sends its write nor records an
    outcome (the new owner's attempt will)."""
    server = Server(
        fast_settings(own_database, delivery_lease_seconds=1.5, powerschool_timeout=10.0)
    )
    await server.start()
    simulator = PowerSchoolSimulator(demo_dataset(students_per_school=10))
    await simulator.start()
    mark = logs.tell()
    try:
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), simulator)
            await world.setup()
            simulator.faults.latency = 3.0
            record = (
                await world.submit(
                    world.student(), local(world.school_day(), 8, 5), wait_for_writeback=False
                )
            ).record

            async def calling() -> bool:
                return simulator.in_flight > 0

            await until(calling, 10)
            conn = await asyncpg.connect(own_database)
            try:
                await conn.execute(
                    "UPDATE delivery_jobs SET lease_owner = 'another-process', "
                    "lease_token = gen_random_uuid(), lease_until = now() + interval '60 s' "
                    "WHERE record_id = $1",
                    uuid.UUID(record.record_id),
                )
            finally:
                await conn.close()
            await asyncio.sleep(1.0)  # more than a renewal period (lease / 3)
            simulator.faults.latency = 0.0
            await asyncio.sleep(4.0)  # the attempt's PowerSchool reads have finished
            after = await world.record(record.record_id)
    finally:
        await simulator.stop()
        await server.stop()
    assert simulator.count(WRITES) == 0
    assert after.state == pb.ATTENDANCE_STATE_PENDING
    assert list(after.history) == []
    events = [json.loads(line)["event"] for line in logs.since(mark).splitlines()]
    assert "delivery_lease_lost" in events
    assert "delivery_superseded" in events
