"""The durable delivery pipeline against the PowerSchool simulator: what lands in
PowerSchool, how often it is called, and what the records say."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from service import Server
from simulators.powerschool import PowerSchoolSimulator, PSStudent
from tests.helpers import World, authed_channel, failure, fast_settings, local

WRITES = "/ws/attendance/daily_time"


def successful_writes(sim: PowerSchoolSimulator, record_id: str) -> int:
    """POSTs PowerSchool accepted for this record (its tag is in the comment)."""
    return sum(
        1 for c in sim.calls if c.path == WRITES and c.status == 200 and record_id in str(c.body)
    )


def rows_for(sim: PowerSchoolSimulator, student: PSStudent) -> list[dict[str, str]]:
    return [r for r in sim.attendance_rows() if r["studentid"] == str(student.id)]


async def eventually(check: Callable[[], object], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check() if asyncio.iscoroutinefunction(check) else not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def settled(world: World, record_id: str, seconds: float = 15.0) -> pb.AttendanceRecord:
    deadline = time.monotonic() + seconds
    while True:
        record = await world.record(record_id)
        if record.state != pb.ATTENDANCE_STATE_PENDING:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"record still pending: {record.last_error}")
        await asyncio.sleep(0.05)


async def cancel(world: World, record_id: str, reason: str = "") -> pb.AttendanceRecord:
    """CancelAttendance, waiting for PowerSchool's outcome."""
    response = await world.stub.CancelAttendance(
        pb.CancelAttendanceRequest(
            district_id=world.district_id,
            record_id=record_id,
            reason=reason,
            wait_for_writeback=True,
        ),
        timeout=10,
    )
    return response.record


def teacher_row(world: World, ps: PSStudent, day: object, code: str, comment: str) -> None:
    yearid = world.yearid(ps.schoolid, day)  # type: ignore[arg-type]
    world.sim.add_attendance(
        studentid=ps.id,
        schoolid=ps.schoolid,
        yearid=yearid,
        att_date=day,
        att_mode_code="ATT_ModeDaily",
        attendance_codeid=world.code_id(ps.schoolid, yearid, code),
        att_comment=comment,
    )


class TestAcceptance:
    async def test_answers_at_once_then_delivers(self, world: World) -> None:
        """Without wait_for_writeback the answer is PENDING; the worker delivers later."""
        await world.setup()
        world.sim.faults.latency = 0.3
        response = await world.submit(
            world.student(), local(world.school_day(), 8, 30), wait_for_writeback=False
        )
        assert response.record.state == pb.ATTENDANCE_STATE_PENDING
        record = await settled(world, response.record.record_id)
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN

    async def test_happy_path_costs_two_calls(self, world: World) -> None:
        """Read-before-write plus the write; token, student, term and codes are cached."""
        await world.setup()
        day = world.school_day()
        await world.submit(world.student(100, 0), local(day, 8, 0))  # warms the caches
        world.sim.reset_calls()
        for i in range(1, 6):
            await world.submit(world.student(100, i), local(day, 8, i))
        paths = [c.path for c in world.sim.calls]
        # Each new student costs one STUDENTS.ID lookup the first time (no prefetch here).
        assert paths.count("/ws/schema/table/attendance") == 5
        assert paths.count(WRITES) == 5
        assert paths.count("/ws/schema/table/students") == 5
        assert len(paths) == 15


class TestExistingAttendance:
    async def test_teacher_absence_becomes_tardy_and_old_value_is_kept(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(100, 2), world.school_day()
        teacher_row(world, ps, day, "A", "Absent in period 1")
        record = (await world.submit(ps, local(day, 9, 40))).record
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
        assert (record.replaced_attendance_code, record.replaced_comment) == (
            "A",
            "Absent in period 1",
        )
        [row] = rows_for(world.sim, ps)
        assert row["attendance_codeid"] == str(world.code_id(100, world.yearid(100, day), "T"))

    async def test_non_absence_teacher_record_is_left_alone(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(100, 3), world.school_day()
        teacher_row(world, ps, day, "TE", "Excused tardy, note from parent")
        record = (await world.submit(ps, local(day, 9, 40))).record
        assert record.state == pb.ATTENDANCE_STATE_SKIPPED
        assert "'TE'" in record.last_error
        assert "left unchanged" in record.last_error
        [row] = rows_for(world.sim, ps)
        assert row["att_comment"] == "Excused tardy, note from parent"
        assert world.sim.count(WRITES) == 0

    async def test_late_and_early_use_the_combined_code(self, world: World) -> None:
        await world.setup()
        schools = list(world.district_pb().schools)
        schools[0].late_and_early_code = "LE"
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(schools=schools))
        )
        ps, day = world.student(100, 4), world.school_day()
        await world.submit(ps, local(day, 8, 50))
        early = await world.submit(
            ps, local(day, 13, 15), event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT
        )
        assert early.record.state == pb.ATTENDANCE_STATE_WRITTEN
        [row] = rows_for(world.sim, ps)
        assert row["attendance_codeid"] == str(world.code_id(100, world.yearid(100, day), "LE"))
        assert "Late check-in 08:50" in row["att_comment"]
        assert "Early check-out 13:15" in row["att_comment"]
        assert early.record.replaced_attendance_code == "T"

    async def test_without_a_combined_code_the_later_event_wins(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(200, 4), world.school_day()
        await world.submit(ps, local(day, 8, 50))
        await world.submit(ps, local(day, 13, 15), event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT)
        [row] = rows_for(world.sim, ps)
        assert row["attendance_codeid"] == str(world.code_id(200, world.yearid(200, day), "ED"))
        assert "Late check-in 08:50" in row["att_comment"]

    async def test_second_check_in_the_same_day_corrects_the_first(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(100, 5), world.school_day()
        first = (await world.submit(ps, local(day, 8, 50), idempotency_key="k-first")).record
        second = await world.submit(ps, local(day, 9, 5), idempotency_key="k-second")
        assert (second.record.record_id, second.replayed) == (first.record_id, False)
        assert second.record.state == pb.ATTENDANCE_STATE_WRITTEN
        [row] = rows_for(world.sim, ps)
        assert "09:05" in row["att_comment"]
        assert "08:50" not in row["att_comment"]
        again = await world.submit(ps, local(day, 9, 5), idempotency_key="k-second")
        assert again.replayed
        assert again.record.record_id == first.record_id


class TestExactlyOnce:
    async def test_write_that_times_out_after_commit_is_not_repeated(self, world: World) -> None:
        """PowerSchool commits, then the answer never arrives (client timeout: 2 s). The
        retry reads the row, recognises its own tag and does not write again."""
        await world.setup()
        world.sim.faults.hang_after_write = 1
        world.sim.faults.hang_seconds = 3.0
        ps = world.student(200, 3)
        record = (await world.submit(ps, local(world.school_day(), 8, 30), deadline=20)).record
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
        assert record.attempts == 2
        await asyncio.sleep(1.5)  # let the hung answer finish so the simulator logs it
        assert successful_writes(world.sim, record.record_id) == 1
        assert len(rows_for(world.sim, ps)) == 1

    async def test_retry_after_delays_the_next_call(self, world: World) -> None:
        await world.setup()
        ps = world.student(100, 6)
        await world.resolve(sis_id=str(ps.dcid))  # token and mapping in place
        world.sim.reset_calls()
        world.sim.faults.queue.append((429, 1.5))
        record = (await world.submit(ps, local(world.school_day(), 8, 30))).record
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN
        throttled = next(c for c in world.sim.calls if c.status == 429)
        after = [c for c in world.sim.calls if c.at > throttled.at]
        # The next call was sent no sooner than Retry-After (it is logged when answered).
        assert after[0].at - throttled.at >= 1.5


class TestFailures:
    async def test_refusal_fails_at_once(self, world: World) -> None:
        await world.setup()
        world.sim.faults.write_forbidden = True
        record = (await world.submit(world.student(), local(world.school_day(), 8, 30))).record
        assert record.state == pb.ATTENDANCE_STATE_FAILED
        assert record.attempts == 1
        assert "403" in record.last_error

    async def test_outage_pauses_instead_of_burning_attempts(self, world: World) -> None:
        """While PowerSchool is down the breaker pauses the district; calls stay few, and
        every record is written once it is back."""
        await world.setup()
        await world.resolve(sis_id=str(world.student(100, 0).dcid))
        for s in world.students[:10]:
            await world.resolve(sis_id=str(s.dcid))
        world.sim.faults.outage_until = time.time() + 3
        world.sim.reset_calls()
        day = world.school_day()
        responses = await asyncio.gather(
            *(
                world.submit(s, local(day, 8, i), wait_for_writeback=False)
                for i, s in enumerate(world.students[:10])
            )
        )
        records = [await settled(world, r.record.record_id, 20) for r in responses]
        assert {r.state for r in records} == {pb.ATTENDANCE_STATE_WRITTEN}
        failed_calls = [c for c in world.sim.calls if c.status == 503]
        assert len(failed_calls) < 20  # threshold 5 + a few probes, not 10 records x retries
        for r in records:
            assert successful_writes(world.sim, r.record_id) == 1

    async def test_gives_up_after_max_age(
        self, world: World, database_url: str, sim: PowerSchoolSimulator
    ) -> None:
        srv = Server(fast_settings(database_url, delivery_max_age_hours=1 / 3600))
        await srv.start()
        try:
            async with authed_channel(f"127.0.0.1:{srv.port}") as channel:
                from writeback.v1 import writeback_pb2_grpc  # noqa: PLC0415

                other = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
                await other.setup()
                sim.faults.outage = True
                response = await other.submit(
                    other.student(), local(other.school_day(), 8, 30), wait_for_writeback=False
                )
                record = await settled(other, response.record.record_id, 20)
        finally:
            await srv.stop()
        assert record.state == pb.ATTENDANCE_STATE_FAILED
        assert record.last_error.startswith("gave up after")


class TestCancel:
    async def test_cancel_restores_the_replaced_absence(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(200, 5), world.school_day()
        teacher_row(world, ps, day, "A", "Absent")
        record = (await world.submit(ps, local(day, 9, 0))).record
        cancelled = await cancel(world, record.record_id, "wrong student")
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert cancelled.cancel_reason == "wrong student"
        [row] = rows_for(world.sim, ps)
        assert row["attendance_codeid"] == str(world.code_id(200, world.yearid(200, day), "A"))
        assert row["att_comment"] == "Absent"

    async def test_cancel_removes_the_row_it_created(self, world: World) -> None:
        await world.setup()
        ps = world.student(200, 6)
        record = (await world.submit(ps, local(world.school_day(), 9, 0))).record
        cancelled = await cancel(world, record.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert rows_for(world.sim, ps) == []

    async def test_cancel_when_powerschool_refuses_deletes(self, world: World) -> None:
        await world.setup()
        world.sim.allow_attendance_delete = False
        ps = world.student(200, 7)
        record = (await world.submit(ps, local(world.school_day(), 9, 0))).record
        cancelled = await cancel(world, record.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_FAILED
        assert "remove it on the student's attendance page" in cancelled.last_error
        assert len(rows_for(world.sim, ps)) == 1

    async def test_cancel_before_delivery_never_touches_powerschool(self, world: World) -> None:
        await world.setup(writeback_enabled=False)
        record = (await world.submit(world.student(), local(world.school_day(), 9, 0))).record
        cancelled = await cancel(world, record.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert world.sim.calls == []


class TestOperations:
    async def test_list_filters_and_pages(self, world: World) -> None:
        await world.setup()
        day = world.school_day()
        for i in range(5):
            await world.submit(world.student(100, i), local(day, 8, i))
        await world.submit(world.student(200, 0), local(day, 8, 9))
        seen: list[str] = []
        token = ""
        while True:
            page = await world.stub.ListAttendance(
                pb.ListAttendanceRequest(
                    district_id=world.district_id, school_number=100, page_size=2, page_token=token
                )
            )
            seen += [r.record_id for r in page.records]
            assert all(r.school_number == 100 for r in page.records)
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) == 5
        written = await world.stub.ListAttendance(
            pb.ListAttendanceRequest(
                district_id=world.district_id,
                state=pb.ATTENDANCE_STATE_WRITTEN,
                date_from=day.isoformat(),
                date_to=day.isoformat(),
            )
        )
        assert len(written.records) == 6

    async def test_bad_page_token(self, world: World) -> None:
        await world.setup()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.stub.ListAttendance(
                pb.ListAttendanceRequest(district_id=world.district_id, page_token="garbage")
            )
        assert "page_token" in failure(err.value).violations

    async def test_retry_failed_records_in_a_range(self, world: World) -> None:
        await world.setup()
        day = world.school_day()
        world.sim.faults.write_forbidden = True
        for i in range(3):
            await world.submit(world.student(100, i), local(day, 8, i))
        stats = (
            await world.stub.GetDeliveryStats(
                pb.GetDeliveryStatsRequest(district_id=world.district_id)
            )
        ).stats
        assert stats.failed == 3
        world.sim.faults.write_forbidden = False  # the admin fixed the plugin's grants
        retried = await world.stub.RetryAttendance(
            pb.RetryAttendanceRequest(
                district_id=world.district_id, date_from=day.isoformat(), date_to=day.isoformat()
            )
        )
        assert retried.retried == 3

        async def all_written() -> bool:
            s = (
                await world.stub.GetDeliveryStats(
                    pb.GetDeliveryStatsRequest(district_id=world.district_id)
                )
            ).stats
            return s.written_last_hour == 3 and s.failed == 0 and s.pending == 0

        await eventually(all_written)

    async def test_a_retry_uses_the_code_the_admin_fixed(self, world: World) -> None:
        """Records FAILED on a late code PowerSchool lacks; the admin fixes the code with
        UpsertDistrict and retries the day: each is written with the new code."""
        wrong = [
            world.district_pb().schools[0],
            world.district_pb().schools[1],
        ]
        for school in wrong:
            school.late_check_in_code = "TT"
        await world.setup(schools=wrong)
        day = world.school_day()
        students = [world.student(100, i) for i in range(3)]
        for i, ps in enumerate(students):
            failed = (await world.submit(ps, local(day, 8, i))).record
            assert failed.state == pb.ATTENDANCE_STATE_FAILED
            assert "'TT' does not exist in PowerSchool" in failed.last_error
        await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=world.district_pb()))
        retried = await world.stub.RetryAttendance(
            pb.RetryAttendanceRequest(
                district_id=world.district_id, date_from=day.isoformat(), date_to=day.isoformat()
            )
        )
        assert retried.retried == 3
        listed = await world.stub.ListAttendance(
            pb.ListAttendanceRequest(district_id=world.district_id)
        )
        for record in listed.records:
            done = await settled(world, record.record_id)
            assert done.state == pb.ATTENDANCE_STATE_WRITTEN, done.last_error
            assert done.attendance_code == "T"
        code_t = world.code_id(100, world.yearid(100, day), "T")
        for ps in students:
            assert [row["attendance_codeid"] for row in rows_for(world.sim, ps)] == [str(code_t)]

    async def test_stats_show_the_breaker(self, world: World) -> None:
        await world.setup()
        world.sim.faults.outage = True
        day = world.school_day()
        for i in range(6):
            await world.submit(world.student(100, i), local(day, 8, i), wait_for_writeback=False)

        async def breaker_open() -> bool:
            s = (
                await world.stub.GetDeliveryStats(
                    pb.GetDeliveryStatsRequest(district_id=world.district_id)
                )
            ).stats
            return s.breaker_state in (pb.BREAKER_STATE_OPEN, pb.BREAKER_STATE_HALF_OPEN)

        await eventually(breaker_open)
        stats = (
            await world.stub.GetDeliveryStats(
                pb.GetDeliveryStatsRequest(district_id=world.district_id)
            )
        ).stats
        assert stats.pending == 6
        assert stats.oldest_pending_age.ToTimedelta().total_seconds() > 0
        world.sim.faults.outage = False


class TestSharedLimits:
    async def test_two_processes_share_a_districts_in_flight_cap(
        self, world: World, database_url: str
    ) -> None:
        """Two service instances on one database: PowerSchool never sees more than the
        district's max_in_flight calls at once, however the work is split."""
        second = Server(fast_settings(database_url))
        await second.start()
        try:
            await asyncio.sleep(2.5)  # both workers have heartbeated and know they are two
            async with authed_channel(f"127.0.0.1:{second.port}") as channel:
                from writeback.v1 import writeback_pb2_grpc  # noqa: PLC0415

                other = World(writeback_pb2_grpc.WritebackServiceStub(channel), world.sim)
                other.district_id = world.district_id
                await world.setup(max_in_flight=4, max_requests_per_second=1000)
                for s in world.students[:16]:
                    await world.resolve(sis_id=str(s.dcid))
                world.sim.faults.latency = 0.2
                world.sim.peak_in_flight = 0
                day = world.school_day()
                responses = await asyncio.gather(
                    *(
                        (world if i % 2 else other).submit(
                            s, local(day, 8, i), wait_for_writeback=False
                        )
                        for i, s in enumerate(world.students[:16])
                    )
                )
                records = [await settled(world, r.record.record_id, 30) for r in responses]
        finally:
            await second.stop()
        assert {r.state for r in records} == {pb.ATTENDANCE_STATE_WRITTEN}
        assert world.sim.peak_in_flight <= 4
        assert world.sim.peak_in_flight >= 2  # the cap was used, not serialised

    async def test_a_backlog_switched_off_is_skipped_at_once_not_at_the_call_rate(
        self, world: World
    ) -> None:
        """Writeback switched off for a district with a backlog: the records are SKIPPED
        without PowerSchool, so without waiting for the district's call rate (here one call a
        second: what is left of the backlog would take ten seconds or more)."""
        await world.setup(max_in_flight=1, max_requests_per_second=1)
        # 12 check-ins: the simulator's few students, on as many school days as it takes.
        days = [world.school_day(back) for back in range(1, 13)]
        visits = [(s, day) for day in days for s in world.students][:12]
        records = [
            (await world.submit(s, local(day, 8, 0), wait_for_writeback=False)).record
            for s, day in visits
        ]
        off = world.district_pb(max_in_flight=1, max_requests_per_second=1)
        off.writeback_enabled = False
        await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=off))
        started = time.monotonic()
        states = [(await settled(world, r.record_id, 30)).state for r in records]
        took = time.monotonic() - started
        assert states.count(pb.ATTENDANCE_STATE_SKIPPED) >= 8
        assert set(states) <= {pb.ATTENDANCE_STATE_SKIPPED, pb.ATTENDANCE_STATE_WRITTEN}
        assert took < 8


class TestCancelCombined:
    async def _combined(
        self, world: World
    ) -> tuple[PSStudent, pb.AttendanceRecord, pb.AttendanceRecord]:
        await world.setup()
        schools = list(world.district_pb().schools)
        schools[0].late_and_early_code = "LE"
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(schools=schools))
        )
        ps, day = world.student(100, 7), world.school_day()
        late = (await world.submit(ps, local(day, 8, 50))).record
        early = (
            await world.submit(ps, local(day, 13, 15), event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT)
        ).record
        return ps, late, early

    @pytest.mark.parametrize("first", ["late", "early"])
    async def test_cancelling_one_event_keeps_the_other(self, world: World, first: str) -> None:
        """Late check-in and early check-out share one LE row. Cancelling one leaves the
        other's own code; cancelling the other too removes the row the service created."""
        ps, late, early = await self._combined(world)
        day = late.att_date
        gone, kept, kept_code = (late, early, "ED") if first == "late" else (early, late, "T")
        assert (await cancel(world, gone.record_id)).state == pb.ATTENDANCE_STATE_CANCELLED
        [row] = rows_for(world.sim, ps)
        yearid = world.yearid(100, date.fromisoformat(day))
        assert row["attendance_codeid"] == str(world.code_id(100, yearid, kept_code))
        assert gone.record_id not in row["att_comment"]
        assert kept.record_id in row["att_comment"]
        assert (await cancel(world, kept.record_id)).state == pb.ATTENDANCE_STATE_CANCELLED
        assert rows_for(world.sim, ps) == []


class TestRetryKeepsCancel:
    async def test_retrying_a_failed_cancel_cancels(self, world: World) -> None:
        await world.setup()
        world.sim.allow_attendance_delete = False
        ps = world.student(200, 8)
        record = (await world.submit(ps, local(world.school_day(), 9, 0))).record
        failed = await cancel(world, record.record_id)
        assert failed.state == pb.ATTENDANCE_STATE_FAILED
        world.sim.allow_attendance_delete = True  # the admin fixed the plugin's permissions
        await world.stub.RetryAttendance(
            pb.RetryAttendanceRequest(district_id=world.district_id, record_id=record.record_id)
        )
        done = await settled(world, record.record_id)
        assert done.state == pb.ATTENDANCE_STATE_CANCELLED
        assert rows_for(world.sim, ps) == []


class TestConcurrentSubmissions:
    async def test_two_stations_at_once_make_one_record(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(200, 9), world.school_day()
        responses = await asyncio.gather(
            *(
                world.submit(ps, local(day, 8, 30 + i), idempotency_key=f"station-{i}")
                for i in range(4)
            )
        )
        assert len({r.record.record_id for r in responses}) == 1
        listed = await world.stub.ListAttendance(
            pb.ListAttendanceRequest(
                district_id=world.district_id, roster_id=responses[0].record.roster_id
            )
        )
        assert len(listed.records) == 1
        assert len(rows_for(world.sim, ps)) == 1
