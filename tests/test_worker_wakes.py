"""Check-ins of a district whose every delivery slot in this process is taken do not send the
worker looking for due jobs: such a look leaves the district's jobs out, and finding that out
reads past every one of them, so under a morning's backlog each accepted batch cost Postgres
a read of the whole backlog. The district's next free slot looks again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import World, authed_channel, fast_settings, local


@pytest.fixture
async def lone_server(own_database: str) -> AsyncIterator[Server]:
    # A poll long enough that every claim the test sees was asked for by a wake.
    server = Server(fast_settings(own_database, delivery_poll_seconds=60.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Claims:
    """Counts the worker's claims, each still made."""

    def __init__(self, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
        assert server.worker is not None
        store = server.worker._records
        claim = store.claim_batch
        self.count = 0

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await claim(*args, **kwargs)

        monkeypatch.setattr(store, "claim_batch", counted)


async def test_a_busy_districts_check_ins_do_not_send_the_worker_claiming(
    lone_server: Server, sim: PowerSchoolSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = Claims(lone_server, monkeypatch)
    async with authed_channel(f"127.0.0.1:{lone_server.port}") as channel:
        world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
        await world.setup(max_in_flight=1)
        sim.faults.latency = 1.5  # under the 2 s PowerSchool timeout of the tests
        day = world.school_day()
        students = world.students

        async def check_in(i: int) -> pb.SubmitAttendanceResponse:
            when = local(day, 8, 30 + i % 20)
            return await world.submit(students[i % len(students)], when, wait_for_writeback=False)

        await check_in(0)
        for _ in range(200):  # until its delivery holds the district's one slot
            if sim.in_flight:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the first check-in's delivery never reached PowerSchool")
        before = claims.count
        answers = [await check_in(i) for i in range(1, 21)]
        await asyncio.sleep(0.3)
        assert all(a.record.state == pb.ATTENDANCE_STATE_PENDING for a in answers)
        assert sim.in_flight, "the first delivery ended during the check-ins; nothing was tested"
        assert claims.count - before <= 2, f"{claims.count - before} claims for 20 check-ins"
