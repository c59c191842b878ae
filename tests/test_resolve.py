"""ResolveStudent end to end: roster key -> roster student -> PowerSchool STUDENTS.ID."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from tests.helpers import World, authed_channel, failure, fast_settings, roster_id_of

STUDENTS_TABLE = "/ws/schema/table/students"


class TestDcidMode:
    async def test_dcid_resolves_to_students_id(self, world: World) -> None:
        """The roster's Student ID (a DCID) comes back with PowerSchool's STUDENTS.ID,
        read from tables.students.id, not the outer record id (which is the DCID)."""
        await world.setup()
        ps = world.student()
        student = await world.resolve(sis_id=str(ps.dcid))
        assert student.powerschool_id == ps.id
        assert student.dcid == ps.dcid
        assert student.powerschool_id != student.dcid
        assert student.school_number == ps.schoolid
        [call] = [c for c in world.sim.calls if c.path == STUDENTS_TABLE]
        assert call.query["q"] == f"dcid=={ps.dcid}"

    async def test_students_id_is_fetched_once_and_kept(self, world: World) -> None:
        """Later resolves, by any key, are answered from Postgres without PowerSchool."""
        await world.setup()
        ps = world.student()
        await world.resolve(sis_id=str(ps.dcid))
        await world.resolve(sis_id=str(ps.dcid))
        await world.resolve(student_number=ps.student_number)
        await world.resolve(roster_id=roster_id_of(ps))
        await world.resolve(powerschool_id=ps.id)
        assert world.sim.count(STUDENTS_TABLE) == 1

    async def test_mapping_survives_a_restart(self, world: World, database_url: str) -> None:
        """The STUDENTS.ID is kept in Postgres: a new service process does not ask again."""
        await world.setup()
        ps = world.student()
        await world.resolve(sis_id=str(ps.dcid))
        fresh = Server(fast_settings(database_url))
        await fresh.start()
        try:
            async with authed_channel(f"127.0.0.1:{fresh.port}") as ch:
                other = World(
                    writeback_pb2_grpc.WritebackServiceStub(ch),
                    world.sim,
                    district_id=world.district_id,
                )
                student = await other.resolve(student_number=ps.student_number)
        finally:
            await fresh.stop()
        assert student.powerschool_id == ps.id
        assert world.sim.count(STUDENTS_TABLE) == 1

    async def test_concurrent_resolves_share_one_lookup(self, world: World) -> None:
        """Twenty simultaneous first resolves of one student cost one PowerSchool call."""
        await world.setup()
        ps = world.student()
        world.sim.faults.latency = 0.05
        results = await asyncio.gather(*(world.resolve(sis_id=str(ps.dcid)) for _ in range(20)))
        assert {r.powerschool_id for r in results} == {ps.id}
        assert world.sim.count(STUDENTS_TABLE) == 1

    async def test_one_caller_giving_up_does_not_fail_the_others(self, world: World) -> None:
        """The shared lookup belongs to no caller: a kiosk whose deadline passes must not
        cancel it for another kiosk waiting on the same student."""
        await world.setup()
        ps = world.student()
        world.sim.faults.latency = 0.6
        request = pb.ResolveStudentRequest(
            district_id=world.district_id, key=pb.StudentKey(sis_id=str(ps.dcid))
        )
        impatient = world.stub.ResolveStudent(request, timeout=0.2)
        patient = world.stub.ResolveStudent(request, timeout=10)
        results = await asyncio.gather(impatient, patient, return_exceptions=True)
        assert isinstance(results[0], grpc.aio.AioRpcError)
        assert results[0].code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert isinstance(results[1], pb.ResolveStudentResponse)
        assert results[1].student.powerschool_id == ps.id
        assert world.sim.count(STUDENTS_TABLE) == 1

    async def test_many_students_resolve_concurrently(self, world: World) -> None:
        """Different students resolve in parallel, each to its own STUDENTS.ID."""
        await world.setup()
        results = await asyncio.gather(*(world.resolve(sis_id=str(s.dcid)) for s in world.students))
        assert [r.powerschool_id for r in results] == [s.id for s in world.students]

    async def test_roster_carrying_students_id_is_not_found(self, world: World) -> None:
        """A Clever Student ID that actually carries STUDENTS.ID fails loudly in DCID mode
        instead of silently picking another student."""
        await world.setup(sis_field="id")
        ps = world.student()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.resolve(sis_id=str(ps.id))
        got = failure(err.value)
        assert got.code is grpc.StatusCode.NOT_FOUND
        assert got.reason == "STUDENT_NOT_IN_POWERSCHOOL"
        assert "DCID" in got.message


class TestStudentsIdMode:
    async def test_sis_id_is_verified_as_students_id(self, world: World) -> None:
        """ID_MODE_STUDENTS_ID: the roster's Student ID is STUDENTS.ID; it is verified with
        q=id== and the DCID comes back from PowerSchool."""
        await world.setup(sis_field="id", id_mode=pb.ID_MODE_STUDENTS_ID)
        ps = world.student(200)
        student = await world.resolve(sis_id=str(ps.id))
        assert (student.powerschool_id, student.dcid) == (ps.id, ps.dcid)
        [call] = [c for c in world.sim.calls if c.path == STUDENTS_TABLE]
        assert call.query["q"] == f"id=={ps.id}"


class TestKeys:
    @pytest.mark.parametrize("kind", ["sis_id", "student_number", "roster_id", "powerschool_id"])
    async def test_each_key_finds_the_student(self, world: World, kind: str) -> None:
        """Every StudentKey variant names the same student, even before any resolve."""
        await world.setup()
        ps = world.student(200, 3)
        value = {
            "sis_id": str(ps.dcid),
            "student_number": ps.student_number,
            "roster_id": roster_id_of(ps),
            "powerschool_id": ps.id,
        }[kind]
        student = await world.resolve(**{kind: value})
        assert (student.roster_id, student.powerschool_id) == (roster_id_of(ps), ps.id)

    async def test_unknown_student_number_is_not_found(self, world: World) -> None:
        await world.setup()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.resolve(student_number="000000")
        assert failure(err.value).code is grpc.StatusCode.NOT_FOUND
        assert world.sim.count("/ws/") == 0


class TestVisibleId:
    async def test_clever_defaults_to_student_id(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        assert (await world.resolve(sis_id=str(ps.dcid))).visible_student_id == str(ps.dcid)

    async def test_clever_student_number_option(self, world: World) -> None:
        """Visible Student ID = Student Number: staff see the preferred number, not a DCID."""
        await world.setup(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        ps = world.student()
        student = await world.resolve(sis_id=str(ps.dcid))
        assert student.visible_student_id == ps.student_number

    async def test_classlink_always_shows_identifier(self, world: World) -> None:
        """ClassLink: the identifier is the visible ID whatever the option says."""
        await world.setup(
            roster_source=pb.ROSTER_SOURCE_CLASSLINK,
            visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_ID,
        )
        ps = world.student()
        student = await world.resolve(sis_id=str(ps.dcid))
        assert student.visible_student_id == ps.student_number
