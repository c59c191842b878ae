"""Resolved students are served from each process's memory, and no process serves one after
it changed: a change made through any process is seen by the others within a second, and a
LISTEN connection that was lost (notifications possibly missed) drops what was kept. A
student's first STUDENTS.ID lookup drops nothing, since nothing kept holds that student yet;
a lookup that gives a student an ID another student holds, or changes a student's IDs, is
announced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.store import StudentStore
from service.store.changes import StudentChanges
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


class _Served:
    """A service of its own with the world's students imported (none resolved yet), a
    Postgres connection to change rows behind its back, and the change notifications sent."""

    def __init__(self, database: str, sim: PowerSchoolSimulator) -> None:
        self.database = database
        self._sim = sim
        self.notified: list[str] = []

    async def __aenter__(self) -> _Served:
        self.server = Server(fast_settings(self.database))
        await self.server.start()
        self.db = await asyncpg.connect(self.database)
        await self.db.add_listener(
            "writeback_students", lambda *args: self.notified.append(args[-1])
        )
        self.channel = authed_channel(f"127.0.0.1:{self.server.port}")
        self.world = World(writeback_pb2_grpc.WritebackServiceStub(self.channel), self._sim)
        await self.world.setup()
        await self.settled()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.db.close()
        await self.server.stop()

    async def settled(self) -> list[str]:
        """The notifications so far, once those already sent have had time to arrive."""
        await asyncio.sleep(0.3)
        return list(self.notified)

    async def reprovision(self, index: int) -> str:
        """The roster re-provisions student ``index`` under a new roster ID (the same DCID):
        the old record is switched off and keeps its STUDENTS.ID. Returns the new ID."""
        roster_id = f"clever-reprovisioned-{index}"
        await self.world.stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id=self.world.district_id,
                students=[roster_student(self.world, index, roster_id=roster_id)],
            )
        )
        return roster_id

    async def behind_its_back(self, student: object, **columns: object) -> None:
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=3))
        await self.db.execute(
            f"UPDATE students SET {sets} WHERE district_id = $1 AND roster_id = $2",  # noqa: S608
            self.world.district_id,
            roster_id_of(student),  # type: ignore[arg-type]
            *columns.values(),
        )


@pytest.fixture
async def served(own_database: str, sim: PowerSchoolSimulator) -> AsyncIterator[_Served]:
    async with _Served(own_database, sim) as it:
        yield it


async def test_a_first_resolution_leaves_what_every_process_keeps(served: _Served) -> None:
    world = served.world
    first, second = world.student(index=3), world.student(index=4)
    before = await served.settled()
    # Looked up in PowerSchool, and kept by the call that looked it up.
    assert (await world.resolve(roster_id=roster_id_of(first))).powerschool_id == first.id
    await served.behind_its_back(first, student_number="990003")
    # Another student's first lookup is no change to anything kept: no process is told
    # to drop the district's students, and the first student is still served from memory.
    assert (await world.resolve(roster_id=roster_id_of(second))).powerschool_id == second.id
    assert await served.settled() == before
    found = await world.resolve(roster_id=roster_id_of(first))
    assert found.student_number == first.student_number


async def test_a_student_id_another_student_holds_is_announced(served: _Served) -> None:
    world = served.world
    student = world.student(index=5)
    old = await world.resolve(roster_id=roster_id_of(student))
    # The old record, switched off, still holds the STUDENTS.ID: a lookup by it answers the
    # old record, from memory once asked.
    new_id = await served.reprovision(5)
    by_id = await world.resolve(powerschool_id=old.powerschool_id)
    assert (by_id.roster_id, by_id.active) == (old.roster_id, False)
    await world.resolve(powerschool_id=old.powerschool_id)
    before = await served.settled()

    # The new record's first lookup gives it the same STUDENTS.ID: every process is told.
    new = await world.resolve(roster_id=new_id)
    assert new.powerschool_id == old.powerschool_id
    assert await served.settled() == [*before, world.district_id]
    by_id = await world.resolve(powerschool_id=old.powerschool_id)
    assert (by_id.roster_id, by_id.active) == (new_id, True)


async def test_changed_keys_from_powerschool_are_announced(served: _Served) -> None:
    world = served.world
    student = world.student(index=6)
    key = {"roster_id": roster_id_of(student)}
    await world.resolve(**key)
    # A STUDENTS.ID gone wrong in Postgres (and a new number to tell a reread by), kept
    # right in memory.
    await served.behind_its_back(student, powerschool_id=999_999, student_number="990006")
    assert (await world.resolve(**key)).student_number == student.student_number
    before = await served.settled()

    # A lookup by the right STUDENTS.ID finds nobody holding it, asks PowerSchool, and
    # saves it over the wrong one: a change to a kept student, so every process is told.
    found = await world.resolve(powerschool_id=student.id)
    assert found.roster_id == roster_id_of(student)
    assert await served.settled() == [*before, world.district_id]
    reread = await world.resolve(**key)
    assert (reread.student_number, reread.powerschool_id) == ("990006", student.id)


async def test_a_prefetch_announces_only_a_student_id_another_student_holds(
    served: _Served,
) -> None:
    world = served.world
    pool = await asyncpg.create_pool(served.database, min_size=1, max_size=1)
    store = StudentStore(pool, StudentChanges(served.database))
    try:
        fresh, held = world.student(index=7), world.student(index=8)
        before = await served.settled()
        await store.save_powerschool_ids_batch(
            world.district_id, [(str(fresh.dcid), fresh.dcid, fresh.id)]
        )
        assert await served.settled() == before
        assert (await world.resolve(roster_id=roster_id_of(fresh))).powerschool_id == fresh.id

        await world.resolve(roster_id=roster_id_of(held))
        await served.reprovision(8)
        before = await served.settled()
        await store.save_powerschool_ids_batch(
            world.district_id, [(str(held.dcid), held.dcid, held.id)]
        )
        assert await served.settled() == [*before, world.district_id]
    finally:
        await pool.close()
