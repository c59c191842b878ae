"""Field checks at the edge. Each check adds a violation naming the field path, so one
answer lists everything wrong with a request instead of the first problem only."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from writeback.v1 import writeback_pb2 as pb

from service.api._convert import CALLER_ROLE_FROM_PB, EVENT, ROSTER_SOURCE, STATE
from service.domain.politeness import DEFAULT_IN_FLIGHT, DEFAULT_RATE
from service.errors import FieldViolation, InvalidArgument
from service.models import KeyKind, RecordFilter, StudentKey

_DISTRICT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Roster and card identifiers: visible ASCII, no spaces (they end up in lookups and logs).
_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,128}")
_ATT_CODE = re.compile(r"[\x21-\x7e]{1,10}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_IMPORT = 10_000
# The largest US districts have under 2,000 schools; a school lists a handful of codes.
MAX_SCHOOLS = 2_000
MAX_ABSENCE_CODES = 50
MIN_SYNC_INTERVAL = 60
_MAX_FUTURE = timedelta(hours=1)
_MAX_PAST = timedelta(days=400)


def is_district_id(value: str) -> bool:
    """Whether ``value`` has the form of a district ID (safe to put in a log line)."""
    return _DISTRICT_ID.fullmatch(value) is not None


class Checker:
    """Collects violations; :meth:`done` raises them all at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        """Record one violation."""
        self.violations.append(FieldViolation(field, description))

    def done(self) -> None:
        """Raise :class:`InvalidArgument` if anything was recorded."""
        if self.violations:
            raise InvalidArgument(self.violations)

    def district_id(self, field: str, value: str) -> None:
        """1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit."""
        if not value:
            self.fail(field, "is required")
        elif not _DISTRICT_ID.fullmatch(value):
            self.fail(field, "must be 1-64 letters, digits, '.', '_' or '-'")

    def text(self, field: str, value: str, max_len: int, *, required: bool = False) -> None:
        """Free text: bounded length, no control characters."""
        if required and not value.strip():
            self.fail(field, "is required")
        elif len(value) > max_len:
            self.fail(field, f"must be at most {max_len} characters")
        elif _CONTROL.search(value):
            self.fail(field, "must not contain control characters")

    def identifier(self, field: str, value: str, *, required: bool = True) -> None:
        """An ID: 1-128 visible ASCII characters, no spaces."""
        if not value:
            if required:
                self.fail(field, "is required")
        elif not _IDENTIFIER.fullmatch(value):
            self.fail(field, "must be 1-128 visible ASCII characters without spaces")

    def timezone(self, field: str, value: str, *, required: bool) -> None:
        """An IANA time zone name."""
        if not value:
            if required:
                self.fail(field, "is required (an IANA time zone such as America/Chicago)")
            return
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            self.fail(field, f"is not a known IANA time zone: {value[:64]!r}")

    def att_code(self, field: str, value: str) -> None:
        """A PowerSchool ATT_CODE (may be empty when unused)."""
        if value and not _ATT_CODE.fullmatch(value):
            self.fail(field, "must be 1-10 visible ASCII characters")

    def base_url(self, field: str, value: str) -> None:
        """An http(s) URL with a host and nothing after the path."""
        if not value:
            return
        parts = urlsplit(value)
        if (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username
            or parts.password
            or len(value) > 500
        ):
            self.fail(field, "must be an http(s) URL such as https://ps.example.org")


def check_district(msg: pb.District, field: str = "district") -> None:
    """Validate an UpsertDistrict payload."""
    c = Checker()
    c.district_id(f"{field}.district_id", msg.district_id)
    c.text(f"{field}.name", msg.name, 200)
    if msg.roster_source not in ROSTER_SOURCE:
        c.fail(f"{field}.roster_source", "must be ROSTER_SOURCE_CLEVER or ROSTER_SOURCE_CLASSLINK")
    if msg.id_mode not in pb.IdMode.values():
        c.fail(f"{field}.id_mode", "is not a known IdMode")
    if msg.visible_student_id not in pb.VisibleStudentId.values():
        c.fail(f"{field}.visible_student_id", "is not a known VisibleStudentId")
    c.timezone(f"{field}.timezone", msg.timezone, required=True)
    c.base_url(f"{field}.powerschool.base_url", msg.powerschool.base_url)
    c.text(f"{field}.powerschool.client_id", msg.powerschool.client_id, 200)
    if len(msg.powerschool.client_secret) > 500:
        c.fail(f"{field}.powerschool.client_secret", "must be at most 500 characters")
    c.base_url(f"{field}.clever.base_url", msg.clever.base_url)
    c.text(f"{field}.clever.client_id", msg.clever.client_id, 200)
    c.text(f"{field}.clever.clever_district_id", msg.clever.clever_district_id, 64)
    c.base_url(f"{field}.classlink.endpoint_url", msg.classlink.endpoint_url)
    c.text(f"{field}.classlink.client_id", msg.classlink.client_id, 200)
    for secret in ("clever.client_secret", "clever.district_token", "classlink.client_secret"):
        part, name = secret.split(".")
        if len(getattr(getattr(msg, part), name)) > 500:
            c.fail(f"{field}.{secret}", "must be at most 500 characters")
    if msg.HasField("sync_interval") and not (
        msg.sync_interval.seconds == 0
        or MIN_SYNC_INTERVAL <= msg.sync_interval.seconds <= 86_400 * 7
    ):
        c.fail(f"{field}.sync_interval", "must be 0 (off) or between 60 seconds and 7 days")
    if not 0 <= msg.max_in_flight <= 64:
        c.fail(f"{field}.max_in_flight", f"must be between 0 (default {DEFAULT_IN_FLIGHT}) and 64")
    if not 0 <= msg.max_requests_per_second <= 1000:
        c.fail(
            f"{field}.max_requests_per_second",
            f"must be between 0 (default {DEFAULT_RATE}) and 1000",
        )
    _check_schools(c, field, msg.schools)
    c.done()


def _check_schools(c: Checker, field: str, schools: Sequence[pb.School]) -> None:
    if len(schools) > MAX_SCHOOLS:
        # Each school's checks would repeat for thousands: the count is the one fix.
        c.fail(f"{field}.schools", f"must hold at most {MAX_SCHOOLS} schools")
        return
    numbers: set[int] = set()
    roster_ids: set[str] = set()
    for i, school in enumerate(schools):
        f = f"{field}.schools[{i}]"
        if school.school_number in numbers:
            c.fail(f"{f}.school_number", f"{school.school_number} appears more than once")
        numbers.add(school.school_number)
        if school.roster_school_id and school.roster_school_id in roster_ids:
            c.fail(f"{f}.roster_school_id", "appears more than once")
        roster_ids.add(school.roster_school_id)
        _check_school(c, f, school)


def _check_school(c: Checker, f: str, school: pb.School) -> None:
    if school.school_number <= 0:
        c.fail(f"{f}.school_number", "must be a positive PowerSchool SCHOOLS.SCHOOL_NUMBER")
    c.identifier(f"{f}.roster_school_id", school.roster_school_id, required=False)
    c.text(f"{f}.name", school.name, 200)
    c.timezone(f"{f}.timezone", school.timezone, required=False)
    for code_field in (
        "late_check_in_code",
        "early_check_out_code",
        "late_check_in_excused_code",
        "early_check_out_excused_code",
        "late_and_early_code",
        "missed_code",
    ):
        c.att_code(f"{f}.{code_field}", getattr(school, code_field))
    if school.attendance_mode not in pb.AttendanceMode.values():
        c.fail(f"{f}.attendance_mode", "is not a known AttendanceMode")
    elif (
        school.attendance_mode == pb.ATTENDANCE_MODE_MEETING
        and school.writeback_enabled
        and not school.missed_code
    ):
        c.fail(
            f"{f}.missed_code",
            "is required for a Meeting-mode school: the code of the class meetings a late "
            "arrival missed (e.g. an excused absence)",
        )
    if len(school.absence_codes) > MAX_ABSENCE_CODES:
        c.fail(f"{f}.absence_codes", f"must hold at most {MAX_ABSENCE_CODES} codes")
        return
    for j, code in enumerate(school.absence_codes):
        if not code:
            c.fail(f"{f}.absence_codes[{j}]", "must not be empty")
        c.att_code(f"{f}.absence_codes[{j}]", code)


def check_roster_students(district_id: str, students: list[pb.RosterStudent]) -> None:
    """Validate an ImportStudents payload."""
    c = Checker()
    c.district_id("district_id", district_id)
    if not students:
        c.fail("students", "must hold at least one student")
    elif len(students) > MAX_IMPORT:
        c.fail("students", f"must hold at most {MAX_IMPORT} students per call")
    seen: set[str] = set()
    for i, s in enumerate(students):
        f = f"students[{i}]"
        c.identifier(f"{f}.roster_id", s.roster_id)
        if s.roster_id in seen:
            c.fail(f"{f}.roster_id", "appears more than once in this call")
        seen.add(s.roster_id)
        c.identifier(f"{f}.sis_id", s.sis_id, required=False)
        c.identifier(f"{f}.student_number", s.student_number, required=False)
        c.identifier(f"{f}.roster_school_id", s.roster_school_id, required=False)
        c.text(f"{f}.first_name", s.first_name, 100)
        c.text(f"{f}.last_name", s.last_name, 100)
        c.text(f"{f}.grade", s.grade, 16)
        if len(c.violations) >= 100:  # enough to act on; don't build a 10,000-line answer
            break
    c.done()


# By the oneof's field name; calling the enum to look one up costs more than the rest.
_KEY_KINDS = {kind.value: kind for kind in KeyKind}


def student_key(c: Checker, field: str, msg: pb.StudentKey) -> StudentKey | None:
    """The key a StudentKey message names, or None after recording why it is bad."""
    which = msg.WhichOneof("key")
    if which is None:
        c.fail(field, "must set one of sis_id, student_number, roster_id, powerschool_id")
        return None
    if which == "powerschool_id":
        if msg.powerschool_id <= 0:
            c.fail(f"{field}.powerschool_id", "must be a positive PowerSchool STUDENTS.ID")
            return None
        return StudentKey(KeyKind.POWERSCHOOL_ID, str(msg.powerschool_id))
    value: str = getattr(msg, which)
    before = len(c.violations)
    c.identifier(f"{field}.{which}", value)
    return StudentKey(_KEY_KINDS[which], value) if len(c.violations) == before else None


def check_resolve(msg: pb.ResolveStudentRequest) -> StudentKey:
    """Validate a ResolveStudent request and return its key."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    key = student_key(c, "key", msg.key)
    c.done()
    assert key is not None  # done() raised otherwise
    return key


def check_submit(msg: pb.SubmitAttendanceRequest, now: datetime | None = None) -> StudentKey:
    """Validate a SubmitAttendance request and return its student key."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    c.identifier("idempotency_key", msg.idempotency_key)
    key = student_key(c, "student", msg.student)
    if msg.event not in EVENT:
        c.fail(
            "event", "must be ATTENDANCE_EVENT_LATE_CHECK_IN or ATTENDANCE_EVENT_EARLY_CHECK_OUT"
        )
    if not msg.HasField("occurred_at"):
        c.fail("occurred_at", "is required")
    else:
        now = now or datetime.now(UTC)
        try:
            at = msg.occurred_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            c.fail("occurred_at", "is not a valid timestamp")
        else:
            if at > now + _MAX_FUTURE:
                c.fail("occurred_at", "is in the future")
            elif at < now - _MAX_PAST:
                c.fail("occurred_at", "is more than 400 days in the past")
    if msg.school_number < 0:
        c.fail("school_number", "must be a PowerSchool SCHOOLS.SCHOOL_NUMBER, or 0 for default")
    c.text("reason", msg.reason, 200)
    c.text("comment", msg.comment, 500)
    c.text("checked_out_by", msg.checked_out_by, 200)
    c.done()
    assert key is not None
    return key


def check_get_attendance(msg: pb.GetAttendanceRequest) -> None:
    """Validate a GetAttendance request."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    try:
        uuid.UUID(msg.record_id)
    except ValueError:
        c.fail("record_id", "must be a record ID as returned by SubmitAttendance (a UUID)")
    c.done()


def check_list_districts(msg: pb.ListDistrictsRequest) -> None:
    """Validate a ListDistricts request."""
    c = Checker()
    if not 0 <= msg.page_size <= 500:
        c.fail("page_size", "must be between 0 (default 100) and 500")
    c.text("page_token", msg.page_token, 200)
    c.done()


def check_district_id(district_id: str) -> None:
    """Validate a request that carries only a district ID."""
    c = Checker()
    c.district_id("district_id", district_id)
    c.done()


def check_sync_status(msg: pb.GetSyncStatusRequest) -> None:
    """Validate a GetSyncStatus request (an empty sync_id asks for the latest sync)."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    if msg.sync_id:
        try:
            uuid.UUID(msg.sync_id)
        except ValueError:
            c.fail("sync_id", "must be a sync ID as returned by SyncRoster (a UUID)")
    c.done()


def check_diagnose(msg: pb.DiagnoseMappingRequest) -> None:
    """Validate a DiagnoseMapping request."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    if not 0 <= msg.sample_size <= 500:
        c.fail("sample_size", "must be between 0 (default 50) and 500")
    c.done()


def check_connection(msg: pb.CheckConnectionRequest) -> None:
    """Validate a CheckConnection request."""
    check_district_id(msg.district_id)


def _date(c: Checker, field: str, value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        c.fail(field, "must be a date, YYYY-MM-DD")
        return None


def _record_id(c: Checker, field: str, value: str, *, required: bool = True) -> None:
    if not value and not required:
        return
    try:
        uuid.UUID(value)
    except ValueError:
        c.fail(field, "must be a record ID as returned by SubmitAttendance (a UUID)")


def check_cancel(msg: pb.CancelAttendanceRequest) -> None:
    """Validate a CancelAttendance request."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    _record_id(c, "record_id", msg.record_id)
    c.text("reason", msg.reason, 200)
    c.done()


def check_list(msg: pb.ListAttendanceRequest) -> RecordFilter:
    """Validate a ListAttendance request and return its filter."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    if msg.state not in pb.AttendanceState.values():
        c.fail("state", "is not a known AttendanceState")
    if msg.school_number < 0:
        c.fail("school_number", "must be positive, or 0 for any")
    first = _date(c, "date_from", msg.date_from)
    last = _date(c, "date_to", msg.date_to)
    if first and last and first > last:
        c.fail("date_to", "must not be before date_from")
    c.identifier("roster_id", msg.roster_id, required=False)
    if not 0 <= msg.page_size <= 500:
        c.fail("page_size", "must be between 0 (default 100) and 500")
    c.text("page_token", msg.page_token, 200)
    c.done()
    return RecordFilter(
        state=STATE.get(msg.state),
        school_number=msg.school_number or None,
        date_from=first,
        date_to=last,
        roster_id=msg.roster_id or None,
    )


def check_retry(msg: pb.RetryAttendanceRequest) -> tuple[date | None, date | None]:
    """Validate a RetryAttendance request: a record ID, or a date range."""
    c = Checker()
    c.district_id("district_id", msg.district_id)
    _record_id(c, "record_id", msg.record_id, required=False)
    first = _date(c, "date_from", msg.date_from)
    last = _date(c, "date_to", msg.date_to)
    if msg.record_id and (msg.date_from or msg.date_to):
        c.fail("record_id", "give a record ID or a date range, not both")
    elif not msg.record_id and not (first and last):
        c.fail("date_from", "give a record ID, or both date_from and date_to")
    elif first and last and first > last:
        c.fail("date_to", "must not be before date_from")
    c.done()
    return first, last


_CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


def check_create_caller(msg: pb.CreateCallerRequest) -> None:
    """Validate a CreateCaller request: a name, a role, and districts or all of them."""
    c = Checker()
    if not _CALLER_NAME.fullmatch(msg.name):
        c.fail("name", "must be 1-100 letters, digits, '.', '_', '@' or '-'")
    if msg.role not in CALLER_ROLE_FROM_PB:
        c.fail("role", "must be CALLER_ROLE_ADMIN, _OPERATOR, _WRITER or _READER")
    if msg.all_districts and msg.district_ids:
        c.fail("district_ids", "give district_ids or all_districts, not both")
    elif not msg.all_districts and not msg.district_ids:
        c.fail("district_ids", "give at least one district, or set all_districts")
    if len(msg.district_ids) > 1000:
        c.fail("district_ids", "at most 1000 districts")
    else:
        for i, district_id in enumerate(msg.district_ids):
            c.district_id(f"district_ids[{i}]", district_id)
    c.done()


def check_caller_id(caller_id: str) -> None:
    """Validate a request naming a caller by its ID."""
    c = Checker()
    try:
        uuid.UUID(caller_id)
    except ValueError:
        c.fail("caller_id", "must be a caller ID (a UUID) as CreateCaller or ListCallers shows")
    c.done()


def check_list_audit(msg: pb.ListAuditEventsRequest) -> int:
    """Validate a ListAuditEvents request; returns the event ID the page starts below (0:
    the newest)."""
    c = Checker()
    if msg.district_id:
        c.district_id("district_id", msg.district_id)
    if not 0 <= msg.page_size <= 500:
        c.fail("page_size", "must be between 0 (default 100) and 500")
    before = 0
    if msg.page_token:
        if msg.page_token.isascii() and msg.page_token.isdigit() and len(msg.page_token) < 19:
            before = int(msg.page_token)
        else:
            c.fail("page_token", "is not a token returned by ListAuditEvents")
    c.done()
    return before
