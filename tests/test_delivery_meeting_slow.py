"""A SIGKILL in the middle of Meeting-mode deliveries (marker ``slow``): the restarted
service finishes every record, and no class meeting is written twice."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from tests.helpers import World, authed_channel, local, ts
from tests.test_delivery_meeting import schools
from tests.test_delivery_slow import ServiceProcess, stats, until

pytestmark = pytest.mark.slow

MEETING_WRITES = "/ws/attendance/meeting_interval"
DAILY_WRITES = "/ws/attendance/daily_time"
_TAG = re.compile(r"\[writeback:([0-9a-f-]{36})\]")
RECORDS = 400


def meeting_write_counts(sim: PowerSchoolSimulator) -> Counter[tuple[str, str, str, str]]:
    """How many accepted meeting writes PowerSchool saw per (record tag, STUDENTS.ID, date,
    CC.ID): each meeting a write carries counts once for every record its comment tags."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for call in sim.calls:
        if call.path == MEETING_WRITES and call.status == 200:
            for record in call.body["record"]:
                row = record["tables"]["attendance"]
                counts.update(
                    (tag, row["studentid"], row["att_date"], row["ccid"])
                    for tag in set(_TAG.findall(row["att_comment"]))
                )
    return counts


@pytest.fixture
async def meeting_sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(
        demo_dataset(students_per_school=RECORDS), meeting_schools={100}
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


async def submit_late_check_ins(world: World) -> list[str]:
    """A late check-in for every student of the Meeting school, between 8:00 and 13:59 (so
    each misses up to five meetings and is tardy in the one in progress)."""
    day = world.school_day()
    students = [s for s in world.students if s.schoolid == 100][:RECORDS]
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> str:
        async with sem:
            response = await world.stub.SubmitAttendance(
                pb.SubmitAttendanceRequest(
                    district_id=world.district_id,
                    idempotency_key=f"meeting-{i}",
                    student=pb.StudentKey(sis_id=str(students[i].dcid)),
                    event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
                    occurred_at=ts(local(day, 8 + i % 6, (7 * i) % 60)),
                    reason="Bus late",
                ),
                timeout=30,
            )
        return response.record.record_id

    return list(await asyncio.gather(*(one(i) for i in range(len(students)))))


async def test_sigkill_mid_meeting_delivery_then_restart_writes_each_meeting_once(
    meeting_sim: PowerSchoolSimulator, own_database: str, tmp_path: Path
) -> None:
    first = ServiceProcess(own_database, tmp_path / "first.log")
    second = ServiceProcess(own_database, tmp_path / "second.log")
    await first.start()
    try:
        async with authed_channel(f"127.0.0.1:{first.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), meeting_sim)
            await world.setup(schools=schools(), max_in_flight=32, max_requests_per_second=1000)
            meeting_sim.faults.latency = 0.05
            record_ids = await submit_late_check_ins(world)
            assert len(record_ids) == RECORDS

            async def some_written() -> bool:
                return (await stats(world)).written_last_hour >= 50

            await until(some_written, 60)
            written_at_kill = (await stats(world)).written_last_hour
        await first.kill()
        assert written_at_kill < RECORDS, "delivery finished before the kill; nothing was tested"
        await second.start()
        async with authed_channel(f"127.0.0.1:{second.port}") as channel:
            world = World(
                writeback_pb2_grpc.WritebackServiceStub(channel), meeting_sim, world.district_id
            )

            async def all_done() -> bool:
                s = await stats(world)
                return s.pending == 0

            await until(all_done, 120)
            records = [await world.record(r) for r in record_ids]
    finally:
        await first.stop()
        await second.stop()
    await asyncio.sleep(0.5)
    assert [r.last_error for r in records if r.state != pb.ATTENDANCE_STATE_WRITTEN] == []
    counts = meeting_write_counts(meeting_sim)
    assert set(counts.values()) == {1}, Counter(counts.values())
    # Each record's meetings, as it shows them, are exactly the ones PowerSchool was sent.
    written: dict[str, set[str]] = {}
    for tag, _, _, ccid in counts:
        written.setdefault(tag, set()).add(ccid)
    assert written == {r.record_id: {str(m.ccid) for m in r.meetings} for r in records}
    assert sum(len(r.meetings) for r in records) > RECORDS
    assert second.deliveries() > 0
    assert DAILY_WRITES not in {c.path for c in meeting_sim.calls}
