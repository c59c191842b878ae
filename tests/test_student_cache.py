"""Resolved students are served from each process's memory, and no process serves one after
it changed: a change made through any process is seen by the others within a second, and a
LISTEN connection that was lost (notifications possibly missed) drops what was kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import World, authed_channel, fast_settings, roster_id_of, roster_school_of
from tests.test_delivery_slow import ServiceProcess


async def until(check: Callable[[], Awaitable[bool]], seconds: float) -> float:
    """Seconds until ``check()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def roster_student(world: World, index: int, **changes: object) -> pb.RosterStudent:
    s = world.student(index=index)
    fields: dict[str, object] = {
        "roster_id": roster_id_of(s),
        "sis_id": str(s.dcid),
        "student_number": s.student_number,
        "roster_school_id": roster_school_of(s.schoolid),
        "active": True,
    }
    fields.update(changes)
    return pb.RosterStudent(**fields)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_a_change_through_one_process_is_seen_by_another_within_a_second(
    own_database: str, sim: PowerSchoolSimulator, tmp_path: Path
) -> None:
    # One process on uvloop (the default), one on asyncio's loop: both serve the same way.
    first = ServiceProcess(own_database, tmp_path / "first.log")
    second = ServiceProcess(own_database, tmp_path / "second.log", UVLOOP="false")
    await asyncio.gather(first.start(), second.start())
    try:
        async with (
            authed_channel(f"127.0.0.1:{first.port}") as one,
            authed_channel(f"127.0.0.1:{second.port}") as two,
        ):
            world = World(writeback_pb2_grpc.WritebackServiceStub(one), sim)
            other = World(writeback_pb2_grpc.WritebackServiceStub(two), sim, world.district_id)
            await world.setup()
            student = world.student(index=0)
            for w in (world, other, world, other):  # resolved, then answered from memory
                found = await w.resolve(roster_id=roster_id_of(student))
                assert found.student_number == student.student_number
                await w.resolve(student_number=student.student_number)

            # A new student number through the first process.
            await world.stub.ImportStudents(
                pb.ImportStudentsRequest(
                    district_id=world.district_id,
                    students=[roster_student(world, 0, student_number="990001")],
                )
            )

            async def renumbered() -> bool:
                found = await other.resolve(roster_id=roster_id_of(student))
                return found.student_number == "990001"

            await until(renumbered, 1.0)
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await other.resolve(student_number=student.student_number)
            assert gone.value.code() is grpc.StatusCode.NOT_FOUND

            # A deactivation through the first process.
            await other.resolve(roster_id=roster_id_of(student))
            await world.stub.ImportStudents(
                pb.ImportStudentsRequest(
                    district_id=world.district_id,
                    students=[roster_student(world, 0, student_number="990001", active=False)],
                )
            )

            async def deactivated() -> bool:
                return not (await other.resolve(roster_id=roster_id_of(student))).active

            await until(deactivated, 1.0)
    finally:
        await asyncio.gather(first.stop(), second.stop())
    assert [e["event_loop"] for e in first.events("service_started")] == ["uvloop"]
    assert [e["event_loop"] for e in second.events("service_started")] == ["asyncio"]


async def test_what_was_kept_is_dropped_when_the_listen_connection_comes_back(
    own_database: str, sim: PowerSchoolSimulator
) -> None:
    server = Server(fast_settings(own_database))
    await server.start()
    db = await asyncpg.connect(own_database)
    try:
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup()
            student = world.student(index=1)
            key = {"roster_id": roster_id_of(student)}
            await world.resolve(**key)
            assert (await world.resolve(**key)).student_number == student.student_number

            # Changed behind the service's back: like a change whose NOTIFY was missed.
            await db.execute(
                "UPDATE students SET student_number = '990002' "
                "WHERE district_id = $1 AND roster_id = $2",
                world.district_id,
                roster_id_of(student),
            )
            # Served from memory, so not seen yet.
            assert (await world.resolve(**key)).student_number == student.student_number

            # The LISTEN connections are cut (a Postgres restart, a dropped socket).
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')"
            )

            async def reread() -> bool:
                return (await world.resolve(**key)).student_number == "990002"

            await until(reread, 10.0)
    finally:
        await db.close()
        await server.stop()
