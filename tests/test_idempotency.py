"""SubmitAttendance replays: a caller retrying with the same idempotency key gets the answer
it missed, whatever changed since; a key reused for another request is refused, naming the
fields that differ."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from tests.helpers import World, failure, local, ts

WRITES = "/ws/attendance/daily_time"


def late_code_removed(world: World) -> pb.District:
    schools = list(world.district_pb().schools)
    schools[0].late_check_in_code = ""
    schools[0].late_check_in_excused_code = ""
    return world.district_pb(schools=schools)


def school_dropped(world: World) -> pb.District:
    return world.district_pb(schools=list(world.district_pb().schools)[1:])


async def records_of(world: World) -> list[pb.AttendanceRecord]:
    response = await world.stub.ListAttendance(
        pb.ListAttendanceRequest(district_id=world.district_id)
    )
    return list(response.records)


class TestReplay:
    @pytest.mark.parametrize("change", [late_code_removed, school_dropped])
    async def test_replay_after_settings_changed_returns_the_stored_record(
        self, world: World, change: Callable[[World], pb.District]
    ) -> None:
        """The settings that accepted the first call no longer would; its retry still gets
        the record that call stored."""
        await world.setup()
        ps = world.student(100)
        when = local(world.school_day(), 8, 30)
        first = await world.submit(ps, when, idempotency_key="kiosk-1:7")
        assert first.record.state == pb.ATTENDANCE_STATE_WRITTEN, first.record.last_error
        await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=change(world)))
        again = await world.submit(ps, when, idempotency_key="kiosk-1:7")
        assert again.replayed
        assert again.record == first.record
        assert world.sim.count(WRITES) == 1

    async def test_replay_never_calls_powerschool(self, world: World) -> None:
        """A check-in keyed by STUDENTS.ID, replayed after the district's ID mode changed
        (which forgets every STUDENTS.ID looked up) while PowerSchool is down: the stored
        record comes back and PowerSchool hears nothing."""
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        request = pb.SubmitAttendanceRequest(
            district_id=world.district_id,
            idempotency_key="kiosk-2:1",
            student=pb.StudentKey(powerschool_id=ps.id),
            event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
            occurred_at=ts(when),
            wait_for_writeback=True,
        )
        first = await world.stub.SubmitAttendance(request, timeout=10)
        assert first.record.state == pb.ATTENDANCE_STATE_WRITTEN, first.record.last_error
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(id_mode=pb.ID_MODE_STUDENTS_ID))
        )
        world.sim.faults.outage = True
        world.sim.reset_calls()
        again = await world.stub.SubmitAttendance(request, timeout=10)
        assert (again.replayed, again.record) == (True, first.record)
        assert world.sim.calls == []

    async def test_replay_with_wait_answers_the_delivery_outcome(self, world: World) -> None:
        """A retry of a call that answered PENDING, with wait_for_writeback, waits for the
        delivery the first call queued."""
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        world.sim.faults.outage = True
        first = await world.submit(ps, when, idempotency_key="kiosk-7:1", wait_for_writeback=False)
        assert first.record.state == pb.ATTENDANCE_STATE_PENDING
        world.sim.faults.outage = False
        again = await world.submit(ps, when, idempotency_key="kiosk-7:1")
        assert (again.replayed, again.record.record_id) == (True, first.record.record_id)
        assert again.record.state == pb.ATTENDANCE_STATE_WRITTEN, again.record.last_error
        assert len(world.sim.attendance_rows()) == 1


class TestReuse:
    async def test_different_fields_are_named(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        await world.submit(ps, when, idempotency_key="kiosk-3:1")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.submit(
                ps, when, idempotency_key="kiosk-3:1", reason="Bus late", comment="With mum"
            )
        got = failure(err.value)
        assert got.code is grpc.StatusCode.ALREADY_EXISTS
        assert got.reason == "IDEMPOTENCY_KEY_REUSED"
        assert got.metadata == {"fields": "comment,reason"}
        assert set(got.violations) == {"comment", "reason"}
        assert "comment, reason" in got.message
        assert "Bus late" not in got.message
        assert world.sim.count(WRITES) == 1

    async def test_key_stored_before_fields_were_kept(
        self, world: World, database_url: str
    ) -> None:
        """A key from before migration 0006 has only its hash: the same request still
        replays; another is refused without field names."""
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        first = await world.submit(ps, when, idempotency_key="kiosk-4:1")
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE idempotency_keys SET request_fields = NULL WHERE district_id = $1",
                world.district_id,
            )
        finally:
            await conn.close()
        again = await world.submit(ps, when, idempotency_key="kiosk-4:1")
        assert (again.replayed, again.record.record_id) == (True, first.record.record_id)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.submit(ps, when, idempotency_key="kiosk-4:1", comment="other")
        got = failure(err.value)
        assert (got.code, got.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
        assert (got.metadata, got.violations) == ({}, {})


class TestConcurrentSubmissions:
    """Both submissions pass the early lookup before either commits; the key's claim in the
    storing transaction decides, and the loser gets the answer a later retry would get."""

    async def test_same_request_twice_at_once_is_one_record(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        answers = await asyncio.gather(
            *(world.submit(ps, when, idempotency_key="kiosk-5:1") for _ in range(2))
        )
        assert sorted(a.replayed for a in answers) == [False, True]
        assert answers[0].record.record_id == answers[1].record.record_id
        assert [r.record_id for r in await records_of(world)] == [answers[0].record.record_id]
        assert world.sim.count(WRITES) == 1

    async def test_different_requests_at_once_one_wins_the_other_is_told_why(
        self, world: World
    ) -> None:
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        reasons = ["Dentist", "Overslept"]
        answers: list[Any] = await asyncio.gather(
            *(world.submit(ps, when, idempotency_key="kiosk-6:1", reason=r) for r in reasons),
            return_exceptions=True,
        )
        [won] = [a for a in answers if isinstance(a, pb.SubmitAttendanceResponse)]
        [lost] = [failure(a) for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert not won.replayed
        assert (lost.code, lost.metadata) == (grpc.StatusCode.ALREADY_EXISTS, {"fields": "reason"})
        [stored] = await records_of(world)
        assert stored.record_id == won.record.record_id
        assert stored.reason == reasons[answers.index(won)]
