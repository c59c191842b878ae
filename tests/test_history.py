"""A record's delivery history and a cancel's outcome, as GetAttendance shows them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from writeback.v1 import writeback_pb2 as pb

from service import Server
from service.models import AttemptOutcome, AttendanceState, DeliveryAttempt, JobKind
from service.store import AttendanceStore, open_pool
from tests.helpers import World, local
from tests.test_delivery import cancel, eventually, rows_for, settled, teacher_row

WRITE, CANCEL = pb.DELIVERY_JOB_KIND_WRITE, pb.DELIVERY_JOB_KIND_CANCEL


async def hold_back(world: World, seconds: float) -> pb.AttendanceRecord:
    """Make the district's PowerSchool ask for a pause (a 429 with Retry-After), so no new
    record of the district is claimed for ``seconds``; returns the throttled record."""
    await world.resolve(sis_id=str(world.student(200, 0).dcid))  # token cached
    world.sim.faults.queue.append((429, seconds))
    throttled = (
        await world.submit(
            world.student(200, 0), local(world.school_day(), 8, 0), wait_for_writeback=False
        )
    ).record

    async def rescheduled() -> bool:
        return (await world.record(throttled.record_id)).attempts == 1

    await eventually(rescheduled)
    return throttled


class TestHistory:
    async def test_a_retried_write_lists_each_attempt(self, world: World) -> None:
        """PowerSchool answers 503 once, then the write goes through: both attempts are
        there, oldest first, with the status, the error and the code."""
        await world.setup()
        ps = world.student(100, 1)
        await world.resolve(sis_id=str(ps.dcid))  # token and STUDENTS.ID cached
        world.sim.faults.queue.append((503, None))
        submitted = (await world.submit(ps, local(world.school_day(), 8, 30))).record
        assert submitted.state == pb.ATTENDANCE_STATE_WRITTEN, submitted.last_error
        record = await world.record(submitted.record_id)
        first, second = record.history
        assert (first.kind, first.outcome, first.powerschool_status) == (
            WRITE,
            pb.ATTEMPT_OUTCOME_RETRY,
            503,
        )
        assert "503" in first.error
        assert (second.kind, second.outcome, second.powerschool_status, second.error) == (
            WRITE,
            pb.ATTEMPT_OUTCOME_WRITTEN,
            200,
            "",
        )
        assert first.attendance_code == second.attendance_code == "T"
        assert second.yearid == world.yearid(100, world.school_day())
        assert first.at.ToDatetime() <= second.at.ToDatetime()
        assert record.attempts == len(record.history) == 2

    async def test_list_leaves_history_out(self, world: World) -> None:
        await world.setup()
        record = (
            await world.submit(world.student(100, 2), local(world.school_day(), 8, 30))
        ).record
        assert len((await world.record(record.record_id)).history) == 1
        listed = await world.stub.ListAttendance(
            pb.ListAttendanceRequest(district_id=world.district_id)
        )
        assert [len(r.history) for r in listed.records] == [0]


class TestCancelOutcome:
    @pytest.mark.parametrize(
        ("teacher_code", "done"),
        [("A", "restored 'A' in PowerSchool"), (None, "removed the row from PowerSchool")],
    )
    async def test_cancel_of_a_written_record_says_what_it_did(
        self, world: World, teacher_code: str | None, done: str
    ) -> None:
        """The cancel's result has a field of its own; last_error stays empty, and the
        history ends with the cancel."""
        await world.setup()
        ps, day = world.student(200, 5), world.school_day()
        if teacher_code:
            teacher_row(world, ps, day, teacher_code, "Absent")
        record = (await world.submit(ps, local(day, 9, 0))).record
        assert record.state == pb.ATTENDANCE_STATE_WRITTEN, record.last_error
        await cancel(world, record.record_id, "wrong student")
        cancelled = await world.record(record.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert cancelled.cancel_outcome == done
        assert cancelled.last_error == ""
        assert [(a.kind, a.outcome) for a in cancelled.history] == [
            (WRITE, pb.ATTEMPT_OUTCOME_WRITTEN),
            (CANCEL, pb.ATTEMPT_OUTCOME_CANCELLED),
        ]
        assert cancelled.history[-1].error == ""
        assert cancelled.attempts == 2

    async def test_cancel_keeping_the_other_event_says_so(self, world: World) -> None:
        await world.setup()
        ps, day = world.student(200, 7), world.school_day()
        late = (await world.submit(ps, local(day, 8, 50))).record
        await world.submit(ps, local(day, 13, 15), event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT)
        cancelled = await cancel(world, late.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert cancelled.cancel_outcome == "kept the other event's 'ED' in PowerSchool"
        assert cancelled.last_error == ""

    async def test_a_failed_cancel_reports_in_last_error(self, world: World) -> None:
        """PowerSchool refuses the delete: no cancel outcome, last_error says what to do,
        and the history shows PowerSchool's refusal."""
        await world.setup()
        world.sim.allow_attendance_delete = False
        record = (await world.submit(world.student(200, 8), local(world.school_day(), 9, 0))).record
        failed = await cancel(world, record.record_id)
        assert failed.state == pb.ATTENDANCE_STATE_FAILED
        assert failed.cancel_outcome == ""
        assert "remove it on the student's attendance page" in failed.last_error
        last = (await world.record(record.record_id)).history[-1]
        assert (last.kind, last.outcome, last.powerschool_status) == (
            CANCEL,
            pb.ATTEMPT_OUTCOME_FAILED,
            405,
        )
        assert last.error == failed.last_error

    async def test_cancel_before_any_attempt(self, world: World) -> None:
        """A record still waiting for its first attempt is withdrawn without PowerSchool:
        the outcome says so, and there is no history."""
        await world.setup()
        # Long enough that a loaded machine cannot run out the pause before the cancel.
        throttled = await hold_back(world, 8.0)
        waiting = (
            await world.submit(
                world.student(100, 3), local(world.school_day(), 8, 30), wait_for_writeback=False
            )
        ).record
        cancelled = await cancel(world, waiting.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert cancelled.cancel_outcome == "withdrawn before it was sent to PowerSchool"
        assert cancelled.last_error == ""
        record = await world.record(waiting.record_id)
        assert (record.attempts, list(record.history)) == (0, [])
        assert rows_for(world.sim, world.student(100, 3)) == []
        throttled_now = await settled(world, throttled.record_id, seconds=30)
        assert throttled_now.state == pb.ATTENDANCE_STATE_WRITTEN

    async def test_cancel_of_a_skipped_record(self, world: World) -> None:
        """Skipped because a teacher's tardy was there: the cancel leaves PowerSchool alone
        and says so; the history keeps the skipped write."""
        await world.setup()
        ps, day = world.student(200, 6), world.school_day()
        teacher_row(world, ps, day, "TE", "Excused tardy")
        record = (await world.submit(ps, local(day, 9, 0))).record
        assert record.state == pb.ATTENDANCE_STATE_SKIPPED
        cancelled = await cancel(world, record.record_id)
        assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
        assert cancelled.cancel_outcome == (
            "withdrawn; it had been skipped, so PowerSchool was never changed"
        )
        assert cancelled.last_error == ""
        history = (await world.record(record.record_id)).history
        assert [(a.kind, a.outcome) for a in history] == [(WRITE, pb.ATTEMPT_OUTCOME_SKIPPED)]
        assert "'TE'" in history[0].error
        [row] = rows_for(world.sim, ps)
        assert row["att_comment"] == "Excused tardy"


class TestFencedHistory:
    async def test_an_attempt_that_lost_its_lease_records_nothing(
        self, world: World, server: Server, database_url: str
    ) -> None:
        """A stale attempt (its job was reset by a cancel while it ran) reports WRITTEN:
        nothing of it is recorded, and the history holds only the cancel that ran after."""
        await world.setup()
        throttled = await hold_back(world, 3.0)
        waiting = (
            await world.submit(
                world.student(100, 4), local(world.school_day(), 8, 30), wait_for_writeback=False
            )
        ).record
        pool = await open_pool(database_url, size=1)
        try:
            store = AttendanceStore(pool, database_url)
            [job] = await store.claim(
                "stale-worker", 1, lease=0.5, exclude=[], only=world.district_id
            )
            assert job.record_id == waiting.record_id
            # The cancel resets the job (a new lease token) while the stale attempt runs.
            await world.stub.CancelAttendance(
                pb.CancelAttendanceRequest(
                    district_id=world.district_id, record_id=waiting.record_id
                )
            )
            stale = await store.finish(
                job,
                AttendanceState.WRITTEN,
                attempt=DeliveryAttempt(
                    datetime.now(UTC), JobKind.WRITE, AttemptOutcome.WRITTEN, 200, "T"
                ),
            )
        finally:
            await pool.close()
        assert stale is None
        record = await settled(world, waiting.record_id)
        assert record.state == pb.ATTENDANCE_STATE_CANCELLED
        assert [(a.kind, a.outcome) for a in record.history] == [
            (CANCEL, pb.ATTEMPT_OUTCOME_CANCELLED)
        ]
        assert record.attempts == 1
        await settled(world, throttled.record_id)
