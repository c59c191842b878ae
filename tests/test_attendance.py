"""SubmitAttendance and GetAttendance end to end, checked against what the PowerSchool
simulator ends up holding."""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from tests.helpers import World, failure, local

WRITES = "/ws/attendance/daily_time"


def rows_for(world: World, students_id: int) -> list[dict[str, str]]:
    return [r for r in world.sim.attendance_rows() if r["studentid"] == str(students_id)]


class TestWrites:
    async def test_late_check_in_is_written_with_the_right_ids(self, world: World) -> None:
        """The record carries STUDENTS.ID, the school number, the term's yearid and the
        ATTENDANCE_CODE id of "T" for that school and year."""
        await world.setup()
        ps = world.student(100, 1)
        day = world.school_day()
        response = await world.submit(ps, local(day, 8, 47))
        record = response.record
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
        assert (record.att_date, record.attendance_code) == (day.isoformat(), "T")
        assert record.attempts == 1
        [row] = rows_for(world, ps.id)
        yearid = world.yearid(100, day)
        assert row["schoolid"] == "100"
        assert row["yearid"] == str(yearid)
        assert row["attendance_codeid"] == str(world.code_id(100, yearid, "T"))
        assert row["att_date"] == day.isoformat()
        assert row["att_mode_code"] == "ATT_ModeDaily"
        assert "08:47" in row["att_comment"]
        assert "Doctor appointment" in row["att_comment"]
        assert record.record_id in row["att_comment"]
        assert record.powerschool_attendance_id == int(row["id"])

    async def test_early_check_out_uses_the_early_code(self, world: World) -> None:
        await world.setup()
        ps = world.student(200, 2)
        day = world.school_day()
        response = await world.submit(
            ps,
            local(day, 13, 5),
            event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT,
            checked_out_by="Parent",
        )
        assert response.record.state == pb.ATTENDANCE_STATE_WRITTEN
        assert response.record.attendance_code == "ED"
        [row] = rows_for(world, ps.id)
        assert row["schoolid"] == "200"
        assert row["attendance_codeid"] == str(world.code_id(200, world.yearid(200, day), "ED"))
        assert "Early check-out 13:05" in row["att_comment"]

    async def test_excused_late_uses_the_excused_code(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        day = world.school_day()
        response = await world.submit(ps, local(day, 9, 0), excused=True)
        assert response.record.attendance_code == "TE"
        [row] = rows_for(world, ps.id)
        assert row["attendance_codeid"] == str(world.code_id(100, world.yearid(100, day), "TE"))

    async def test_late_evening_check_in_keeps_the_local_date(self, world: World) -> None:
        """23:30 in Chicago is already tomorrow in UTC; the attendance date is the local day."""
        await world.setup()
        ps = world.student()
        day = world.school_day(back=2)
        when = local(day, 23, 30)
        assert when.astimezone(UTC).date() != day  # UTC says tomorrow
        response = await world.submit(ps, when)
        assert response.record.att_date == day.isoformat()
        [row] = rows_for(world, ps.id)
        assert row["att_date"] == day.isoformat()

    async def test_school_time_zone_overrides_the_district(self, world: World) -> None:
        """A school in another zone uses its own local date."""
        await world.setup()
        schools = list(world.district_pb().schools)
        schools[0].timezone = "Pacific/Auckland"
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(schools=schools))
        )
        day = world.school_day(back=3)
        when = local(day, 20, 0)  # 20:00 Chicago is the next morning in Auckland
        response = await world.submit(world.student(100), when)
        auckland = when.astimezone(ZoneInfo("Pacific/Auckland")).date()
        assert auckland != day
        assert response.record.att_date == auckland.isoformat()

    async def test_get_attendance_returns_the_stored_record(self, world: World) -> None:
        await world.setup()
        sent = (await world.submit(world.student(), local(world.school_day(), 8, 5))).record
        got = await world.stub.GetAttendance(
            pb.GetAttendanceRequest(district_id=world.district_id, record_id=sent.record_id)
        )
        assert got.record == sent


class TestIdempotency:
    async def test_same_key_same_request_replays_without_writing(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        first = await world.submit(ps, when, idempotency_key="kiosk-7:42")
        again = await world.submit(ps, when, idempotency_key="kiosk-7:42")
        assert (first.replayed, again.replayed) == (False, True)
        assert again.record.record_id == first.record.record_id
        assert again.record.state == pb.ATTENDANCE_STATE_WRITTEN
        assert world.sim.count(WRITES) == 1

    async def test_same_key_different_request_is_already_exists(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        when = local(world.school_day(), 8, 30)
        await world.submit(ps, when, idempotency_key="kiosk-7:43")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.submit(ps, local(world.school_day(), 9, 30), idempotency_key="kiosk-7:43")
        got = failure(err.value)
        assert got.code is grpc.StatusCode.ALREADY_EXISTS
        assert got.reason == "IDEMPOTENCY_KEY_REUSED"
        assert world.sim.count(WRITES) == 1


class TestWritebackDisabled:
    async def test_district_without_subscription_keeps_record_skipped(self, world: World) -> None:
        await world.setup(writeback_enabled=False)
        response = await world.submit(world.student(), local(world.school_day(), 8, 30))
        assert response.record.state == pb.ATTENDANCE_STATE_SKIPPED
        assert "not enabled" in response.record.last_error
        assert world.sim.calls == []

    async def test_school_switched_off_keeps_record_skipped(self, world: World) -> None:
        await world.setup()
        schools = list(world.district_pb().schools)
        schools[1].writeback_enabled = False
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(schools=schools))
        )
        response = await world.submit(world.student(200), local(world.school_day(), 8, 30))
        assert response.record.state == pb.ATTENDANCE_STATE_SKIPPED
        assert world.sim.count(WRITES) == 0


class TestPowerSchoolTrouble:
    async def test_outage_keeps_the_record_pending(self, world: World) -> None:
        """PowerSchool down: the record is accepted and stored, not lost."""
        await world.setup()
        world.sim.faults.outage = True
        response = await world.submit(world.student(), local(world.school_day(), 8, 30), deadline=2)
        record = response.record
        assert record.state == pb.ATTENDANCE_STATE_PENDING
        assert "503" in record.last_error
        stored = await world.stub.GetAttendance(
            pb.GetAttendanceRequest(district_id=world.district_id, record_id=record.record_id)
        )
        assert stored.record.state == pb.ATTENDANCE_STATE_PENDING

    async def test_error_in_a_200_body_fails_the_record(self, world: World) -> None:
        await world.setup()
        world.sim.faults.write_error_in_body = True
        response = await world.submit(world.student(), local(world.school_day(), 8, 30))
        assert response.record.state == pb.ATTENDANCE_STATE_FAILED
        assert "rejected" in response.record.last_error

    async def test_unknown_code_fails_with_an_actionable_error(self, world: World) -> None:
        await world.setup()
        schools = list(world.district_pb().schools)
        schools[0].late_check_in_code = "ZZ"
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(schools=schools))
        )
        response = await world.submit(world.student(100), local(world.school_day(), 8, 30))
        assert response.record.state == pb.ATTENDANCE_STATE_FAILED
        assert "'ZZ' does not exist in PowerSchool for school 100" in response.record.last_error
        assert world.sim.count(WRITES) == 0

    async def test_expired_token_is_refreshed_once(self, world: World) -> None:
        await world.setup()
        await world.submit(world.student(100, 0), local(world.school_day(), 8, 30))
        world.sim.revoke_tokens()
        response = await world.submit(world.student(100, 1), local(world.school_day(), 8, 31))
        assert response.record.state == pb.ATTENDANCE_STATE_WRITTEN
        assert world.sim.count("/oauth/access_token") == 2

    async def test_reference_lookups_are_cached(self, world: World) -> None:
        """Terms and codes are read once per school, not per record."""
        await world.setup()
        day = world.school_day()
        for i in range(3):
            await world.submit(world.student(100, i), local(day, 8, 30 + i))
        assert world.sim.count("/ws/schema/table/terms") == 1
        assert world.sim.count("/ws/schema/table/attendance_code") == 1
        assert world.sim.count(WRITES) == 3
