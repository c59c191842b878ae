"""The simulated PowerSchool server: aiohttp app, district state, OAuth tokens and fault injection.

Wire formats follow ``/work/shared/reference/powerschool-api.md``. Behaviour the fact file marks
as unverified is configurable on ``PowerSchoolSimulator`` (``expires_in_as_string``,
``dcid_id_map_query``, ``strict_string_values``, ``max_page_size``, ``strict_meeting_times``).
Access follows a plugin.xml (``plugin``; default: the one the service ships), as a real server's
installed plugin would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime
import json
import math
import re
import time
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from service.powerschool import PluginGrants, load_plugin
from simulators._server import HttpSimulator

from ._data import (
    ATT_MODE_DAILY,
    ATT_MODE_MEETING,
    ATT_MODE_TIME,
    ATTENDANCE_DEFAULTS,
    FORBIDDEN_TABLES,
    TABLES,
    ColType,
    Column,
    Dataset,
    PSSection,
    PSStudent,
    Row,
    TableSpec,
    bell_item_row,
    bell_schedule_row,
    cc_row,
    code_row,
    demo_dataset,
    enroll_student,
    period_row,
    render_value,
    school_row,
    section_meeting_row,
    section_row,
    set_attendance_mode,
    student_row,
    term_row,
)
from ._fiql import Clause, QueryError, matches, parse, parse_date, resolve_column

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DCID_ID_MAP_QUERY = "com.pearson.core.student.student_dcid_id_map"
"""Core PowerQuery mapping STUDENTS.DCID <-> STUDENTS.ID."""
DAILY_TEMPLATE_QUERY = "com.pearson.core.attendance.daily_attendance_template"
"""Core PowerQuery returning a pre-filled daily ATTENDANCE record for (studentid, att_date)."""
MEETING_TEMPLATE_QUERY = "com.pearson.core.attendance.meeting_interval_attendance_template"
"""Core PowerQuery returning one pre-filled Meeting ATTENDANCE record per class meeting of
(studentid, schoolid, att_date), with the existing mark of each."""
# The fields each simulated PowerQuery reads: a plugin may run one only with all of them.
_QUERY_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    DCID_ID_MAP_QUERY: (("STUDENTS", "ID"), ("STUDENTS", "DCID")),
    DAILY_TEMPLATE_QUERY: (
        ("STUDENTS", "ID"),
        ("STUDENTS", "SCHOOLID"),
        ("TERMS", "YEARID"),
        *(
            ("ATTENDANCE", name)
            for name in (
                "ID",
                "DCID",
                "STUDENTID",
                "SCHOOLID",
                "YEARID",
                "ATT_DATE",
                "ATT_MODE_CODE",
                "ATTENDANCE_CODEID",
                "ATT_COMMENT",
            )
        ),
    ),
    # Inferred: what a schedule join must read (a live server lists it at
    # GET /ws/powerqueryaccesslist/{name}).
    MEETING_TEMPLATE_QUERY: (
        ("STUDENTS", "ID"),
        ("STUDENTS", "SCHOOLID"),
        ("TERMS", "YEARID"),
        ("CC", "ID"),
        ("CC", "STUDENTID"),
        ("CC", "SECTIONID"),
        ("CC", "DATEENROLLED"),
        ("CC", "DATELEFT"),
        ("SECTION_MEETING", "SECTIONID"),
        ("SECTION_MEETING", "PERIOD_NUMBER"),
        ("PERIOD", "ID"),
        ("PERIOD", "PERIOD_NUMBER"),
        ("BELL_SCHEDULE_ITEMS", "PERIOD_ID"),
        ("BELL_SCHEDULE_ITEMS", "START_TIME"),
        ("BELL_SCHEDULE_ITEMS", "END_TIME"),
        *(
            ("ATTENDANCE", name)
            for name in (
                "ID",
                "DCID",
                "STUDENTID",
                "ATT_DATE",
                "ATT_MODE_CODE",
                "CCID",
                "PERIODID",
                "ATTENDANCE_CODEID",
                "ATT_COMMENT",
            )
        ),
    ),
}
_NO_COLUMN_ACCESS = "At least one column lacks sufficient permission"
_SINGLE_STUDENT_DAY = (
    "Multiple attendance records may be submitted in the payload, but they must all be for a "
    "single student for a single day"
)

_WWW_AUTHENTICATE = (
    'Bearer error="invalid_token",realm="PowerSchool",'
    'error_description="The access token has expired"'
)
_ROW_NOT_FOUND = "Database row or table specified by the URI not found"
_MAINTENANCE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>PowerSchool - Service Unavailable</title></head>"
    "<body><h1>Service Temporarily Unavailable</h1><p>PowerSchool is undergoing scheduled "
    "maintenance. Please try again later.</p></body></html>\n"
)
_FAULT_MESSAGES = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_INTEGER = re.compile(r"-?[0-9]+")
_FIRST_ATTENDANCE_ID = 250001
_FIRST_ATTENDANCE_DCID = 910001
_REQUIRED_WRITE_FIELDS = (
    "studentid",
    "schoolid",
    "yearid",
    "att_date",
    "att_mode_code",
    "attendance_codeid",
)
_REQUIRED_MEETING_FIELDS = (*_REQUIRED_WRITE_FIELDS, "ccid", "periodid", "start_time", "end_time")
# Fields of the meeting_interval body that are no ATTENDANCE column: they say which meeting.
_MEETING_TIMES = ("start_time", "end_time")
_DAY_SECONDS = 86_400
_DAY_MINUTES = 1_440


# Key columns the simulator indexes for ``==`` filters (rows' key values never change).
_INDEXED = frozenset(
    {
        ("students", "id"),
        ("students", "dcid"),
        ("students", "student_number"),
        ("attendance", "studentid"),
        ("cc", "studentid"),
    }
)


@dataclass(frozen=True)
class Meeting:
    """One class meeting of a student on a date: the CC enrollment (``ccid``), the period and
    when it meets (seconds since the school's local midnight)."""

    ccid: int
    periodid: int
    period_number: int
    start_time: int
    end_time: int
    sectionid: int
    course_number: str
    section_number: str
    schoolid: int
    yearid: int


@dataclass
class Faults:
    """Failure modes; change the fields at any time (also via ``POST /_sim/faults``)."""

    latency: float = 0.0
    """Seconds added to every ``/ws`` and ``/oauth`` request."""
    write_latency: float = 0.0
    """Seconds a ``daily_time`` or ``meeting_interval`` write waits before it is processed
    (a slow server)."""
    outage: bool = False
    """Every ``/ws`` and ``/oauth`` request answers 503 with an HTML maintenance page."""
    outage_until: float = 0.0
    """Like ``outage`` until this ``time.time()``: an outage window that ends on its own."""
    hang_after_write: int = 0
    """The next N successful daily_time or meeting_interval writes are committed, then the
    answer is held for ``hang_seconds`` (longer than the client waits): the
    write-then-timeout case."""
    hang_seconds: float = 30.0
    queue: list[tuple[int, float | None]] = field(default_factory=list)
    """Failures served, FIFO, to the next ``/ws`` requests: (status, Retry-After seconds)."""
    write_error_in_body: bool = False
    """``/ws/attendance/daily_time`` and ``meeting_interval`` answer 200 with every
    ``result[i].status == "ERROR"`` and write nothing."""
    write_forbidden: bool = False
    """``/ws/attendance/daily_time`` and ``meeting_interval`` answer 403 (plugin lacks
    ATTENDANCE FullAccess)."""


@dataclass(frozen=True)
class Call:
    """One request the simulator answered (``body`` is the parsed JSON request body or None)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    body: Any
    at: float = 0.0
    """``time.monotonic()`` when the answer was sent."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, as served by ``GET /_sim/calls``."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "body": self.body,
            "at": self.at,
        }


class _ApiError(Exception):
    """Raised by handlers; the outer middleware turns it into a JSON error response."""

    def __init__(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return web.json_response(self.payload, status=self.status, headers=self.headers)


def _validation_failed(errors: Iterable[tuple[str, str]]) -> _ApiError:
    return _ApiError(
        400,
        {
            "message": "Validation Failed",
            "errors": [
                {"resource": "ATTENDANCE", "field": name, "code": code} for name, code in errors
            ],
        },
    )


def _no_access(resource: str, names: Iterable[str]) -> _ApiError:
    """PowerSchool's 403 for columns the plugin does not grant (as seen live)."""
    return _ApiError(
        403,
        {
            "message": _NO_COLUMN_ACCESS,
            "errors": [{"code": "NoAccess", "field": n, "resource": resource} for n in names],
        },
    )


def _int_or_none(text: str) -> int | None:
    """``int(text)`` for an optionally signed run of ASCII digits, else ``None``."""
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _is_ws(path: str) -> bool:
    return path == "/ws" or path.startswith("/ws/")


def _is_oauth(path: str) -> bool:
    return path == "/oauth" or path.startswith("/oauth/")


class PowerSchoolSimulator(HttpSimulator[Call]):
    """One district's PowerSchool server, in-process. Every bit of state lives on the instance.

    ``plugin`` is the installed plugin: a :class:`PluginGrants` or a plugin.xml path (default:
    the plugin the service ships). Reading a column it does not request (in a projection, a
    ``q`` filter or a PowerQuery), writing or deleting ATTENDANCE without FullAccess on each
    field written (on DCID for a delete), or running a PowerQuery it does not declare answers
    403 with PowerSchool's error body; ``/ws/v1/student`` needs ``accessLevelV1Api``. ``clock``
    (seconds, monotonic) drives token expiry; tests may pass a fake one.
    """

    faults: Faults
    """Current failure modes."""
    dataset: Dataset
    """The simulator's own copy of the district data (``add_student`` appends to it)."""

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        client_id: str = "sim-client",
        client_secret: str = "sim-secret",  # noqa: S107 - a fake district's fake secret
        max_page_size: int = 100,
        token_ttl: int = 2_592_000,
        expires_in_as_string: bool = True,
        district_timezone: str = "America/Chicago",
        dcid_id_map_query: bool = True,
        strict_string_values: bool = True,
        allow_attendance_delete: bool = True,
        plugin: PluginGrants | str | Path | None = None,
        meeting_schools: Iterable[int] = (),
        time_schools: Iterable[int] = (),
        strict_meeting_times: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build the district from ``dataset`` (default: ``demo_dataset()``).

        Schools in ``meeting_schools`` take Meeting (period) attendance (as do schools the
        dataset already puts in that mode): they get a class schedule when the dataset has
        none, each of their students has an absence in period 1 on the first day of every
        year term (a teacher's mark), ``meeting_interval`` writes are accepted for them and
        daily writes answer 400 (``att_mode_code``). Schools in ``time_schools`` take Time
        attendance: ``daily_time`` with ``ATT_ModeTime`` and ``total_minutes``.
        ``strict_meeting_times``: a meeting write's ``start_time``/``end_time`` must be the
        bell schedule's times of its period (unverified on a real server)."""
        super().__init__()
        self.dataset = copy.deepcopy(dataset) if dataset is not None else demo_dataset()
        self.client_id = client_id
        self.client_secret = client_secret
        self.allow_attendance_delete = allow_attendance_delete
        self.in_flight = 0
        self.peak_in_flight = 0
        """The most ``/ws`` requests PowerSchool was serving at once (politeness checks)."""
        self.max_page_size = max_page_size
        self.token_ttl = token_ttl
        self.expires_in_as_string = expires_in_as_string
        self.district_timezone = district_timezone
        self.dcid_id_map_query = dcid_id_map_query
        self.strict_string_values = strict_string_values
        self.plugin = plugin if isinstance(plugin, PluginGrants) else load_plugin(plugin)
        """The installed plugin's grants; replace it to change what the plugin allows."""
        self._clock = clock
        self.faults = Faults()
        self._tokens: dict[str, float] = {}
        self._next_attendance_id = _FIRST_ATTENDANCE_ID
        self._next_attendance_dcid = _FIRST_ATTENDANCE_DCID
        self._rows: dict[str, list[Row]] = {key: [] for key in TABLES}
        self._indexes: dict[str, tuple[int, dict[Any, Row]]] = {}
        self._row_indexes: dict[tuple[str, str], tuple[tuple[int, int], dict[Any, list[Row]]]] = {}
        self._rows["schools"] = [school_row(s) for s in self.dataset.schools]
        self._rows["students"] = [student_row(s) for s in self.dataset.students]
        self._rows["terms"] = [term_row(t) for t in self.dataset.terms]
        self._rows["attendance_code"] = [
            code_row(c, sortorder=i) for i, c in enumerate(self.dataset.codes)
        ]
        self.strict_meeting_times = strict_meeting_times
        for school in sorted(set(time_schools)):
            set_attendance_mode(self.dataset, school, ATT_MODE_TIME)
        for school in sorted(set(meeting_schools)):
            set_attendance_mode(self.dataset, school, ATT_MODE_MEETING)
        self._load_schedule_rows()
        for school in sorted(self.meeting_schools):
            self._seed_meeting_rows(school)
        self.app = self._build_app()

    @property
    def meeting_schools(self) -> frozenset[int]:
        """School numbers that take Meeting (period) attendance."""
        return self._schools_in(ATT_MODE_MEETING)

    @property
    def time_schools(self) -> frozenset[int]:
        """School numbers that take Time attendance."""
        return self._schools_in(ATT_MODE_TIME)

    def _schools_in(self, mode: str) -> frozenset[int]:
        return frozenset(s.school_number for s in self.dataset.schools if s.attendance_mode == mode)

    def _load_schedule_rows(self) -> None:
        d = self.dataset
        sections = {s.id: s for s in d.sections}
        self._rows["period"] = [period_row(p) for p in d.periods]
        self._rows["bell_schedule"] = [bell_schedule_row(b) for b in d.bell_schedules]
        self._rows["bell_schedule_items"] = [bell_item_row(i) for i in d.bell_items]
        self._rows["sections"] = [section_row(s) for s in d.sections]
        self._rows["section_meeting"] = [section_meeting_row(s) for s in d.sections]
        self._rows["cc"] = [cc_row(e, sections[e.sectionid]) for e in d.enrollments]

    def _seed_meeting_rows(self, school: int) -> None:
        """A teacher's period attendance: an absence in period 1 per student per year term."""
        terms = [t for t in self.dataset.terms if t.schoolid == school and t.isyearrec == 1]
        for term in terms:
            absent = next(
                c.id
                for c in self.dataset.codes
                if (c.schoolid, c.yearid, c.att_code) == (school, term.yearid, "A")
            )
            for student in (s for s in self.dataset.students if s.schoolid == school):
                # add_attendance directly: a fresh district has no row to replace, and large
                # benchmark districts must not rebuild the attendance index per row.
                for m in self.meetings_for(student.id, term.firstday):
                    if m.period_number == 1:
                        self.add_attendance(
                            studentid=student.id,
                            schoolid=school,
                            yearid=term.yearid,
                            att_date=term.firstday,
                            att_mode_code=ATT_MODE_MEETING,
                            attendance_codeid=absent,
                            ccid=m.ccid,
                            periodid=m.periodid,
                        )

    # -----------------------------------------------------------------------------------------
    # Test helpers (start, stop, count and reset_calls live on HttpSimulator)
    # -----------------------------------------------------------------------------------------

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (like "Regenerate Client ID and Secret")."""
        self._tokens.clear()

    def attendance_rows(self) -> list[dict[str, str]]:
        """Current ATTENDANCE rows, rendered like ``tables.attendance`` of the schema API."""
        spec = TABLES["attendance"]
        return [self._render_columns(row, spec.columns) for row in self._rows["attendance"]]

    def add_attendance(self, **cols: Any) -> dict[str, str]:
        """Insert an ATTENDANCE row directly, unvalidated (e.g. a teacher's entry); return it.

        Values may be strings, ints or dates; ``id``/``dcid`` are assigned when omitted and
        the columns not given get ATTENDANCE defaults (``att_mode_code`` ``ATT_ModeDaily``).
        """
        spec = TABLES["attendance"]
        row: Row = {"att_mode_code": ATT_MODE_DAILY, **ATTENDANCE_DEFAULTS}
        for name, value in cols.items():
            column = spec.column(name)
            if column is None:
                raise ValueError(f"ATTENDANCE has no column {name!r}")
            row[column.key] = _coerce(column, value)
        if row.get("id") is None:
            row["id"] = self._take_attendance_id()
        if row.get("dcid") is None:
            row["dcid"] = self._take_attendance_dcid()
        full = {c.key: row.get(c.key) for c in spec.columns}
        self._rows["attendance"].append(full)
        return self._render_columns(full, spec.columns)

    def add_student(self, s: PSStudent) -> None:
        """Add a student (e.g. a mid-year enrolment); its ID and DCID must be unused."""
        for row in self._rows["students"]:
            if row["dcid"] == s.dcid or row["id"] == s.id:
                raise ValueError(f"student id {s.id} or dcid {s.dcid} already exists")
        self.dataset.students.append(copy.copy(s))
        self._rows["students"].append(student_row(s))
        school = self.dataset.school(s.schoolid)
        if school is not None and school.attendance_mode == ATT_MODE_MEETING:
            self._enroll(s)

    def _enroll(self, s: PSStudent) -> None:
        """A schedule for a student added to a Meeting school: every period of each year."""
        index = sum(1 for other in self.dataset.students if other.schoolid == s.schoolid) - 1
        for term in self.dataset.terms:
            if term.schoolid != s.schoolid or term.isyearrec != 1:
                continue
            by_period: dict[int, list[PSSection]] = {}
            for section in self.dataset.sections:
                if section.schoolid == s.schoolid and section.termid == term.id:
                    by_period.setdefault(section.period_number, []).append(section)
            enroll_student(self.dataset, s, by_period, term, index)
        self._load_schedule_rows()

    def attendance_mode(self, school_number: int) -> str:
        """The school's attendance mode (``ATT_ModeDaily``, ``ATT_ModeMeeting`` or
        ``ATT_ModeTime``); ``ValueError`` for an unknown school."""
        school = self.dataset.school(school_number)
        if school is None:
            raise ValueError(f"no school {school_number}")
        return school.attendance_mode

    def set_attendance_mode(self, school_number: int, mode: str) -> None:
        """Switch a school's attendance mode (e.g. a school moving to period attendance); a
        Meeting school gets a class schedule if it has none. Existing rows stay."""
        set_attendance_mode(self.dataset, school_number, mode)
        self._load_schedule_rows()

    def meetings_for(self, student: PSStudent | int, day: datetime.date) -> list[Meeting]:
        """The student's class meetings on ``day`` (by STUDENTS.ID or a student), in the
        order they meet: CC enrollments current that day, each section's period and the bell
        schedule's times. Empty when the student has no schedule or ``day`` is outside a
        year term."""
        student_id = student if isinstance(student, int) else student.id
        row = self._students_index("id").get(student_id)
        if row is None:
            return []
        term = self._year_term(row["schoolid"], day)
        if term is None:
            return []
        yearid = term["yearid"]
        periods = {
            p["period_number"]: p
            for p in self._rows["period"]
            if p["schoolid"] == row["schoolid"] and p["year_id"] == yearid
        }
        bells = {
            b["id"]
            for b in self._rows["bell_schedule"]
            if b["schoolid"] == row["schoolid"] and b["year_id"] == yearid
        }
        times = {
            i["period_id"]: (i["start_time"], i["end_time"])
            for i in self._rows["bell_schedule_items"]
            if i["bell_schedule_id"] in bells
        }
        out: list[Meeting] = []
        for cc in self._index("cc", "studentid").get(student_id, []):
            if cc["schoolid"] != row["schoolid"] or not (
                cc["dateenrolled"] <= day < cc["dateleft"]
            ):
                continue
            for meeting in self._rows["section_meeting"]:
                period = periods.get(meeting["period_number"])
                if meeting["sectionid"] != cc["sectionid"] or period is None:
                    continue
                if period["id"] not in times:
                    continue
                start, end = times[period["id"]]
                out.append(
                    Meeting(
                        ccid=cc["id"],
                        periodid=period["id"],
                        period_number=period["period_number"],
                        start_time=start,
                        end_time=end,
                        sectionid=cc["sectionid"],
                        course_number=cc["course_number"],
                        section_number=cc["section_number"],
                        schoolid=row["schoolid"],
                        yearid=yearid,
                    )
                )
        return sorted(out, key=lambda m: (m.start_time, m.period_number, m.ccid))

    def meeting_rows(self, student: PSStudent | int, day: datetime.date) -> list[dict[str, str]]:
        """The student's Meeting ATTENDANCE rows on ``day``, rendered like
        ``attendance_rows``, ordered by period."""
        student_id = student if isinstance(student, int) else student.id
        rows = [
            r
            for r in self._index("attendance", "studentid").get(student_id, [])
            if r["att_date"] == day and r["att_mode_code"] == ATT_MODE_MEETING
        ]
        rows.sort(key=lambda r: (r["periodid"] or 0, r["ccid"] or 0))
        return [self._render_columns(r, TABLES["attendance"].columns) for r in rows]

    def add_meeting_attendance(
        self,
        student: PSStudent | int,
        day: datetime.date,
        period_number: int,
        att_code: str = "A",
        att_comment: str | None = None,
    ) -> dict[str, str]:
        """Plant a teacher's mark: the Meeting row of the student's class in ``period_number``
        on ``day`` with the school-year's ``att_code`` (replacing the mark there, if any);
        return it. ``ValueError`` when the student has no meeting in that period or the code
        does not exist."""
        student_id = student if isinstance(student, int) else student.id
        meeting = next(
            (m for m in self.meetings_for(student_id, day) if m.period_number == period_number),
            None,
        )
        if meeting is None:
            raise ValueError(
                f"student {student_id} has no class in period {period_number} on {day}"
            )
        code = next(
            (
                c.id
                for c in self.dataset.codes
                if (c.schoolid, c.yearid, c.att_code)
                == (meeting.schoolid, meeting.yearid, att_code)
            ),
            None,
        )
        if code is None:
            raise ValueError(f"no attendance code {att_code!r} in school {meeting.schoolid}")
        existing = self._existing_meeting(student_id, day, meeting.ccid, meeting.periodid)
        if existing is not None:
            existing["attendance_codeid"] = code
            existing["att_comment"] = att_comment
            return self._render_columns(existing, TABLES["attendance"].columns)
        return self.add_attendance(
            studentid=student_id,
            schoolid=meeting.schoolid,
            yearid=meeting.yearid,
            att_date=day,
            att_mode_code=ATT_MODE_MEETING,
            attendance_codeid=code,
            att_comment=att_comment,
            ccid=meeting.ccid,
            periodid=meeting.periodid,
        )

    # -----------------------------------------------------------------------------------------
    # App and middlewares
    # -----------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._outer_mw, self._faults_mw, self._auth_mw])
        r = app.router
        r.add_post("/oauth/access_token", self._oauth)
        r.add_post("/oauth/access_token/", self._oauth)
        r.add_get("/ws/v1/time", self._v1_time)
        r.add_get("/ws/v1/metadata", self._v1_metadata)
        r.add_get("/ws/v1/student/{dcid}", self._v1_student)
        r.add_get("/ws/schema/table/{table}", self._table_query)
        r.add_get("/ws/schema/table/{table}/count", self._table_count)
        r.add_get("/ws/schema/table/{table}/{dcid}", self._table_row)
        r.add_delete("/ws/schema/table/{table}/{dcid}", self._table_delete)
        r.add_post("/ws/schema/query/{name}", self._powerquery)
        r.add_post("/ws/schema/query/{name}/count", self._powerquery_count)
        r.add_post("/ws/attendance/daily_time", self._daily_time)
        r.add_post("/ws/attendance/meeting_interval", self._meeting_interval)
        r.add_get("/_sim/calls", self._sim_calls)
        r.add_get("/_sim/attendance", self._sim_attendance)
        r.add_post("/_sim/attendance", self._sim_add_attendance)
        r.add_get("/_sim/faults", self._sim_get_faults)
        r.add_post("/_sim/faults", self._sim_set_faults)
        r.add_post("/_sim/reset-calls", self._sim_reset_calls)
        r.add_post("/_sim/revoke-tokens", self._sim_revoke_tokens)
        return app

    @web.middleware
    async def _outer_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn errors into JSON responses and record the call."""
        body = await _json_body(request)
        response: web.StreamResponse
        try:
            response = await handler(request)
        except _ApiError as exc:
            response = exc.response()
        except QueryError as exc:
            response = web.json_response({"message": exc.message}, status=400)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = web.json_response(
                {"message": exc.reason}, status=exc.status, headers=headers
            )
        if not request.path.startswith("/_sim"):
            self.calls.append(
                Call(
                    request.method,
                    request.path,
                    dict(request.query),
                    response.status,
                    body,
                    time.monotonic(),
                )
            )
        return response

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Latency, outage and queued failures for ``/ws`` and ``/oauth``."""
        ws, oauth = _is_ws(request.path), _is_oauth(request.path)
        if not (ws or oauth):
            return await handler(request)
        if ws:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._with_faults(request, handler, ws=ws)
        finally:
            if ws:
                self.in_flight -= 1

    async def _with_faults(
        self, request: web.Request, handler: Handler, *, ws: bool
    ) -> web.StreamResponse:
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        if self.faults.outage or time.time() < self.faults.outage_until:
            return web.Response(status=503, text=_MAINTENANCE_PAGE, content_type="text/html")
        if ws and self.faults.queue:
            status, retry_after = self.faults.queue.pop(0)
            headers = {}
            if retry_after is not None:
                headers["Retry-After"] = _format_retry_after(retry_after)
            message = _FAULT_MESSAGES.get(status, "Simulated failure")
            return web.json_response({"message": message}, status=status, headers=headers)
        return await handler(request)

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer token check on ``/ws/*`` (``/ws/v1/time`` is public)."""
        path = request.path.rstrip("/")
        if not _is_ws(path) or path == "/ws/v1/time":
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
            raise _ApiError(
                401, {"message": "Invalid token"}, {"WWW-Authenticate": _WWW_AUTHENTICATE}
            )
        return await handler(request)

    # -----------------------------------------------------------------------------------------
    # OAuth
    # -----------------------------------------------------------------------------------------

    def _token_valid(self, token: str) -> bool:
        expires_at = self._tokens.get(token)
        return expires_at is not None and expires_at > self._clock()

    def _current_token(self) -> tuple[str, int]:
        now = self._clock()
        for token, expires_at in self._tokens.items():
            if expires_at > now:
                return token, math.ceil(expires_at - now)
        token = str(uuid.uuid4())
        self._tokens = {token: now + self.token_ttl}
        return token, self.token_ttl

    def _client_authenticated(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, secret = decoded.partition(":")
        return bool(sep) and client_id == self.client_id and secret == self.client_secret

    async def _oauth(self, request: web.Request) -> web.Response:
        if not self._client_authenticated(request):
            raise _ApiError(401, {"error": "invalid_client"})
        form = await request.post()
        grant = form.get("grant_type")
        if grant is None:
            raise _ApiError(400, {"error": "invalid_request"})
        if grant != "client_credentials":
            raise _ApiError(400, {"error": "unsupported_grant_type"})
        token, expires_in = self._current_token()
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": str(expires_in) if self.expires_in_as_string else expires_in,
            }
        )

    # -----------------------------------------------------------------------------------------
    # v1 API
    # -----------------------------------------------------------------------------------------

    def _district_now(self) -> datetime.datetime:
        try:
            tz: datetime.tzinfo = zoneinfo.ZoneInfo(self.district_timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            tz = datetime.UTC
        return datetime.datetime.now(tz)

    async def _v1_time(self, request: web.Request) -> web.Response:
        return web.json_response({"time": self._district_now().isoformat(timespec="seconds")})

    async def _v1_metadata(self, request: web.Request) -> web.Response:
        size = self.max_page_size
        return web.json_response(
            {
                "metadata": {
                    "schema_table_query_max_page_size": size,
                    "student_max_page_size": size,
                    "school_max_page_size": size,
                    "section_max_page_size": size,
                    "staff_max_page_size": size,
                    "term_max_page_size": size,
                    "district_timezone": self.district_timezone,
                    "powerschool_version": "25.12.0.0",
                    "plugin_id": 1234,
                    "state": "IL",
                }
            }
        )

    async def _v1_student(self, request: web.Request) -> web.Response:
        if self.plugin.v1_access == "NONE":
            raise _ApiError(
                401,
                {
                    "errorMessage": {
                        "message": "Plugin is missing required accessLevelV1Api READ permission"
                    }
                },
            )
        raw = request.match_info["dcid"]
        dcid = _int_or_none(raw)
        row = self._find("students", "dcid", dcid) if dcid is not None else None
        if row is None:
            raise _ApiError(404, {"errorMessage": {"message": f"Student {raw} not found"}})
        student: dict[str, Any] = {
            "@expansions": "demographics, addresses, alerts, phones, school_enrollment, "
            "ethnicity_race, contact, contact_info, initial_enrollment, schedule_setup, fees, "
            "lunch",
            "@extensions": "studentcorefields",
            "id": row["dcid"],
            "local_id": row["student_number"],
            "student_username": f"{row['first_name']}.{row['last_name']}{row['student_number']}",
            "name": {"first_name": row["first_name"], "last_name": row["last_name"]},
        }
        expansions = {e.strip() for e in request.query.get("expansions", "").split(",")}
        if "school_enrollment" in expansions:
            school = self._find("schools", "school_number", row["schoolid"])
            student["school_enrollment"] = {
                "enroll_status": "A" if row["enroll_status"] == 0 else "I",
                "enroll_status_code": row["enroll_status"],
                "grade_level": row["grade_level"],
                "school_number": row["schoolid"],
                "school_id": school["dcid"] if school else 0,
            }
        return web.json_response({"student": student})

    # -----------------------------------------------------------------------------------------
    # Schema table API
    # -----------------------------------------------------------------------------------------

    def _table(self, name: str) -> TableSpec:
        key = name.lower()
        spec = TABLES.get(key)
        if spec is not None:
            return spec
        if key in FORBIDDEN_TABLES:
            raise _ApiError(405, {"message": f"GET, POST and PUT are not allowed on table {name}"})
        raise _ApiError(404, {"message": _ROW_NOT_FOUND})

    def _check_grants(
        self, spec: TableSpec, columns: Iterable[Column], *, write: bool = False
    ) -> None:
        missing: list[str] = []
        for col in columns:
            if (
                not self.plugin.allows(spec.key, col.key, write=write)
                and col.canonical not in missing
            ):
                missing.append(col.canonical)
        if missing:
            raise _no_access(spec.display, missing)

    def _projection(self, spec: TableSpec, raw: str | None) -> list[Column]:
        star = [c for c in spec.columns if self.plugin.allows(spec.key, c.key)] or [spec.columns[0]]
        if raw is None or not raw.strip():
            return star
        out: list[Column] = []
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name == "*" or name.lower() == f"{spec.key}.*":
                out.extend(c for c in star if c not in out)
                continue
            col = resolve_column(spec, name)
            if col is None:
                raise QueryError(
                    f"Invalid field specified: {name} is not valid column for table: {spec.display}"
                )
            if col not in out:
                out.append(col)
        return out

    def _page(self, query: Mapping[str, str]) -> tuple[int, int]:
        default_size = min(self.max_page_size, 100)
        page = _int_or_none(query.get("page", "1"))
        size = _int_or_none(query.get("pagesize", str(default_size)))
        if page is None or page < 1:
            raise QueryError(f"Invalid page '{query.get('page')}'")
        if size is None or size < 1:
            raise QueryError(f"Invalid pagesize '{query.get('pagesize')}'")
        if size > self.max_page_size:
            raise QueryError(
                f"Page size {size} is greater than the maximum page size {self.max_page_size}"
            )
        return page, size

    def _sorted(self, spec: TableSpec, rows: list[Row], query: Mapping[str, str]) -> list[Row]:
        raw = query.get("sort", "").strip()
        if not raw:
            return rows
        keys: list[Column] = []
        for name in (n.strip() for n in raw.split(",") if n.strip()):
            col = resolve_column(spec, name)
            if col is None:
                raise QueryError(f"Invalid field {name}")
            keys.append(col)
        descending = query.get("sortdescending", "false").strip().lower() == "true"

        def key(row: Row) -> tuple[Any, ...]:
            return tuple(
                (row.get(c.key) is None, "" if row.get(c.key) is None else row[c.key]) for c in keys
            )

        return sorted(rows, key=key, reverse=descending)

    def _render_columns(self, row: Row, columns: Iterable[Column]) -> dict[str, str]:
        return {c.key: render_value(row.get(c.key)) for c in columns}

    def _render_record(self, spec: TableSpec, row: Row, columns: list[Column]) -> dict[str, Any]:
        return {
            "id": row["dcid"],
            "name": spec.display,
            "tables": {spec.key: self._render_columns(row, columns)},
        }

    async def _table_query(self, request: web.Request) -> web.Response:
        spec = self._table(request.match_info["table"])
        clauses = parse(request.query.get("q"), spec)
        columns = self._projection(spec, request.query.get("projection"))
        page, size = self._page(request.query)
        self._check_grants(spec, [*columns, *(c.column for c in clauses)])
        rows = [row for row in self._candidates(spec.key, clauses) if matches(row, clauses)]
        rows = self._sorted(spec, rows, request.query)
        window = rows[(page - 1) * size : page * size]
        return web.json_response(
            {
                "name": spec.display,
                "record": [self._render_record(spec, row, columns) for row in window],
            }
        )

    async def _table_count(self, request: web.Request) -> web.Response:
        spec = self._table(request.match_info["table"])
        clauses = parse(request.query.get("q"), spec)
        self._check_grants(spec, [c.column for c in clauses])
        return web.json_response(
            {"count": sum(1 for row in self._rows[spec.key] if matches(row, clauses))}
        )

    async def _table_row(self, request: web.Request) -> web.Response:
        spec = self._table(request.match_info["table"])
        columns = self._projection(spec, request.query.get("projection"))
        dcid = _int_or_none(request.match_info["dcid"])
        row = self._find(spec.key, "dcid", dcid) if dcid is not None else None
        if row is None:
            raise _ApiError(404, {"message": _ROW_NOT_FOUND})
        self._check_grants(spec, columns)
        return web.json_response(self._render_record(spec, row, columns))

    async def _table_delete(self, request: web.Request) -> web.Response:
        """Only ATTENDANCE rows, and only when ``allow_attendance_delete`` (unverified on a
        real server: the client must cope with a refusal)."""
        table = request.match_info["table"].lower()
        if table != "attendance" or not self.allow_attendance_delete:
            raise _ApiError(405, {"message": f"DELETE is not allowed on table {table.upper()}"})
        spec = TABLES["attendance"]
        dcid_column = spec.column("dcid")
        assert dcid_column is not None
        # Unverified on a real server: the simulator asks FullAccess on the key it deletes by.
        self._check_grants(spec, [dcid_column], write=True)
        dcid = _int_or_none(request.match_info["dcid"])
        rows = self._rows["attendance"]
        keep = [r for r in rows if r["dcid"] != dcid]
        if len(keep) == len(rows):
            raise _ApiError(
                404, {"message": "Database row or table specified by the URI not found"}
            )
        self._rows["attendance"] = keep
        return web.Response(status=204)

    def _find(self, table: str, column: str, value: object) -> Row | None:
        for row in self._rows[table]:
            if row.get(column) == value:
                return row
        return None

    # -----------------------------------------------------------------------------------------
    # PowerQueries
    # -----------------------------------------------------------------------------------------

    def _run_powerquery(self, name: str, args: Any) -> tuple[str, list[dict[str, Any]]]:
        if not isinstance(args, dict):
            raise _ApiError(400, {"message": "Query arguments must be a JSON object"})
        if name not in _QUERY_FIELDS or (name == DCID_ID_MAP_QUERY and not self.dcid_id_map_query):
            raise _ApiError(404, {"message": f"Named query {name} not found"})
        self._check_query_access(name)
        if name == DCID_ID_MAP_QUERY:
            return "Students", self._dcid_id_map(args)
        if name == MEETING_TEMPLATE_QUERY:
            return "Attendance", self._meeting_template(args)
        return "Attendance", self._daily_template(args)

    def _check_query_access(self, name: str) -> None:
        """403 in PowerSchool's PowerQuery form when the plugin does not declare the query (all
        its fields named) or lacks a field it reads (those fields named)."""
        needed = _QUERY_FIELDS[name]
        declared = name in self.plugin.queries
        missing = [(t, f) for t, f in needed if not declared or not self.plugin.allows(t, f)]
        if missing:
            raise _ApiError(
                403,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": name,
                            "field": f"{t.lower()}.{f.lower()}",
                            "code": "No access to the field",
                        }
                        for t, f in missing
                    ],
                },
            )

    def _id_list(self, args: Mapping[str, Any], key: str) -> set[int] | None:
        if key not in args:
            return None
        raw = args[key]
        values = raw if isinstance(raw, list) else [raw]
        out: set[int] = set()
        for v in values:
            number = None if isinstance(v, bool) else _int_or_none(str(v))
            if number is None:
                raise _ApiError(400, {"message": f"Invalid value {v!r} for argument {key}"})
            out.add(number)
        return out

    def _dcid_id_map(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        unknown = set(args) - {"students_dcid", "students_id"}
        if unknown:
            raise _ApiError(400, {"message": f"Invalid argument {sorted(unknown)[0]}"})
        dcids = self._id_list(args, "students_dcid")
        ids = self._id_list(args, "students_id")
        # Index lookups keep 100,000-student benchmarks fast.
        if dcids is not None:
            index = self._students_index("dcid")
            rows = [index[d] for d in sorted(dcids) if d in index]
        elif ids is not None:
            index = self._students_index("id")
            rows = [index[i] for i in sorted(ids) if i in index]
        else:
            rows = list(self._rows["students"])
        if dcids is not None and ids is not None:
            rows = [r for r in rows if r["id"] in ids]
        return [{"id": str(row["id"]), "dcid": str(row["dcid"])} for row in rows]

    def _students_index(self, key: str) -> dict[Any, Row]:
        rows = self._rows["students"]
        cached = self._indexes.get(key)
        if cached is None or cached[0] != len(rows):
            cached = (len(rows), {row[key]: row for row in rows})
            self._indexes[key] = cached
        return cached[1]

    def _daily_template(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        student_id = _int_or_none(str(args.get("studentid", "")))
        day = parse_date(str(args.get("att_date", "")))
        if student_id is None or day is None:
            raise _ApiError(400, {"message": "Arguments studentid and att_date are required"})
        student = self._find("students", "id", student_id)
        term = self._year_term(student["schoolid"], day) if student else None
        if student is None or term is None:
            return []
        school = self.dataset.school(student["schoolid"])
        mode = (
            ATT_MODE_TIME if school and school.attendance_mode == ATT_MODE_TIME else ATT_MODE_DAILY
        )
        existing = self._existing_day_row(student_id, day, mode)
        values = {
            "id": existing["id"] if existing else None,
            "dcid": existing["dcid"] if existing else None,
            "studentid": student_id,
            "schoolid": student["schoolid"],
            "yearid": term["yearid"],
            "att_date": day,
            "att_mode_code": mode,
            "attendance_codeid": existing["attendance_codeid"] if existing else None,
            "att_comment": existing["att_comment"] if existing else None,
        }
        return [{"tables": {"attendance": {k: render_value(v) for k, v in values.items()}}}]

    def _meeting_template(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One record per class meeting of the student that day, in meeting order, carrying
        the existing Meeting row's id, code and comment (empty when there is none)."""
        student_id = _int_or_none(str(args.get("studentid", "")))
        day = parse_date(str(args.get("att_date", "")))
        if student_id is None or day is None:
            raise _ApiError(400, {"message": "Arguments studentid and att_date are required"})
        school_raw = args.get("schoolid")
        school_id = None if school_raw is None else _int_or_none(str(school_raw))
        if school_raw is not None and school_id is None:
            raise _ApiError(400, {"message": f"Invalid value {school_raw!r} for argument schoolid"})
        records: list[dict[str, Any]] = []
        for m in self.meetings_for(student_id, day):
            if school_id is not None and m.schoolid != school_id:
                continue
            existing = self._existing_meeting(student_id, day, m.ccid, m.periodid)
            values = {
                "id": existing["id"] if existing else None,
                "dcid": existing["dcid"] if existing else None,
                "studentid": student_id,
                "schoolid": m.schoolid,
                "yearid": m.yearid,
                "att_date": day,
                "att_mode_code": ATT_MODE_MEETING,
                "ccid": m.ccid,
                "periodid": m.periodid,
                "start_time": m.start_time,
                "end_time": m.end_time,
                "attendance_codeid": existing["attendance_codeid"] if existing else None,
                "att_comment": existing["att_comment"] if existing else None,
            }
            records.append(
                {"tables": {"attendance": {k: render_value(v) for k, v in values.items()}}}
            )
        return records

    async def _powerquery(self, request: web.Request) -> web.Response:
        name, records = self._run_powerquery(request.match_info["name"], await _args(request))
        size_raw = request.query.get("pagesize", "100")
        size = _int_or_none(size_raw)
        page = _int_or_none(request.query.get("page", "1"))
        if size is None or size < 0 or page is None or page < 1:
            raise QueryError("Invalid page or pagesize")
        window = records if size == 0 else records[(page - 1) * size : page * size]
        payload: dict[str, Any] = {"name": name, "record": window}
        if request.query.get("count", "").lower() == "true":
            payload["count"] = len(records)
        return web.json_response(payload)

    async def _powerquery_count(self, request: web.Request) -> web.Response:
        _, records = self._run_powerquery(request.match_info["name"], await _args(request))
        return web.json_response({"count": len(records)})

    # -----------------------------------------------------------------------------------------
    # Attendance writes
    # -----------------------------------------------------------------------------------------

    def _year_term(self, school_number: int, day: datetime.date) -> Row | None:
        for term in self._rows["terms"]:
            if (
                term["schoolid"] == school_number
                and term["isyearrec"] == 1
                and term["firstday"] <= day <= term["lastday"]
            ):
                return term
        return None

    def _candidates(self, table: str, clauses: list[Clause]) -> list[Row]:
        """Rows that may match: narrowed by an equality on an indexed key column, so that
        benchmarks with thousands of rows do not measure the simulator's scans."""
        for clause in clauses:
            if clause.op == "==" and (table, clause.column.key) in _INDEXED:
                return self._index(table, clause.column.key).get(clause.value, [])
        return self._rows[table]

    def _index(self, table: str, column: str) -> dict[Any, list[Row]]:
        rows = self._rows[table]
        stamp = (id(rows), len(rows))
        cached = self._row_indexes.get((table, column))
        if cached is None or cached[0] != stamp:
            index: dict[Any, list[Row]] = {}
            for row in rows:
                index.setdefault(row[column], []).append(row)
            cached = (stamp, index)
            self._row_indexes[(table, column)] = cached
        return cached[1]

    def _existing_day_row(self, student_id: int, day: datetime.date, mode: str) -> Row | None:
        """The student's one row of ``mode`` (Daily or Time) on ``day``."""
        for row in self._index("attendance", "studentid").get(student_id, []):
            if row["att_date"] == day and row["att_mode_code"] == mode:
                return row
        return None

    def _existing_meeting(
        self, student_id: int, day: datetime.date, ccid: int, periodid: int
    ) -> Row | None:
        for row in self._index("attendance", "studentid").get(student_id, []):
            if (
                row["att_date"] == day
                and row["att_mode_code"] == ATT_MODE_MEETING
                and (row["ccid"], row["periodid"]) == (ccid, periodid)
            ):
                return row
        return None

    def _take_attendance_id(self) -> int:
        value = self._next_attendance_id
        self._next_attendance_id += 1
        return value

    def _take_attendance_dcid(self) -> int:
        value = self._next_attendance_dcid
        self._next_attendance_dcid += 1
        return value

    def _records(self, body: Any, *, single: bool) -> list[Any]:
        """The payload's ``record`` list, or 400 (exactly one for daily_time, one or more for
        meeting_interval)."""
        if not isinstance(body, dict):
            raise _ApiError(400, {"message": "Request body must be a JSON object"})
        record = body.get("record")
        if single and (not isinstance(record, list) or len(record) != 1):
            raise _ApiError(
                400,
                {
                    "message": "Only a single attendance daily or time record may be "
                    "submitted in the payload"
                },
            )
        if not isinstance(record, list) or not record:
            raise _ApiError(400, {"message": "At least one attendance record must be submitted"})
        return record

    def _record_fields(
        self, record: Any, required: tuple[str, ...], times: tuple[str, ...] = ()
    ) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """``tables.attendance`` of one payload record as strings, and what is wrong with it.

        Values must be JSON strings (``strict_string_values``); the ``times`` fields
        (``start_time``/``end_time``, no ATTENDANCE column) are integers, sent as JSON
        numbers or digit strings."""
        tables = record.get("tables") if isinstance(record, dict) else None
        raw = tables.get("attendance") if isinstance(tables, dict) else None
        if not isinstance(raw, dict):
            return {}, [("tables.attendance", "MISSING_FIELD")]
        spec = TABLES["attendance"]
        values: dict[str, str] = {}
        errors: list[tuple[str, str]] = []
        for name, value in raw.items():
            key = str(name).strip().lower()
            column = spec.column(key)
            if key in times:
                if isinstance(value, int) and not isinstance(value, bool):
                    values[key] = str(value)
                elif isinstance(value, str) and _int_or_none(value) is not None:
                    values[key] = value.strip()
                else:
                    errors.append((key, "INVALID_VALUE"))
            elif column is None or column.key == "id":
                errors.append((str(name), "INVALID_FIELD"))
            elif isinstance(value, str):
                values[column.key] = value
            elif self.strict_string_values or isinstance(value, bool | dict | list):
                errors.append((column.key, "TYPECAST_ERROR"))
            else:
                values[column.key] = "" if value is None else str(value)
        errors.extend(
            (name, "MISSING_FIELD")
            for name in required
            if not values.get(name, "").strip() and (name, "INVALID_VALUE") not in errors
        )
        return values, errors

    def _check_write_grants(self, values: Iterable[dict[str, str]]) -> None:
        spec = TABLES["attendance"]
        columns = [spec.column(k) for v in values for k in v if k not in _MEETING_TIMES]
        self._check_grants(spec, [c for c in columns if c is not None], write=True)

    def _typed(self, values: dict[str, str], errors: list[tuple[str, str]]) -> Row:
        """Column values converted to their stored types; a bad one is added to ``errors``."""
        spec = TABLES["attendance"]
        typed: Row = {}
        for key, text in values.items():
            column = spec.column(key)
            if column is None:  # start_time / end_time, already checked to be integers
                typed[key] = int(text)
                continue
            try:
                typed[key] = _coerce(column, text)
            except ValueError:
                errors.append((key, "INVALID_VALUE"))
        return typed

    def _check_common(self, typed: Row, errors: list[tuple[str, str]]) -> str | None:
        """Student, school, year and code checks shared by both endpoints; return the
        school's attendance mode (None for an unknown school)."""
        student = self._find("students", "id", typed["studentid"])
        school = self._find("schools", "school_number", typed["schoolid"])
        if student is None:
            errors.append(("studentid", "INVALID_VALUE"))
        if school is None or (student is not None and student["schoolid"] != typed["schoolid"]):
            errors.append(("schoolid", "INVALID_VALUE"))
        term = self._year_term(typed["schoolid"], typed["att_date"]) if school else None
        if school is not None and term is None:
            errors.append(("att_date", "INVALID_VALUE"))
        if term is not None and term["yearid"] != typed["yearid"]:
            errors.append(("yearid", "INVALID_VALUE"))
        code = self._find("attendance_code", "id", typed["attendance_codeid"])
        if code is None or (code["schoolid"], code["yearid"]) != (
            typed["schoolid"],
            typed["yearid"],
        ):
            errors.append(("attendance_codeid", "INVALID_VALUE"))
        info = self.dataset.school(typed["schoolid"]) if school is not None else None
        return info.attendance_mode if info is not None else None

    def _validate_write(self, values: dict[str, str]) -> Row:
        """Check the business rules of a daily or time write; return typed values or raise 400.

        The school's mode decides: a Daily school takes ``ATT_ModeDaily``, a Time school
        ``ATT_ModeTime`` with ``total_minutes`` (0-1440), a Meeting school neither."""
        errors: list[tuple[str, str]] = []
        typed = self._typed(values, errors)
        if errors:
            raise _validation_failed(errors)
        mode = self._check_common(typed, errors)
        if mode is not None and (
            typed["att_mode_code"] != mode or mode not in (ATT_MODE_DAILY, ATT_MODE_TIME)
        ):
            errors.append(("att_mode_code", "INVALID_VALUE"))
        minutes = typed.get("total_minutes")
        if typed["att_mode_code"] == ATT_MODE_TIME:
            if minutes is None:
                errors.append(("total_minutes", "MISSING_FIELD"))
            elif not 0 <= minutes <= _DAY_MINUTES:
                errors.append(("total_minutes", "INVALID_VALUE"))
        elif minutes:
            errors.append(("total_minutes", "INVALID_VALUE"))
        if typed.get("dcid") is not None:
            existing = self._existing_day_row(
                typed["studentid"], typed["att_date"], typed["att_mode_code"]
            )
            if existing is None or existing["dcid"] != typed["dcid"]:
                errors.append(("dcid", "INVALID_VALUE"))
        if errors:
            raise _validation_failed(errors)
        return typed

    def _validate_meeting(self, typed: Row, errors: list[tuple[str, str]]) -> Meeting | None:
        """Check one meeting record's rules; return the meeting it is for."""
        mode = self._check_common(typed, errors)
        if mode is not None and (mode != ATT_MODE_MEETING or typed["att_mode_code"] != mode):
            errors.append(("att_mode_code", "INVALID_VALUE"))
        start, end = typed["start_time"], typed["end_time"]
        if not 0 <= start < end <= _DAY_SECONDS:
            errors.append(("start_time", "INVALID_VALUE"))
        if mode != ATT_MODE_MEETING:
            return None
        meetings = [
            m for m in self.meetings_for(typed["studentid"], typed["att_date"])
            if m.ccid == typed["ccid"]
        ]  # fmt: skip
        meeting = next((m for m in meetings if m.periodid == typed["periodid"]), None)
        if not meetings:
            errors.append(("ccid", "INVALID_VALUE"))
        elif meeting is None:
            errors.append(("periodid", "INVALID_VALUE"))
        elif self.strict_meeting_times and (start, end) != (meeting.start_time, meeting.end_time):
            errors.append(("start_time", "INVALID_VALUE"))
        if meeting is not None and typed.get("dcid") is not None:
            existing = self._existing_meeting(
                typed["studentid"], typed["att_date"], meeting.ccid, meeting.periodid
            )
            if existing is None or existing["dcid"] != typed["dcid"]:
                errors.append(("dcid", "INVALID_VALUE"))
        return meeting

    def _upsert(self, request: web.Request, typed: Row, existing: Row | None) -> dict[str, Any]:
        """Write one validated record (update ``existing`` or insert); its ``result`` entry."""
        if existing is not None:
            for key, value in typed.items():
                if key not in ("id", "dcid", "studentid", "att_date", "att_mode_code"):
                    existing[key] = value
            row, action = existing, "UPDATE"
        else:
            row = {c.key: ATTENDANCE_DEFAULTS.get(c.key) for c in TABLES["attendance"].columns}
            row.update(typed)
            row["id"] = self._take_attendance_id()
            row["dcid"] = self._take_attendance_dcid()
            row["ip_address"] = request.remote
            self._rows["attendance"].append(row)
            action = "INSERT"
        ref = f"{request.scheme}://{request.host}/ws/schema/table/attendance/{row['dcid']}"
        return {
            "status": "SUCCESS",
            "action": action,
            "success_message": {"id": row["id"], "ref": ref},
        }

    @staticmethod
    def _error_results(actions: Iterable[str]) -> web.Response:
        error = {
            "field": "attendance",
            "error_code": "ATTENDANCE_SAVE_FAILED",
            "error_description": "The attendance record could not be saved (simulated)",
        }
        return web.json_response(
            {
                "result": [
                    {"status": "ERROR", "action": action, "error_message": {"error": error}}
                    for action in actions
                ]
            }
        )

    async def _before_write(self, request: web.Request) -> Any:
        if self.faults.write_latency > 0:
            await asyncio.sleep(self.faults.write_latency)
        if self.faults.write_forbidden:
            raise _no_access("ATTENDANCE", ["attendance_codeid"])
        return await _json_body(request)

    async def _after_write(self, results: list[dict[str, Any]]) -> web.Response:
        if self.faults.hang_after_write > 0:
            self.faults.hang_after_write -= 1
            await asyncio.sleep(self.faults.hang_seconds)
        return web.json_response({"result": results})

    async def _daily_time(self, request: web.Request) -> web.Response:
        [record] = self._records(await self._before_write(request), single=True)
        values, errors = self._record_fields(record, _REQUIRED_WRITE_FIELDS)
        if errors:
            raise _validation_failed(errors)
        self._check_write_grants([values])
        typed = self._validate_write(values)
        mode = typed["att_mode_code"]
        existing = self._existing_day_row(typed["studentid"], typed["att_date"], mode)
        if self.faults.write_error_in_body:
            return self._error_results(["UPDATE" if existing else "INSERT"])
        return await self._after_write([self._upsert(request, typed, existing)])

    async def _meeting_interval(self, request: web.Request) -> web.Response:
        """All meetings of one student on one day; validated as a whole, then each record
        inserted or updated by (student, date, ccid, periodid)."""
        records = self._records(await self._before_write(request), single=False)
        errors: list[tuple[str, str]] = []
        all_values: list[dict[str, str]] = []
        for record in records:
            values, record_errors = self._record_fields(
                record, _REQUIRED_MEETING_FIELDS, _MEETING_TIMES
            )
            errors += [e for e in record_errors if e not in errors]
            all_values.append(values)
        if errors:
            raise _validation_failed(errors)
        self._check_write_grants(all_values)
        for key in ("studentid", "att_date"):
            if len({v[key].strip() for v in all_values}) > 1:
                raise _ApiError(
                    400,
                    {
                        "message": _SINGLE_STUDENT_DAY,
                        "errors": [
                            {"resource": "ATTENDANCE", "field": key, "code": "INVALID_VALUE"}
                        ],
                    },
                )
        typed_all = [self._typed(values, errors) for values in all_values]
        if errors:
            raise _validation_failed(errors)
        planned: list[tuple[Row, Row | None]] = []
        seen: set[tuple[int, int]] = set()
        for typed in typed_all:
            meeting = self._validate_meeting(typed, errors)
            if meeting is None:
                continue
            key = (meeting.ccid, meeting.periodid)
            if key in seen:
                errors.append(("ccid", "DUPLICATE_VALUE"))
            seen.add(key)
            typed.pop("start_time")
            typed.pop("end_time")
            existing = self._existing_meeting(typed["studentid"], typed["att_date"], *key)
            planned.append((typed, existing))
        if errors:
            raise _validation_failed(list(dict.fromkeys(errors)))
        if self.faults.write_error_in_body:
            return self._error_results("UPDATE" if e else "INSERT" for _, e in planned)
        return await self._after_write([self._upsert(request, t, e) for t, e in planned])

    # -----------------------------------------------------------------------------------------
    # /_sim control endpoints
    # -----------------------------------------------------------------------------------------

    async def _sim_calls(self, request: web.Request) -> web.Response:
        return web.json_response([c.to_json() for c in self.calls])

    async def _sim_attendance(self, request: web.Request) -> web.Response:
        return web.json_response(self.attendance_rows())

    async def _sim_add_attendance(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, {"message": "Body must be a JSON object of ATTENDANCE columns"})
        try:
            row = self.add_attendance(**body)
        except ValueError as exc:
            raise _ApiError(400, {"message": str(exc)}) from exc
        return web.json_response(row)

    def _faults_json(self) -> dict[str, Any]:
        return {
            "latency": self.faults.latency,
            "write_latency": self.faults.write_latency,
            "outage": self.faults.outage,
            "queue": [list(item) for item in self.faults.queue],
            "write_error_in_body": self.faults.write_error_in_body,
            "write_forbidden": self.faults.write_forbidden,
        }

    async def _sim_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults_json())

    async def _sim_set_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, {"message": "Body must be a JSON object of Faults fields"})
        try:
            updates = _parse_faults(body)
        except (TypeError, ValueError) as exc:
            raise _ApiError(400, {"message": str(exc)}) from exc
        for name, value in updates.items():
            setattr(self.faults, name, value)
        return web.json_response(self._faults_json())

    async def _sim_reset_calls(self, request: web.Request) -> web.Response:
        self.reset_calls()
        return web.json_response({"ok": True})

    async def _sim_revoke_tokens(self, request: web.Request) -> web.Response:
        self.revoke_tokens()
        return web.json_response({"ok": True})


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _coerce(column: Column, value: Any) -> Any:
    """Convert a written or seeded value to the stored type of ``column`` (ValueError if bad)."""
    if value is None or value == "":
        return None
    if column.type is ColType.NUMBER:
        if isinstance(value, bool):
            raise ValueError(f"{column.key}: not a number")
        if isinstance(value, int):
            return value
        number = _int_or_none(str(value))
        if number is None:
            raise ValueError(f"{column.key}: not an integer: {value!r}")
        return number
    if column.type is ColType.DATE:
        if isinstance(value, datetime.date):
            return value
        day = parse_date(str(value))
        if day is None:
            raise ValueError(f"{column.key}: not a YYYY-MM-DD date: {value!r}")
        return day
    return str(value)


async def _json_body(request: web.Request) -> Any:
    """Parsed JSON request body, or None when there is none or it is not JSON."""
    if not request.body_exists:
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


async def _args(request: web.Request) -> Any:
    body = await _json_body(request)
    return {} if body is None else body


def _parse_faults(body: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(Faults)}
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name not in known:
            raise ValueError(f"unknown fault {name!r}; known: {sorted(known)}")
        if name in ("latency", "write_latency", "outage_until", "hang_seconds"):
            out[name] = float(value)
        elif name == "hang_after_write":
            out[name] = int(value)
        elif name == "queue":
            out[name] = [_queue_item(item) for item in value]
        elif isinstance(value, bool):
            out[name] = value
        else:
            raise TypeError(f"fault {name!r} must be true or false")
    return out


def _queue_item(item: Any) -> tuple[int, float | None]:
    if isinstance(item, int) and not isinstance(item, bool):
        return item, None
    status: Any
    retry: Any
    if isinstance(item, dict):
        status, retry = item.get("status"), item.get("retry_after")
    elif isinstance(item, list | tuple) and len(item) in (1, 2):
        status, retry = item[0], (item[1] if len(item) == 2 else None)
    else:
        raise ValueError(f"bad queue item {item!r}: use [status, retry_after_seconds|null]")
    return int(status), None if retry is None else float(retry)
