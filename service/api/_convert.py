"""Protobuf <-> domain value translation. No rules live here: only shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from writeback.v1 import writeback_pb2 as pb

from service.domain import visible_student_id
from service.domain.students import school_number_of
from service.models import (
    AttemptOutcome,
    AttendanceEvent,
    AttendanceMode,
    AttendanceRecord,
    AttendanceState,
    AuditEvent,
    Caller,
    CallerRole,
    ClassLinkConnection,
    CleverConnection,
    ConnectionReport,
    DeliveryAttempt,
    DeliveryStats,
    Diagnosis,
    District,
    Finding,
    FindingCode,
    IdMode,
    JobKind,
    MeetingMark,
    PowerSchoolConnection,
    RosterSource,
    RosterStudent,
    School,
    Severity,
    Student,
    SyncJob,
    SyncPhase,
    SyncResult,
    VisibleId,
)

K = TypeVar("K")
V = TypeVar("V")

ROSTER_SOURCE = {
    pb.ROSTER_SOURCE_CLEVER: RosterSource.CLEVER,
    pb.ROSTER_SOURCE_CLASSLINK: RosterSource.CLASSLINK,
}
ID_MODE = {
    pb.ID_MODE_UNSPECIFIED: IdMode.DCID,
    pb.ID_MODE_DCID: IdMode.DCID,
    pb.ID_MODE_STUDENTS_ID: IdMode.STUDENTS_ID,
}
VISIBLE_ID = {
    pb.VISIBLE_STUDENT_ID_UNSPECIFIED: VisibleId.STUDENT_ID,
    pb.VISIBLE_STUDENT_ID_STUDENT_ID: VisibleId.STUDENT_ID,
    pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER: VisibleId.STUDENT_NUMBER,
}
ATTENDANCE_MODE = {
    pb.ATTENDANCE_MODE_UNSPECIFIED: AttendanceMode.DAILY,
    pb.ATTENDANCE_MODE_DAILY: AttendanceMode.DAILY,
    pb.ATTENDANCE_MODE_MEETING: AttendanceMode.MEETING,
    pb.ATTENDANCE_MODE_TIME: AttendanceMode.TIME,
}
EVENT = {
    pb.ATTENDANCE_EVENT_LATE_CHECK_IN: AttendanceEvent.LATE_CHECK_IN,
    pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT: AttendanceEvent.EARLY_CHECK_OUT,
}
_STATE = {
    AttendanceState.PENDING: pb.ATTENDANCE_STATE_PENDING,
    AttendanceState.WRITTEN: pb.ATTENDANCE_STATE_WRITTEN,
    AttendanceState.FAILED: pb.ATTENDANCE_STATE_FAILED,
    AttendanceState.SKIPPED: pb.ATTENDANCE_STATE_SKIPPED,
    AttendanceState.CANCELLED: pb.ATTENDANCE_STATE_CANCELLED,
}
STATE = {v: k for k, v in _STATE.items()}
_JOB_KIND_PB = {
    kind: pb.DeliveryJobKind.Value(f"DELIVERY_JOB_KIND_{kind.name}") for kind in JobKind
}
_OUTCOME_PB = {
    outcome: pb.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{outcome.name}")
    for outcome in AttemptOutcome
}


def _reverse(mapping: dict[K, V]) -> dict[V, K]:
    # Later keys win, so the explicit enum value beats UNSPECIFIED.
    return {v: k for k, v in mapping.items()}


_ROSTER_SOURCE_PB = _reverse(ROSTER_SOURCE)
_ID_MODE_PB = _reverse(ID_MODE)
_VISIBLE_ID_PB = _reverse(VISIBLE_ID)
_EVENT_PB = _reverse(EVENT)
_ATTENDANCE_MODE_PB = _reverse(ATTENDANCE_MODE)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None for an unset time; a naive ``value`` is taken as UTC,
    as ``Timestamp.FromDatetime`` takes it."""
    if value is None:
        return None
    # FromDatetime goes through a time tuple and calendar.timegm: a few microseconds per
    # field, and a record answer has four.
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000)


def district_from_pb(msg: pb.District) -> District:
    """A validated District message as a domain District."""
    return District(
        district_id=msg.district_id,
        name=msg.name,
        roster_source=ROSTER_SOURCE[msg.roster_source],
        id_mode=ID_MODE[msg.id_mode],
        visible_student_id=VISIBLE_ID[msg.visible_student_id],
        writeback_enabled=msg.writeback_enabled,
        timezone=msg.timezone,
        powerschool=PowerSchoolConnection(
            base_url=msg.powerschool.base_url.rstrip("/"),
            client_id=msg.powerschool.client_id,
            client_secret=msg.powerschool.client_secret,
        ),
        schools=tuple(
            School(
                school_number=s.school_number,
                roster_school_id=s.roster_school_id,
                name=s.name,
                timezone=s.timezone,
                writeback_enabled=s.writeback_enabled,
                late_check_in_code=s.late_check_in_code,
                early_check_out_code=s.early_check_out_code,
                late_check_in_excused_code=s.late_check_in_excused_code,
                early_check_out_excused_code=s.early_check_out_excused_code,
                late_and_early_code=s.late_and_early_code,
                absence_codes=tuple(s.absence_codes),
                attendance_mode=ATTENDANCE_MODE[s.attendance_mode],
                missed_code=s.missed_code,
            )
            for s in msg.schools
        ),
        clever=CleverConnection(
            base_url=msg.clever.base_url.rstrip("/"),
            client_id=msg.clever.client_id,
            client_secret=msg.clever.client_secret,
            district_token=msg.clever.district_token,
            clever_district_id=msg.clever.clever_district_id,
        ),
        classlink=ClassLinkConnection(
            endpoint_url=msg.classlink.endpoint_url.rstrip("/"),
            client_id=msg.classlink.client_id,
            client_secret=msg.classlink.client_secret,
        ),
        sync_interval_seconds=msg.sync_interval.seconds,
        max_in_flight=msg.max_in_flight,
        max_requests_per_second=msg.max_requests_per_second,
    )


def district_to_pb(district: District) -> pb.District:
    """A domain District as a message, without its secret."""
    return pb.District(
        district_id=district.district_id,
        name=district.name,
        roster_source=_ROSTER_SOURCE_PB[district.roster_source],
        id_mode=_ID_MODE_PB[district.id_mode],
        visible_student_id=_VISIBLE_ID_PB[district.visible_student_id],
        writeback_enabled=district.writeback_enabled,
        timezone=district.timezone,
        powerschool=pb.PowerSchoolConnection(
            base_url=district.powerschool.base_url,
            client_id=district.powerschool.client_id,
            has_client_secret=bool(district.powerschool.client_secret),
        ),
        schools=[
            pb.School(
                school_number=s.school_number,
                roster_school_id=s.roster_school_id,
                name=s.name,
                timezone=s.timezone,
                writeback_enabled=s.writeback_enabled,
                late_check_in_code=s.late_check_in_code,
                early_check_out_code=s.early_check_out_code,
                late_check_in_excused_code=s.late_check_in_excused_code,
                early_check_out_excused_code=s.early_check_out_excused_code,
                late_and_early_code=s.late_and_early_code,
                absence_codes=list(s.absence_codes),
                attendance_mode=_ATTENDANCE_MODE_PB[s.attendance_mode],
                missed_code=s.missed_code,
            )
            for s in district.schools
        ],
        created_at=timestamp(district.created_at),
        updated_at=timestamp(district.updated_at),
        clever=pb.CleverConnection(
            base_url=district.clever.base_url,
            client_id=district.clever.client_id,
            clever_district_id=district.clever.clever_district_id,
            has_client_secret=bool(district.clever.client_secret),
            has_district_token=bool(district.clever.district_token),
        ),
        classlink=pb.ClassLinkConnection(
            endpoint_url=district.classlink.endpoint_url,
            client_id=district.classlink.client_id,
            has_client_secret=bool(district.classlink.client_secret),
        ),
        sync_interval=Duration(seconds=district.sync_interval_seconds)
        if district.sync_interval_seconds
        else None,
        last_sync_at=timestamp(district.last_sync_at),
        last_sync_error=district.last_sync_error,
        max_in_flight=district.max_in_flight,
        max_requests_per_second=district.max_requests_per_second,
    )


def roster_student_from_pb(msg: pb.RosterStudent) -> RosterStudent:
    """A RosterStudent message as a domain RosterStudent."""
    return RosterStudent(
        roster_id=msg.roster_id,
        sis_id=msg.sis_id,
        student_number=msg.student_number,
        first_name=msg.first_name,
        last_name=msg.last_name,
        roster_school_id=msg.roster_school_id,
        grade=msg.grade,
        active=msg.active,
    )


def student_to_pb(district: District, student: Student) -> pb.Student:
    """A resolved student as a message, with the district's visible ID."""
    roster = student.roster
    return pb.Student(
        roster_id=roster.roster_id,
        sis_id=roster.sis_id,
        dcid=student.dcid or 0,
        powerschool_id=student.powerschool_id or 0,
        student_number=roster.student_number,
        visible_student_id=visible_student_id(district, student),
        first_name=roster.first_name,
        last_name=roster.last_name,
        school_number=school_number_of(district, student) or 0,
        grade=roster.grade,
        active=roster.active,
    )


def record_to_pb(record: AttendanceRecord) -> pb.AttendanceRecord:
    """A stored record as a message."""
    return pb.AttendanceRecord(
        record_id=record.record_id,
        district_id=record.district_id,
        state=_STATE[record.state],
        event=_EVENT_PB[record.event],
        att_date=record.att_date.isoformat(),
        attendance_code=record.attendance_code,
        powerschool_attendance_id=record.powerschool_attendance_id or 0,
        attempts=record.attempts,
        last_error=record.last_error,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        idempotency_key=record.idempotency_key,
        school_number=record.school_number,
        occurred_at=timestamp(record.occurred_at),
        roster_id=record.roster_id,
        replaced_attendance_code=record.replaced_att_code,
        replaced_comment=record.replaced_comment,
        next_attempt_at=timestamp(record.next_attempt_at),
        reason=record.reason,
        excused=record.excused,
        cancel_reason=record.cancel_reason,
        history=[_attempt_to_pb(a) for a in record.history],
        cancel_outcome=record.cancel_outcome,
        meetings=[_meeting_to_pb(m) for m in record.meetings],
    )


def _meeting_to_pb(mark: MeetingMark) -> pb.MeetingMark:
    """One class meeting of a Meeting-mode record as a message."""
    return pb.MeetingMark(
        period_id=mark.period_id,
        period=mark.period,
        ccid=mark.ccid,
        attendance_code=mark.attendance_code,
        replaced_attendance_code=mark.replaced.att_code if mark.replaced else "",
        replaced_comment=mark.replaced.comment if mark.replaced else "",
        start_time=mark.start_time,
        end_time=mark.end_time,
        left_unchanged=mark.left_unchanged,
    )


def _attempt_to_pb(attempt: DeliveryAttempt) -> pb.DeliveryAttempt:
    """One entry of a record's delivery history as a message."""
    return pb.DeliveryAttempt(
        at=timestamp(attempt.at),
        kind=_JOB_KIND_PB[attempt.kind],
        outcome=_OUTCOME_PB[attempt.outcome],
        powerschool_status=attempt.powerschool_status or 0,
        attendance_code=attempt.attendance_code,
        yearid=attempt.yearid or 0,
        error=attempt.error,
    )


def aware(ts: Timestamp) -> datetime:
    """A protobuf Timestamp as a UTC-aware datetime."""
    return ts.ToDatetime(tzinfo=UTC)


def sync_result_to_pb(result: SyncResult, *, sync_id: str = "") -> pb.SyncRosterResponse:
    """A sync outcome as a message."""
    duration = Duration()
    duration.FromNanoseconds(int(result.duration * 1e9))
    return pb.SyncRosterResponse(
        created=result.counts.created,
        updated=result.counts.updated,
        deactivated=result.counts.deactivated,
        unchanged=result.counts.unchanged,
        duration=duration,
        full=result.full,
        prefetched=result.prefetched,
        unresolved=result.unresolved,
        sync_id=sync_id,
    )


_PHASE_PB = {phase: pb.SyncPhase.Value(f"SYNC_PHASE_{phase.name}") for phase in SyncPhase}


def sync_job_to_pb(job: SyncJob) -> pb.SyncStatus:
    """A sync job's state as a message."""
    return pb.SyncStatus(
        sync_id=job.sync_id,
        phase=_PHASE_PB[job.phase],
        pages_done=job.pages_done,
        students_done=job.students_done,
        started_at=timestamp(job.started_at),
        finished_at=timestamp(job.finished_at),
        full=job.full,
        created=job.counts.created,
        updated=job.counts.updated,
        deactivated=job.counts.deactivated,
        unchanged=job.counts.unchanged,
        prefetched=job.prefetched,
        unresolved=job.unresolved,
        error=job.error,
        error_reason=job.error_reason,
    )


def sync_job_to_response(job: SyncJob) -> pb.SyncRosterResponse:
    """A finished sync job as SyncRoster's answer."""
    ended = job.finished_at or job.started_at
    return sync_result_to_pb(
        SyncResult(
            counts=job.counts,
            full=job.full,
            duration=(ended - job.started_at).total_seconds(),
            prefetched=job.prefetched,
            unresolved=job.unresolved,
        ),
        sync_id=job.sync_id,
    )


_FINDING_PB = {code: pb.FindingCode.Value(f"FINDING_CODE_{code.name}") for code in FindingCode}
_SEVERITY_PB = {sev: pb.Severity.Value(f"SEVERITY_{sev.name}") for sev in Severity}


def _finding_to_pb(f: Finding) -> pb.MappingFinding:
    return pb.MappingFinding(
        code=_FINDING_PB[f.code],
        severity=_SEVERITY_PB[f.severity],
        message=f.message,
        count=f.count,
        checked=f.checked,
        examples=list(f.examples),
        school_number=f.school_number,
    )


def diagnosis_to_pb(diagnosis: Diagnosis) -> pb.DiagnoseMappingResponse:
    """A diagnosis as a message."""
    return pb.DiagnoseMappingResponse(
        findings=[_finding_to_pb(f) for f in diagnosis.findings],
        sampled=diagnosis.sampled,
        active_students=diagnosis.active_students,
    )


def connection_report_to_pb(report: ConnectionReport) -> pb.CheckConnectionResponse:
    """A connection check's findings as a message."""
    return pb.CheckConnectionResponse(
        findings=[_finding_to_pb(f) for f in report.findings],
        schools_checked=report.schools_checked,
    )


_BREAKER_PB = {
    "closed": pb.BREAKER_STATE_CLOSED,
    "open": pb.BREAKER_STATE_OPEN,
    "half_open": pb.BREAKER_STATE_HALF_OPEN,
    "unknown": pb.BREAKER_STATE_UNSPECIFIED,
}


def stats_to_pb(stats: DeliveryStats) -> pb.DeliveryStats:
    """Delivery stats as a message."""
    age = None
    if stats.oldest_pending_age is not None:
        age = Duration()
        age.FromNanoseconds(int(stats.oldest_pending_age * 1e9))
    return pb.DeliveryStats(
        district_id=stats.district_id,
        pending=stats.pending,
        oldest_pending_age=age,
        failed=stats.failed,
        written_last_hour=stats.written_last_hour,
        breaker_state=_BREAKER_PB[stats.breaker_state],
        paused_until=timestamp(stats.paused_until),
    )


CALLER_ROLE: dict[CallerRole, pb.CallerRole.ValueType] = {
    CallerRole.READER: pb.CALLER_ROLE_READER,
    CallerRole.WRITER: pb.CALLER_ROLE_WRITER,
    CallerRole.OPERATOR: pb.CALLER_ROLE_OPERATOR,
    CallerRole.ADMIN: pb.CALLER_ROLE_ADMIN,
}
CALLER_ROLE_FROM_PB = {v: k for k, v in CALLER_ROLE.items()}


def caller_to_pb(caller: Caller) -> pb.Caller:
    """A caller as the API shows it (it has no token to show)."""
    return pb.Caller(
        caller_id=caller.caller_id,
        name=caller.name,
        role=CALLER_ROLE[caller.role],
        district_ids=sorted(caller.district_ids),
        all_districts=caller.all_districts,
        token_prefix=f"wb_{caller.token_prefix}" if caller.token_prefix else "",
        created_at=timestamp(caller.created_at),
        revoked_at=timestamp(caller.revoked_at),
    )


def audit_event_to_pb(event: AuditEvent) -> pb.AuditEvent:
    """An audit event as the API shows it."""
    return pb.AuditEvent(
        event_id=event.event_id,
        at=timestamp(event.at),
        caller_id=event.caller_id,
        caller_name=event.caller_name,
        action=event.action,
        district_id=event.district_id,
        target=event.target,
        changed_fields=list(event.changed_fields),
        details=event.details,
    )
