"""Postgres restarted in the middle of a delivery run (marker ``slow``): delivery resumes as
soon as the database is back, and the LISTEN/NOTIFY path is re-established, not left to the
polling fallback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.store import EmbeddedPostgres
from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from tests.conftest import LogCapture
from tests.helpers import World, authed_channel, fast_settings, local, ts
from tests.test_delivery_slow import WRITES, until, write_counts

pytestmark = pytest.mark.slow

# Long enough that polling cannot explain anything this test measures.
POLL = 30.0
RECORDS = 40


@pytest.fixture
async def sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(demo_dataset(students_per_school=25))
    await simulator.start()
    yield simulator
    await simulator.stop()


def events(text: str, name: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == name]


async def test_delivery_and_notifications_come_back_after_a_postgres_restart(
    sim: PowerSchoolSimulator, logs: LogCapture, tmp_path: Path
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    dsn = await asyncio.to_thread(pg.start)
    settings = fast_settings(
        dsn, run_scheduler=False, delivery_poll_seconds=POLL, delivery_lease_seconds=3
    )
    deliverer, front = Server(settings), Server(settings)
    await deliverer.start()
    await front.start()
    # The front only accepts: with its worker stopped, what it queues reaches the
    # deliverer's worker only through NOTIFY (or the 30 s poll), as from another process.
    assert front.worker is not None
    await front.worker.stop()
    mark = logs.tell()
    try:
        async with authed_channel(f"127.0.0.1:{front.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup(max_in_flight=4)
            students = world.students[:RECORDS]
            for s in students:
                await world.resolve(sis_id=str(s.dcid))
            day = world.school_day()
            sim.faults.latency = 0.3
            for i, s in enumerate(students):
                await world.stub.SubmitAttendance(
                    pb.SubmitAttendanceRequest(
                        district_id=world.district_id,
                        idempotency_key=f"run-{i}",
                        student=pb.StudentKey(sis_id=str(s.dcid)),
                        event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
                        occurred_at=ts(local(day, 8, i % 60)),
                        reason="Bus late",
                    )
                )

            async def written() -> int:
                response = await world.stub.GetDeliveryStats(
                    pb.GetDeliveryStatsRequest(district_id=world.district_id)
                )
                return response.stats.written_last_hour

            async def some_written() -> bool:
                return await written() >= 8

            await until(some_written, 30)
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(3)
            assert await asyncio.to_thread(pg.start) == dsn
            returned = time.monotonic()
            assert await written() < RECORDS, "the run finished before the restart"

            async def writing_again() -> bool:
                return any(c.path == WRITES and c.at > returned for c in sim.calls)

            # (1) The queued deliveries resume at once, well within one poll interval.
            await until(writing_again, POLL)
            resumed = time.monotonic() - returned
            assert resumed < 10, f"delivery resumed {resumed:.1f} s after Postgres returned"

            async def all_written() -> bool:
                return await written() == RECORDS

            await until(all_written, 60)
            counts = write_counts(sim)
            assert len(counts) == RECORDS
            assert set(counts.values()) == {1}

            # (2) The notification path is back: a new check-in is written in under 1 s.
            sim.faults.latency = 0.0
            started = time.monotonic()
            response = await world.submit(world.students[RECORDS], local(day, 9, 0), deadline=5)
            took = time.monotonic() - started
            assert response.record.state == pb.ATTENDANCE_STATE_WRITTEN
            assert took < 1.0, f"a new check-in took {took:.2f} s"
    finally:
        await front.stop()
        await deliverer.stop()
        await asyncio.to_thread(pg.stop)
    text = logs.since(mark)
    lost = events(text, "delivery_notifications_lost")
    restored = events(text, "delivery_notifications_restored")
    assert [line["level"] for line in lost] == ["warning"]
    assert [line["level"] for line in restored] == ["info"]
    assert float(str(restored[0]["down_s"])) >= 3
    assert dsn not in text
