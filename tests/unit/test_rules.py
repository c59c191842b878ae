"""The delivery rules, table by table, as pure functions: no database, no HTTP, no clock.

Each row is one rule of the README's delivery section."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from service.domain import rules
from service.domain.rules import Action, Backoff, Failure, Verdict
from service.models import (
    AttendanceEvent,
    AttendanceRecord,
    AttendanceState,
    District,
    PowerSchoolConnection,
    Replaced,
    School,
)
from service.powerschool import AttendanceCode, DailyAttendance

TZ = "America/Chicago"
DAY = date(2026, 11, 30)
YEAR = 3600

CODES = {
    c.att_code: c
    for c in (
        AttendanceCode(1, "T", "Present"),
        AttendanceCode(2, "TX", "Present"),
        AttendanceCode(3, "LE", "Present"),
        AttendanceCode(4, "EX", "Present"),
        AttendanceCode(5, "A", "Absent"),
        AttendanceCode(6, "AU", "Absent"),
        AttendanceCode(7, "P", "Present"),
        AttendanceCode(8, "E", "Present"),
    )
}
SCHOOL = School(
    100,
    late_check_in_code="T",
    early_check_out_code="E",
    late_check_in_excused_code="TX",
    early_check_out_excused_code="EX",
)


def record(
    event: AttendanceEvent = AttendanceEvent.LATE_CHECK_IN,
    hour: int = 14,
    **changes: object,
) -> AttendanceRecord:
    base = AttendanceRecord(
        record_id=str(uuid.uuid4()),
        district_id="d-1",
        idempotency_key="k",
        request_hash="h",
        roster_id="r-1",
        event=event,
        occurred_at=datetime(2026, 11, 30, hour, 15, tzinfo=UTC),
        school_number=100,
        att_date=DAY,
        attendance_code="T" if event is AttendanceEvent.LATE_CHECK_IN else "E",
        state=AttendanceState.PENDING,
        reason="Doctor",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def row(code: str | None, comment: str = "teacher") -> DailyAttendance:
    return DailyAttendance(
        id=900, dcid=901, attendance_codeid=CODES[code].id if code else 99, comment=comment
    )


def plan_write(
    rec: AttendanceRecord,
    existing: DailyAttendance | None,
    *,
    school: School = SCHOOL,
    sibling: AttendanceRecord | None = None,
) -> rules.Plan:
    return rules.plan_write(
        rec,
        school=school,
        timezone=TZ,
        yearid=YEAR,
        codes=CODES,
        existing=existing,
        sibling=sibling,
    )


class TestWrite:
    def test_nothing_there_inserts_the_events_code_with_a_tagged_comment(self) -> None:
        rec = record()
        plan = plan_write(rec, None)
        assert (plan.action, plan.state, plan.code, plan.codeid) == (
            Action.WRITE,
            AttendanceState.WRITTEN,
            "T",
            1,
        )
        assert plan.comment == f"Late check-in 08:15. Reason: Doctor [writeback:{rec.record_id}]"
        assert plan.replaced is None

    @pytest.mark.parametrize(
        ("event", "excused", "school", "code"),
        [
            (AttendanceEvent.LATE_CHECK_IN, True, SCHOOL, "TX"),
            (AttendanceEvent.EARLY_CHECK_OUT, False, SCHOOL, "E"),
            (AttendanceEvent.EARLY_CHECK_OUT, True, SCHOOL, "EX"),
            # An excused check-in with no excused code falls back to the plain one.
            (
                AttendanceEvent.LATE_CHECK_IN,
                True,
                replace(SCHOOL, late_check_in_excused_code=""),
                "T",
            ),
        ],
    )
    def test_the_code_follows_event_and_excuse(
        self, event: AttendanceEvent, excused: bool, school: School, code: str
    ) -> None:
        assert plan_write(record(event, excused=excused), None, school=school).code == code

    def test_the_code_comes_from_the_current_settings_not_the_stored_record(self) -> None:
        # Submitted while the school's late code was "X" (which PowerSchool lacks), then
        # fixed to "T": a retry writes "T".
        plan = plan_write(record(attendance_code="X"), None)
        assert (plan.action, plan.code) == (Action.WRITE, "T")

    def test_a_code_powerschool_lacks_fails_with_what_to_do(self) -> None:
        plan = plan_write(record(), None, school=replace(SCHOOL, late_check_in_code="Z"))
        assert (plan.action, plan.state) == (None, AttendanceState.FAILED)
        assert "'Z' does not exist in PowerSchool for school 100, yearid 3600" in plan.message

    def test_no_code_configured_fails(self) -> None:
        plan = plan_write(record(), None, school=replace(SCHOOL, late_check_in_code=""))
        assert (plan.action, plan.state) == (None, AttendanceState.FAILED)
        assert "no attendance code configured for late check in" in plan.message

    def test_its_own_row_as_it_would_write_it_is_not_written_again(self) -> None:
        rec = record()
        written = plan_write(rec, None)
        plan = plan_write(rec, row("T", written.comment))
        assert (plan.action, plan.state, plan.code) == (
            Action.NOTHING,
            AttendanceState.WRITTEN,
            "T",
        )

    def test_its_own_row_with_another_time_is_corrected_without_keeping_a_replaced_value(
        self,
    ) -> None:
        rec = record()
        old = plan_write(replace(rec, occurred_at=datetime(2026, 11, 30, 13, 0, tzinfo=UTC)), None)
        plan = plan_write(rec, row("T", old.comment))
        assert (plan.action, plan.code, plan.replaced) == (Action.WRITE, "T", None)

    @pytest.mark.parametrize("teacher_code", ["A", "AU"])
    def test_a_teachers_absence_is_replaced_and_kept(self, teacher_code: str) -> None:
        plan = plan_write(record(), row(teacher_code, "absent at roll call"))
        assert (plan.action, plan.code) == (Action.WRITE, "T")
        assert plan.replaced == Replaced(
            CODES[teacher_code].id, teacher_code, "absent at roll call"
        )

    @pytest.mark.parametrize(
        ("teacher_code", "shown"),
        [("P", "'P'"), ("T", "'T'"), (None, "code id 99")],
    )
    def test_anything_else_someone_else_wrote_is_left_alone(
        self, teacher_code: str | None, shown: str
    ) -> None:
        plan = plan_write(record(), row(teacher_code))
        assert (plan.action, plan.state) == (None, AttendanceState.SKIPPED)
        assert f"PowerSchool already has {shown}" in plan.message
        assert "entered outside the writeback service; left unchanged" in plan.message

    def test_an_absent_code_the_service_writes_itself_is_not_a_teachers_absence(self) -> None:
        school = replace(SCHOOL, early_check_out_code="AU")
        plan = plan_write(record(), row("AU"), school=school)
        assert plan.state is AttendanceState.SKIPPED

    def test_configured_absence_codes_are_the_only_ones_replaced(self) -> None:
        school = replace(SCHOOL, absence_codes=("AU",))
        assert plan_write(record(), row("AU"), school=school).action is Action.WRITE
        assert plan_write(record(), row("A"), school=school).state is AttendanceState.SKIPPED

    def test_late_and_early_the_same_day_use_the_combined_code_noting_both(self) -> None:
        late = record(AttendanceEvent.LATE_CHECK_IN, 14)
        early = record(AttendanceEvent.EARLY_CHECK_OUT, 19)
        late_row = plan_write(late, None)
        school = replace(SCHOOL, late_and_early_code="LE")
        plan = plan_write(early, row("T", late_row.comment), school=school, sibling=late)
        assert (plan.action, plan.code) == (Action.WRITE, "LE")
        assert plan.comment.startswith(
            "Late check-in 08:15. Reason: Doctor | Early check-out 13:15"
        )
        assert plan.comment.endswith(f"[writeback:{late.record_id}] [writeback:{early.record_id}]")
        assert plan.replaced == Replaced(1, "T", late_row.comment)

    @pytest.mark.parametrize(("late_hour", "early_hour", "code"), [(14, 19, "E"), (20, 19, "T")])
    def test_without_a_combined_code_the_later_events_code_wins(
        self, late_hour: int, early_hour: int, code: str
    ) -> None:
        late = record(AttendanceEvent.LATE_CHECK_IN, late_hour)
        early = record(AttendanceEvent.EARLY_CHECK_OUT, early_hour)
        plan = plan_write(early, row("T", plan_write(late, None).comment), sibling=late)
        assert plan.code == code

    def test_a_combined_row_rewritten_keeps_no_second_replaced_value(self) -> None:
        late = record(AttendanceEvent.LATE_CHECK_IN, 14)
        early = record(AttendanceEvent.EARLY_CHECK_OUT, 19)
        school = replace(SCHOOL, late_and_early_code="LE")
        both = plan_write(
            early, row("T", plan_write(late, None).comment), school=school, sibling=late
        )
        again = plan_write(early, row("LE", both.comment), school=school, sibling=late)
        assert (again.action, again.replaced) == (Action.NOTHING, None)


class TestBlocked:
    district = District("d-1", writeback_enabled=True, powerschool=PowerSchoolConnection())

    @pytest.mark.parametrize(
        ("district_on", "school", "state", "message"),
        [
            (True, None, AttendanceState.FAILED, "school 100 is no longer configured"),
            (False, SCHOOL, AttendanceState.SKIPPED, "writeback was switched off"),
            (
                True,
                replace(SCHOOL, writeback_enabled=False),
                AttendanceState.SKIPPED,
                "switched off",
            ),
        ],
    )
    def test_settings_that_rule_a_write_out(
        self, district_on: bool, school: School | None, state: AttendanceState, message: str
    ) -> None:
        district = replace(self.district, writeback_enabled=district_on)
        plan = rules.write_blocked(district, school, 100)
        assert plan is not None
        assert plan.state is state
        assert message in plan.message

    def test_a_configured_school_with_writeback_on_goes_ahead(self) -> None:
        assert rules.write_blocked(self.district, SCHOOL, 100) is None


def plan_cancel(
    rec: AttendanceRecord,
    existing: DailyAttendance | None,
    *,
    sibling: AttendanceRecord | None = None,
    yearid: int | None = YEAR,
    school: School | None = SCHOOL,
) -> rules.Plan:
    return rules.plan_cancel(
        rec,
        school=school,
        timezone=TZ,
        yearid=yearid,
        codes=CODES,
        existing=existing,
        sibling=sibling,
    )


class TestCancel:
    def test_nothing_of_the_record_in_powerschool_ends_cancelled_without_a_call(self) -> None:
        rec = record()
        for existing, yearid in [(None, YEAR), (row("A", "someone else's"), YEAR), (None, None)]:
            plan = plan_cancel(rec, existing, yearid=yearid)
            assert (plan.action, plan.state) == (None, AttendanceState.CANCELLED)
            assert plan.message == "nothing of this record was in PowerSchool"

    def test_a_row_it_created_is_deleted(self) -> None:
        rec = record()
        plan = plan_cancel(rec, row("T", plan_write(rec, None).comment))
        assert (plan.action, plan.state) == (Action.DELETE, AttendanceState.CANCELLED)

    def test_a_replaced_value_is_restored(self) -> None:
        rec = record(
            replaced_set=True,
            replaced_attendance_codeid=5,
            replaced_att_code="A",
            replaced_comment="absent at roll call",
        )
        plan = plan_cancel(rec, row("T", plan_write(rec, None).comment))
        assert (plan.action, plan.codeid, plan.comment) == (Action.WRITE, 5, "absent at roll call")
        assert plan.message == "restored 'A' in PowerSchool"

    def test_a_shared_row_keeps_the_other_event_alone_with_its_own_code(self) -> None:
        late = record(AttendanceEvent.LATE_CHECK_IN, 14, attendance_code="LE")
        early = record(AttendanceEvent.EARLY_CHECK_OUT, 19)
        school = replace(SCHOOL, late_and_early_code="LE")
        both = plan_write(
            early, row("T", plan_write(late, None).comment), school=school, sibling=late
        )
        plan = plan_cancel(early, row("LE", both.comment), sibling=late, school=school)
        assert (plan.action, plan.code, plan.keep_code_for) == (Action.WRITE, "T", late.record_id)
        assert plan.comment == rules.attendance_comment([late], TZ)
        assert plan.hand_over_to == ""

    def test_the_replaced_value_passes_to_the_event_written_over_this_ones_row(self) -> None:
        early = record(AttendanceEvent.EARLY_CHECK_OUT, 14)
        early_row = plan_write(early, None)
        late = record(
            AttendanceEvent.LATE_CHECK_IN, 19, replaced_set=True, replaced_comment=early_row.comment
        )
        combined = plan_write(late, row("E", early_row.comment), sibling=early)
        plan = plan_cancel(early, row("T", combined.comment), sibling=late)
        assert plan.hand_over_to == late.record_id

    def test_a_shared_row_whose_other_code_is_gone_fails(self) -> None:
        late = record(AttendanceEvent.LATE_CHECK_IN, 14)
        early = record(AttendanceEvent.EARLY_CHECK_OUT, 19)
        both = plan_write(early, row("T", plan_write(late, None).comment), sibling=late)
        school = replace(SCHOOL, late_check_in_code="ZZ")
        plan = plan_cancel(early, row("E", both.comment), sibling=late, school=school)
        assert (plan.action, plan.state) == (None, AttendanceState.FAILED)
        assert "'ZZ' no longer exists" in plan.message


class TestClassify:
    @pytest.mark.parametrize(
        ("failure", "verdict", "server_down"),
        [
            (Failure(400, transient=False), Verdict.GIVE_UP, False),
            (Failure(401, transient=False), Verdict.GIVE_UP, False),
            (Failure(403, transient=False), Verdict.GIVE_UP, False),
            (Failure(200, transient=False, write_sent=True), Verdict.GIVE_UP, False),
            (Failure(429, transient=True, retry_after=7), Verdict.RETRY, False),
            (Failure(503, transient=True), Verdict.RETRY, True),
            (Failure(502, transient=True, write_sent=True), Verdict.RETRY, True),
            (Failure(None, transient=True), Verdict.RETRY, True),
            # The write went out and no answer came back: it may have committed.
            (Failure(None, transient=True, write_sent=True), Verdict.UNKNOWN, True),
        ],
    )
    def test_verdicts(self, failure: Failure, verdict: Verdict, server_down: bool) -> None:
        result = rules.classify(failure)
        assert (result.verdict, result.server_down) == (verdict, server_down)
        assert result.retry_after == (failure.retry_after if failure.transient else None)


class TestBackoff:
    @pytest.mark.parametrize(
        ("attempts", "ceiling"), [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)]
    )
    def test_exponential_ceiling_capped(self, attempts: int, ceiling: float) -> None:
        assert Backoff(1, 300).ceiling(attempts) == ceiling

    def test_full_jitter_within_the_ceiling(self) -> None:
        backoff = Backoff(1, 300)
        assert backoff.delay(4, 0.0) == 0.0
        assert backoff.delay(4, 0.5) == 4.0
        assert backoff.delay(4, 0.999) < 8.0

    def test_never_sooner_than_retry_after_or_the_breakers_next_probe(self) -> None:
        backoff = Backoff(1, 300)
        busy = rules.classify(Failure(429, transient=True, retry_after=30))
        assert backoff.delay(1, 0.5, failure=busy) == 30
        assert backoff.delay(1, 0.5, breaker_wait=12) == 12

    def test_a_lost_answer_to_a_write_waits_for_it_to_land_before_reading_again(self) -> None:
        backoff = Backoff(1, 300, settle=10)
        lost = rules.classify(Failure(None, transient=True, write_sent=True))
        before_write = rules.classify(Failure(None, transient=True, write_sent=False))
        assert backoff.delay(1, 0.5, failure=lost) == 10
        assert backoff.delay(1, 0.5, failure=before_write) == 0.5
        assert backoff.delay(9, 0.5, failure=lost) == 128

    @pytest.mark.parametrize(("age", "gives_up"), [(0, False), (86400, False), (86401, True)])
    def test_give_up_age(self, age: float, gives_up: bool) -> None:
        assert rules.gives_up(age, 86400) is gives_up

    def test_give_up_message_says_how_long_and_why(self) -> None:
        assert rules.give_up_message(12, 90000, "503 maintenance") == (
            "gave up after 12 attempts over 25.0 hours; last error: 503 maintenance"
        )


class TestComment:
    def test_events_in_time_order_then_tags(self) -> None:
        late = record(AttendanceEvent.LATE_CHECK_IN, 14, excused=True, comment="note")
        early = record(AttendanceEvent.EARLY_CHECK_OUT, 19, checked_out_by="Parent", reason="")
        assert rules.attendance_comment([early, late], TZ) == (
            "Late check-in 08:15. Reason: Doctor. Excused. note | "
            "Early check-out 13:15. Checked out by: Parent "
            f"[writeback:{late.record_id}] [writeback:{early.record_id}]"
        )

    def test_a_long_comment_is_cut_to_1000_characters_keeping_the_tag(self) -> None:
        rec = record(comment="x" * 5000)
        comment = rules.attendance_comment([rec], TZ)
        assert len(comment) == 1000
        assert rules.record_tags(comment) == [rec.record_id]
