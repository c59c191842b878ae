"""Records of one school and day delivered together share one read of the school's daily
rows: what each record decides (insert, merge, replace, leave alone) is what a read of its
own student's row would have decided, at about half the PowerSchool calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from simulators.powerschool import PowerSchoolSimulator, PSStudent, demo_dataset
from tests.helpers import World, local
from tests.test_delivery import rows_for, settled, teacher_row

READS = "/ws/schema/table/attendance"
WRITES = "/ws/attendance/daily_time"
HOLD = 3.0


@pytest.fixture
async def sim30() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(demo_dataset(students_per_school=30))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def world30(stub: writeback_pb2_grpc.WritebackServiceStub, sim30: PowerSchoolSimulator) -> World:
    return World(stub, sim30)


async def prepared(world: World, students: list[PSStudent]) -> None:
    """The district, STUDENTS.IDs and every cache warm (one record of school 100 delivered)."""
    await world.setup(max_requests_per_second=1000)
    for s in students:
        await world.resolve(sis_id=str(s.dcid))
    await world.submit(world.student(100, 29), local(world.school_day(), 7, 0))


async def hold_deliveries(world: World) -> None:
    """PowerSchool answers the next call 429 with Retry-After: the service holds back every
    call to it for HOLD seconds, so the records submitted meanwhile are claimed together."""
    world.sim.faults.queue.append((429, HOLD))
    held = await world.submit(
        world.student(200, 0), local(world.school_day(), 7, 30), wait_for_writeback=False
    )
    deadline = time.monotonic() + 10
    while (await world.record(held.record.record_id)).attempts < 1:
        assert time.monotonic() < deadline, "the held record was never tried"
        await asyncio.sleep(0.02)


def school_calls(world: World, school: int) -> list[str]:
    """The attendance reads and writes PowerSchool answered for one school's records."""
    ids = {str(s.id) for s in world.students if s.schoolid == school}
    out = []
    for c in world.sim.calls:
        if c.status != 200:
            continue
        q = c.query.get("q", "")
        if c.path == READS and (
            f"schoolid=={school};" in q or q.split(";")[0].removeprefix("studentid==") in ids
        ):
            out.append(READS)
        elif c.path == WRITES and c.body["record"][0]["tables"]["attendance"]["schoolid"] == str(
            school
        ):
            out.append(WRITES)
    return out


async def test_twenty_records_of_one_school_day_share_one_read(world30: World) -> None:
    world = world30
    students = [world.student(100, i) for i in range(20)]
    await prepared(world, students)
    world.sim.reset_calls()
    await hold_deliveries(world)
    day = world.school_day()
    responses = [
        await world.submit(s, local(day, 8, i), wait_for_writeback=False)
        for i, s in enumerate(students)
    ]
    records = [await settled(world, r.record.record_id, 30) for r in responses]
    assert {r.state for r in records} == {pb.ATTENDANCE_STATE_WRITTEN}
    calls = school_calls(world, 100)
    assert calls.count(WRITES) == 20
    # One page of the school's day instead of twenty reads of one student each.
    assert calls.count(READS) <= 2
    assert len(calls) <= 22
    for s, r in zip(students, records, strict=True):
        [row] = rows_for(world.sim, s)
        assert r.record_id in row["att_comment"]


async def test_one_batch_merges_replaces_and_leaves_alone_as_one_at_a_time(
    world30: World,
) -> None:
    """In one batch: a student's late check-in and early check-out merge into the combined
    code, a teacher's absence is replaced and kept, a teacher's excused tardy is left."""
    world = world30
    late_early, absent, excused, plain = (world.student(100, i) for i in range(4))
    await prepared(world, [late_early, absent, excused, plain])
    schools = list(world.district_pb().schools)
    schools[0].late_and_early_code = "LE"
    await world.stub.UpsertDistrict(
        pb.UpsertDistrictRequest(
            district=world.district_pb(schools=schools, max_requests_per_second=1000)
        )
    )
    day = world.school_day()
    teacher_row(world, absent, day, "A", "Absent in period 1")
    teacher_row(world, excused, day, "TE", "Excused tardy, note from parent")
    world.sim.reset_calls()
    await hold_deliveries(world)
    submitted = [
        await world.submit(s, local(day, 8, 40 + i), wait_for_writeback=False)
        for i, s in enumerate((late_early, absent, excused, plain))
    ]
    early = await world.submit(
        late_early,
        local(day, 13, 15),
        event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT,
        wait_for_writeback=False,
    )
    late_rec, absent_rec, excused_rec, plain_rec = [
        await settled(world, r.record.record_id, 30) for r in submitted
    ]
    early_rec = await settled(world, early.record.record_id, 30)
    # The batch did share a read of the school's day.
    assert any(f"schoolid==100;att_date=={day}" in c.query.get("q", "") for c in world.sim.calls)

    yearid = world.yearid(100, day)
    [row] = rows_for(world.sim, late_early)
    assert row["attendance_codeid"] == str(world.code_id(100, yearid, "LE"))
    assert late_rec.record_id in row["att_comment"]
    assert early_rec.record_id in row["att_comment"]
    assert early_rec.replaced_attendance_code == "T"

    assert absent_rec.state == pb.ATTENDANCE_STATE_WRITTEN
    assert (absent_rec.replaced_attendance_code, absent_rec.replaced_comment) == (
        "A",
        "Absent in period 1",
    )
    assert excused_rec.state == pb.ATTENDANCE_STATE_SKIPPED
    assert "left unchanged" in excused_rec.last_error
    [kept] = rows_for(world.sim, excused)
    assert kept["att_comment"] == "Excused tardy, note from parent"
    assert plain_rec.state == pb.ATTENDANCE_STATE_WRITTEN
