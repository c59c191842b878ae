"""Value types shared by every layer: plain data, no I/O, no gRPC, no HTTP."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime


class RosterSource(enum.StrEnum):
    """Where a district's students come from."""

    CLEVER = "clever"
    CLASSLINK = "classlink"


class IdMode(enum.StrEnum):
    """Which PowerSchool key the roster's student-ID field (``sis_id``) carries."""

    DCID = "dcid"
    STUDENTS_ID = "students_id"


class VisibleId(enum.StrEnum):
    """Which ID staff see on student profiles."""

    STUDENT_ID = "student_id"
    STUDENT_NUMBER = "student_number"


class AttendanceEvent(enum.StrEnum):
    """What happened at the front office."""

    LATE_CHECK_IN = "late_check_in"
    EARLY_CHECK_OUT = "early_check_out"


class AttendanceState(enum.StrEnum):
    """Where a record is in its life: stored, written, refused or deliberately not sent."""

    PENDING = "pending"
    WRITTEN = "written"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PowerSchoolConnection:
    """How to reach a district's PowerSchool. The secret never appears in a repr."""

    base_url: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)

    @property
    def configured(self) -> bool:
        """True when all three parts are present."""
        return bool(self.base_url and self.client_id and self.client_secret)


@dataclass(frozen=True)
class CleverConnection:
    """A Clever district-app connection: client credentials or a district token."""

    base_url: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    district_token: str = field(default="", repr=False)
    clever_district_id: str = ""

    @property
    def configured(self) -> bool:
        """True when the service can get a district token."""
        return bool(self.district_token or (self.client_id and self.client_secret))


@dataclass(frozen=True)
class ClassLinkConnection:
    """A ClassLink Roster Server (OneRoster 1.1 with OAuth 1.0a signatures)."""

    endpoint_url: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)

    @property
    def configured(self) -> bool:
        """True when all three parts are present."""
        return bool(self.endpoint_url and self.client_id and self.client_secret)


class AttendanceMode(enum.StrEnum):
    """How a school takes attendance in PowerSchool (ATTENDANCE.ATT_MODE_CODE)."""

    DAILY = "daily"
    MEETING = "meeting"
    TIME = "time"


@dataclass(frozen=True)
class School:
    """A school of a district, keyed by PowerSchool SCHOOLS.SCHOOL_NUMBER."""

    school_number: int
    roster_school_id: str = ""
    name: str = ""
    timezone: str = ""
    writeback_enabled: bool = True
    late_check_in_code: str = ""
    early_check_out_code: str = ""
    late_check_in_excused_code: str = ""
    early_check_out_excused_code: str = ""
    late_and_early_code: str = ""
    absence_codes: tuple[str, ...] = ()
    attendance_mode: AttendanceMode = AttendanceMode.DAILY
    missed_code: str = ""
    """Meeting mode: the code of a class meeting a late arrival missed entirely."""

    def own_codes(self) -> set[str]:
        """Every code the service itself writes for this school."""
        return {
            c
            for c in (
                self.late_check_in_code,
                self.early_check_out_code,
                self.late_check_in_excused_code,
                self.early_check_out_excused_code,
                self.late_and_early_code,
            )
            if c
        }

    def code_for(self, event: AttendanceEvent, *, excused: bool) -> str:
        """The ATT_CODE to apply for an event; excused codes fall back to the plain ones."""
        if event is AttendanceEvent.LATE_CHECK_IN:
            return (excused and self.late_check_in_excused_code) or self.late_check_in_code
        return (excused and self.early_check_out_excused_code) or self.early_check_out_code


@dataclass(frozen=True)
class District:
    """A district's configuration."""

    district_id: str
    name: str = ""
    roster_source: RosterSource = RosterSource.CLEVER
    id_mode: IdMode = IdMode.DCID
    visible_student_id: VisibleId = VisibleId.STUDENT_ID
    writeback_enabled: bool = False
    timezone: str = "UTC"
    powerschool: PowerSchoolConnection = PowerSchoolConnection()
    schools: tuple[School, ...] = ()
    clever: CleverConnection = CleverConnection()
    classlink: ClassLinkConnection = ClassLinkConnection()
    sync_interval_seconds: int = 0
    max_in_flight: int = 0
    max_requests_per_second: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_sync_at: datetime | None = None
    last_sync_error: str = ""

    def school_by_number(self, school_number: int) -> School | None:
        """The configured school with that SCHOOLS.SCHOOL_NUMBER, if any."""
        return next((s for s in self.schools if s.school_number == school_number), None)

    def school_by_roster_id(self, roster_school_id: str) -> School | None:
        """The configured school the roster calls ``roster_school_id``, if any."""
        if not roster_school_id:
            return None
        return next((s for s in self.schools if s.roster_school_id == roster_school_id), None)


@dataclass(frozen=True)
class RosterStudent:
    """A student as the roster (Clever / ClassLink) describes them. Names stay out of reprs."""

    roster_id: str
    sis_id: str = ""
    student_number: str = ""
    first_name: str = field(default="", repr=False)
    last_name: str = field(default="", repr=False)
    roster_school_id: str = ""
    grade: str = ""
    active: bool = True


@dataclass(frozen=True)
class Student:
    """A roster student plus what PowerSchool told us about them (once resolved)."""

    roster: RosterStudent
    dcid: int | None = None
    powerschool_id: int | None = None
    powerschool_school_number: int | None = None


@dataclass(frozen=True)
class ImportCounts:
    """Outcome of a roster upsert; ``deactivated`` counts students switched off, including
    older records that held a DCID now carried by another roster record."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0

    def __add__(self, other: ImportCounts) -> ImportCounts:
        return ImportCounts(
            self.created + other.created,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.deactivated + other.deactivated,
        )


@dataclass(frozen=True)
class AttendanceRequest:
    """A check-in or check-out as the front office reported it."""

    district_id: str
    idempotency_key: str
    event: AttendanceEvent
    occurred_at: datetime
    school_number: int | None = None
    # Free text from the front office may name people: kept out of reprs.
    reason: str = field(default="", repr=False)
    excused: bool = False
    comment: str = field(default="", repr=False)
    checked_out_by: str = field(default="", repr=False)


@dataclass(frozen=True)
class AttendanceRecord:
    """A stored attendance record and its delivery state."""

    record_id: str
    district_id: str
    idempotency_key: str
    request_hash: str
    roster_id: str
    event: AttendanceEvent
    occurred_at: datetime
    school_number: int
    att_date: date
    attendance_code: str
    state: AttendanceState
    reason: str = field(default="", repr=False)
    excused: bool = False
    comment: str = field(default="", repr=False)
    checked_out_by: str = field(default="", repr=False)
    powerschool_attendance_id: int | None = None
    attempts: int = 0
    last_error: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    replaced_attendance_codeid: int | None = None
    replaced_att_code: str = ""
    replaced_comment: str = field(default="", repr=False)
    replaced_set: bool = False
    cancel_reason: str = field(default="", repr=False)
    cancel_requested: bool = False
    next_attempt_at: datetime | None = None
    cancel_outcome: str = ""
    """What a finished cancel did in PowerSchool ("restored 'A'", "removed the row"...)."""
    history: tuple[DeliveryAttempt, ...] = ()
    """Every delivery attempt, oldest first (filled by single-record reads only)."""
    meetings: tuple[MeetingMark, ...] = ()
    """Meeting mode: the class meetings the record concerns, in time order."""


@dataclass(frozen=True)
class MeetingMark:
    """One class meeting of a Meeting-mode record: what the service wrote there (or why it
    left it alone) and the PowerSchool value it replaced, kept so a cancel can put it back."""

    ccid: int
    period_id: int
    period: str = ""
    start_time: int = 0
    end_time: int = 0
    attendance_code: str = ""
    """The ATT_CODE written; empty when the meeting was left alone."""
    replaced: Replaced | None = None
    left_unchanged: str = ""


class JobKind(enum.StrEnum):
    """What a delivery job does in PowerSchool."""

    WRITE = "write"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Replaced:
    """The PowerSchool value a write replaced, kept so a cancel can put it back."""

    attendance_codeid: int | None
    att_code: str
    comment: str = field(repr=False)


class AttemptOutcome(enum.StrEnum):
    """How one delivery attempt ended."""

    WRITTEN = "written"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "retry"
    """A transient failure: the job was rescheduled."""


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt in a record's delivery history."""

    at: datetime
    kind: JobKind
    outcome: AttemptOutcome
    powerschool_status: int | None = None
    """HTTP status of PowerSchool's last answer in this attempt; None if it did not answer."""
    attendance_code: str = ""
    """The ATT_CODE this attempt planned with ("" if it never got that far)."""
    yearid: int | None = None
    error: str = ""


@dataclass(frozen=True)
class DeliveryJob:
    """A claimed unit of delivery work."""

    record_id: str
    district_id: str
    kind: JobKind
    attempts: int
    first_attempt_at: datetime | None
    created_at: datetime
    lease_token: str
    """This claim's fencing token: outcomes are only accepted with it."""
    request_id: str | None = None
    """The request that queued (or last re-queued) the job, for its log lines."""
    traceparent: str | None = None
    """That request's W3C trace context, which the delivery continues."""


@dataclass(frozen=True)
class RecordFilter:
    """ListAttendance filters; None means any."""

    state: AttendanceState | None = None
    school_number: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    roster_id: str | None = None


@dataclass(frozen=True)
class DeliveryStats:
    """A district's delivery backlog and health."""

    district_id: str
    pending: int
    oldest_pending_age: float | None
    failed: int
    written_last_hour: int
    breaker_state: str = "closed"
    paused_until: datetime | None = None


class KeyKind(enum.StrEnum):
    """Which identifier a caller used to name a student."""

    SIS_ID = "sis_id"
    STUDENT_NUMBER = "student_number"
    ROSTER_ID = "roster_id"
    POWERSCHOOL_ID = "powerschool_id"


@dataclass(frozen=True)
class StudentKey:
    """A student named by one identifier; ``value`` is already validated."""

    kind: KeyKind
    value: str


@dataclass(frozen=True)
class SyncResult:
    """What one roster sync did."""

    counts: ImportCounts
    full: bool
    duration: float
    prefetched: int = 0
    unresolved: int = 0


class SyncPhase(enum.StrEnum):
    """Where a roster sync job is."""

    READING = "reading"
    PREFETCHING = "prefetching"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class SyncJob:
    """One roster sync job as stored: progress while it runs, its outcome once it ended."""

    sync_id: str
    district_id: str
    phase: SyncPhase
    started_at: datetime
    finished_at: datetime | None = None
    pages_done: int = 0
    students_done: int = 0
    full: bool = False
    counts: ImportCounts = field(default_factory=ImportCounts)
    prefetched: int = 0
    unresolved: int = 0
    error: str = ""
    error_reason: str = ""


class FindingCode(enum.StrEnum):
    """A kind of problem DiagnoseMapping (mapping) or CheckConnection (connections) reports."""

    SIS_ID_LOOKS_LIKE_STUDENTS_ID = "sis_id_looks_like_students_id"
    SIS_ID_NOT_NUMERIC = "sis_id_not_numeric"
    DCID_UNKNOWN = "dcid_unknown"
    STUDENT_NUMBER_MISMATCH = "student_number_mismatch"
    DUPLICATE_STUDENT_NUMBER = "duplicate_student_number"
    SCHOOL_NOT_MAPPED = "school_not_mapped"
    VISIBLE_ID_SHOWS_DCID = "visible_id_shows_dcid"
    STUDENT_NUMBER_MISSING = "student_number_missing"
    SIS_ID_LOOKS_LIKE_DCID = "sis_id_looks_like_dcid"
    POWERSCHOOL_NOT_CONFIGURED = "powerschool_not_configured"
    POWERSCHOOL_NOT_TLS = "powerschool_not_tls"
    POWERSCHOOL_UNREACHABLE = "powerschool_unreachable"
    POWERSCHOOL_CREDENTIALS_REFUSED = "powerschool_credentials_refused"
    POWERSCHOOL_FIELD_FORBIDDEN = "powerschool_field_forbidden"
    POWERQUERY_UNAVAILABLE = "powerquery_unavailable"
    SCHOOL_YEAR_MISSING = "school_year_missing"
    ATTENDANCE_MODE_UNSUPPORTED = "attendance_mode_unsupported"
    ATTENDANCE_CODE_MISSING = "attendance_code_missing"
    TIMEZONE_INVALID = "timezone_invalid"
    ROSTER_NOT_CONFIGURED = "roster_not_configured"
    ROSTER_CREDENTIALS_REFUSED = "roster_credentials_refused"
    ROSTER_UNREACHABLE = "roster_unreachable"
    ONEROSTER_ENDPOINT_WRONG = "oneroster_endpoint_wrong"
    ROSTER_SCHOOL_NOT_VISIBLE = "roster_school_not_visible"
    POWERSCHOOL_CHECK_FAILED = "powerschool_check_failed"
    CLEVER_EVENTS_OFF = "clever_events_off"


class Severity(enum.StrEnum):
    """How urgent a finding is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One problem: what, how bad, how many, a few roster IDs (never names), and the school
    it concerns (0: the district)."""

    code: FindingCode
    severity: Severity
    message: str
    count: int
    checked: int
    examples: tuple[str, ...] = ()
    school_number: int = 0


@dataclass(frozen=True)
class Diagnosis:
    """Everything DiagnoseMapping found."""

    findings: tuple[Finding, ...]
    sampled: int
    active_students: int


@dataclass(frozen=True)
class ConnectionReport:
    """Everything CheckConnection found, and how many enabled schools it checked."""

    findings: tuple[Finding, ...]
    schools_checked: int


class CallerRole(enum.IntEnum):
    """What a caller may do; each role may do everything the roles below it may."""

    READER = 1
    WRITER = 2
    OPERATOR = 3
    ADMIN = 4


@dataclass(frozen=True)
class Caller:
    """An identified caller: its role, and the districts it may touch (``all_districts``, or
    exactly ``district_ids``). ``caller_id`` is "" for callers with no stored row (the
    bootstrap admin, everyone under AUTH=off). Holds no token."""

    caller_id: str
    name: str
    role: CallerRole
    all_districts: bool = False
    district_ids: frozenset[str] = frozenset()
    token_prefix: str = ""
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def may_touch(self, district_id: str) -> bool:
        """True when the district is within the caller's districts."""
        return self.all_districts or district_id in self.district_ids


@dataclass(frozen=True)
class AuditEvent:
    """One recorded change: who, when, what (``changed_fields`` names fields, never a secret's
    value; ``details`` is small context such as a record's state or a retry's date range)."""

    event_id: int
    at: datetime
    caller_id: str
    caller_name: str
    action: str
    district_id: str = ""
    target: str = ""
    changed_fields: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)
