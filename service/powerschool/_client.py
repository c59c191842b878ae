"""An aiohttp client for one district's PowerSchool server.

It knows the wire quirks the reference file records: ``expires_in`` arrives as a string,
schema-table values are all strings, the outer ``record[].id`` is the row's DCID (never
STUDENTS.ID), a 200 can carry an ERROR, and a 401 can mean a permission problem.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiohttp
import structlog

from service import tracing
from service.metrics import observe_call
from service.outbound import OutboundError, json_capped
from service.powerschool._errors import (
    PowerSchoolAuthError,
    PowerSchoolBlocked,
    PowerSchoolError,
    PowerSchoolForbidden,
    PowerSchoolRejected,
    PowerSchoolUnavailable,
)

log = structlog.get_logger("powerschool")

# PowerSchool caps schema-table pages per plugin; 100 is the smallest cap seen live.
PAGE_SIZE = 100
_STUDENT_COLUMNS = "id,dcid,schoolid,student_number,enroll_status"
MEETING_TEMPLATE_QUERY = "com.pearson.core.attendance.meeting_interval_attendance_template"
_RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# A page of 100 rows is a few kilobytes; anything near this is not PowerSchool answering.
MAX_BODY_BYTES = 4 << 20


@dataclass(frozen=True)
class PSStudentIds:
    """A student's two PowerSchool keys, their school and number, as PowerSchool reports them."""

    id: int
    dcid: int
    school_number: int | None
    student_number: str
    enroll_status: int | None


@dataclass(frozen=True)
class YearTerm:
    """A school's year-long term (``isyearrec=1``)."""

    yearid: int
    firstday: date
    lastday: date


@dataclass(frozen=True)
class AttendanceCode:
    """One ATTENDANCE_CODE row of a school year."""

    id: int
    att_code: str
    presence_status: str


@dataclass(frozen=True)
class DailyAttendance:
    """A student's existing daily ATTENDANCE row."""

    id: int
    dcid: int
    attendance_codeid: int | None
    comment: str


@dataclass(frozen=True)
class ClassMeeting:
    """One class meeting of a student's day, as PowerSchool schedules it: the section
    enrollment (CC.ID), the period, and its start and end in seconds since local midnight."""

    ccid: int
    period_id: int
    start_time: int
    end_time: int
    period: str = ""


@dataclass(frozen=True)
class MeetingAttendance:
    """A student's existing Meeting-mode ATTENDANCE row (one class meeting's mark)."""

    id: int
    dcid: int
    ccid: int
    period_id: int
    attendance_codeid: int | None
    comment: str


@dataclass(frozen=True)
class MeetingWrite:
    """One meeting's mark to send: which meeting, and the code and comment it gets."""

    meeting: ClassMeeting
    attendance_codeid: int
    comment: str


@dataclass(frozen=True)
class WriteResult:
    """What PowerSchool answered to an attendance write."""

    attendance_id: int | None
    action: str


def _digits(value: int | str, what: str) -> str:
    """Render an ID for a ``q=`` filter, refusing anything that is not a plain number."""
    text = str(value)
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{what} must be digits")
    return text


def _int_or_none(value: object) -> int | None:
    text = "" if value is None else str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _rows(body: Any, table: str) -> list[dict[str, Any]]:
    """The ``tables.{table}`` dicts of a schema-table answer; a missing ``record`` is no rows."""
    if not isinstance(body, dict):
        raise PowerSchoolUnavailable("PowerSchool returned an unexpected body")
    records = body.get("record") or []
    return [r.get("tables", {}).get(table, {}) for r in records if isinstance(r, dict)]


def _denied(body: Any) -> tuple[tuple[str, str], ...]:
    """(resource, field) of each refused field a 403 body names."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return tuple(
        (str(e.get("resource") or ""), str(e.get("field") or ""))
        for e in errors or []
        if isinstance(e, dict) and e.get("field")
    )


def _error_text(body: Any) -> str:
    """A short, safe summary of a PowerSchool error body."""
    if isinstance(body, dict):
        if "errorMessage" in body and isinstance(body["errorMessage"], dict):
            return str(body["errorMessage"].get("message", ""))[:300]
        parts = [str(body.get("message") or body.get("error") or "")]
        for err in body.get("errors") or []:
            if isinstance(err, dict):
                parts.append(
                    f"{err.get('resource', '')}.{err.get('field', '')}: {err.get('code', '')}"
                )
        return "; ".join(p for p in parts if p)[:300]
    return ""


class PowerSchoolClient:
    """Talks to one PowerSchool server with one plugin's OAuth credentials.

    The session is shared and owned by the caller (its connector bounds the pool).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        # What a plugin can see depends on its grants, so caches key on server and plugin.
        self.cache_key = (self.base_url, client_id)
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PowerSchoolClient(base_url={self.base_url!r})"

    async def _fetch_token(self) -> str:
        started = time.perf_counter()
        status: int | None = None
        span = tracing.start_client_span("PowerSchool POST", "POST", "/oauth/access_token")
        try:
            async with self._session.post(
                f"{self.base_url}/oauth/access_token",
                data={"grant_type": "client_credentials"},
                headers={
                    "Authorization": f"Basic {self._basic}",
                    "Accept": "application/json",
                    "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
                },
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                body = await _json_or_none(resp)
                if resp.status in _RETRYABLE_STATUSES or (resp.status >= 500):
                    raise PowerSchoolUnavailable(
                        f"PowerSchool token endpoint answered {resp.status}",
                        status=resp.status,
                        retry_after=_retry_after(resp),
                    )
                token = body.get("access_token") if isinstance(body, dict) else None
                if resp.status >= 300 or not token:
                    raise PowerSchoolAuthError(
                        "PowerSchool refused the plugin's client ID/secret "
                        f"(HTTP {resp.status}); check the district's PowerSchool credentials",
                        status=resp.status,
                    )
                expires_in = _int_or_none(body.get("expires_in")) or 3600
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PowerSchoolUnavailable(
                f"PowerSchool token endpoint unreachable: {type(exc).__name__}"
            ) from exc
        except OutboundError as exc:
            raise PowerSchoolBlocked(f"PowerSchool not called: {exc}") from exc
        finally:
            elapsed = time.perf_counter() - started
            observe_call("powerschool", "/oauth/access_token", "POST", status, elapsed)
            tracing.end_client_span(span, status)
            log.debug(
                "powerschool_call",
                endpoint="/oauth/access_token",
                http_status=status,
                duration_ms=round(elapsed * 1000, 1),
            )
        # Refresh well before expiry so a long request never starts with a dying token.
        self._token_expires = time.monotonic() + max(expires_in * 0.9, 1.0)
        return str(token)

    async def _get_token(self, stale: str | None = None) -> str:
        async with self._token_lock:
            # Singleflight: only the first waiter refreshes; the rest reuse its token.
            if self._token and self._token != stale and time.monotonic() < self._token_expires:
                return self._token
            self._token = await self._fetch_token()
            return self._token

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        """Call ``/ws/...`` with a bearer token and return the parsed JSON body.

        Refreshes the token once on 401; raises a :class:`PowerSchoolError` subclass for
        everything that is not a success. A lost answer to a write is "unavailable" like any
        other: callers reconcile by reading before they write again.
        """
        token = await self._get_token()
        for attempt in range(2):
            started = time.perf_counter()
            status: int | None = None
            span = tracing.start_client_span(f"PowerSchool {method}", method, path)
            try:
                async with self._session.request(
                    method,
                    f"{self.base_url}{path}",
                    params=params,
                    json=json,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Accept": "application/json",
                    },
                    timeout=self._timeout,
                ) as resp:
                    status = resp.status
                    body = await _json_or_none(resp)
                    if resp.status == 401 and attempt == 0:
                        token = await self._get_token(stale=token)
                        continue
                    _raise_for(resp, body, path, empty_ok=method == "DELETE")
                    return body
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise PowerSchoolUnavailable(
                    f"PowerSchool unreachable: {type(exc).__name__}"
                ) from exc
            except OutboundError as exc:
                raise PowerSchoolBlocked(f"PowerSchool not called: {exc}") from exc
            finally:
                elapsed = time.perf_counter() - started
                observe_call("powerschool", path, method, status, elapsed)
                tracing.end_client_span(span, status)
                log.debug(
                    "powerschool_call",
                    endpoint=path,
                    method=method,
                    http_status=status,
                    duration_ms=round(elapsed * 1000, 1),
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def authenticate(self) -> None:
        """Ask for a fresh token now: proves the server answers and grants the credentials."""
        await self._get_token(stale=self._token)

    async def first_row(self, table: str, columns: list[str]) -> dict[str, Any] | None:
        """One row of ``table`` with exactly ``columns`` projected (None if the table is
        empty): a read that answers 403 when the plugin lacks any of those fields."""
        body = await self.request(
            "GET",
            f"/ws/schema/table/{table.lower()}",
            params={"projection": ",".join(c.lower() for c in columns), "pagesize": "1"},
        )
        rows = _rows(body, table.lower())
        return rows[0] if rows else None

    async def attendance_count(self, school_number: int, yearid: int, mode: str) -> int:
        """How many ATTENDANCE rows of one school and year have ``att_mode_code == mode``."""
        if not mode.isascii() or not mode.replace("_", "").isalnum():
            raise ValueError("attendance mode must be a plain code such as ATT_ModeDaily")
        body = await self.request(
            "GET",
            "/ws/schema/table/attendance/count",
            params={
                "q": f"schoolid=={_digits(school_number, 'school number')};"
                f"yearid=={_digits(yearid, 'yearid')};att_mode_code=={mode}"
            },
        )
        count = _int_or_none(body.get("count")) if isinstance(body, dict) else None
        if count is None:
            raise PowerSchoolRejected("PowerSchool answered a count without a number")
        return count

    async def student_by_dcid(self, dcid: int | str) -> PSStudentIds | None:
        """Look up a student by STUDENTS.DCID through the schema table API."""
        return await self._student(f"dcid=={_digits(dcid, 'DCID')}")

    async def student_by_id(self, students_id: int | str) -> PSStudentIds | None:
        """Look up a student by STUDENTS.ID through the schema table API."""
        return await self._student(f"id=={_digits(students_id, 'STUDENTS.ID')}")

    async def _student(self, query: str) -> PSStudentIds | None:
        body = await self.request(
            "GET",
            "/ws/schema/table/students",
            params={"q": query, "projection": _STUDENT_COLUMNS, "pagesize": "2"},
        )
        rows = _rows(body, "students")
        if not rows:
            return None
        row = rows[0]
        # tables.students.id is STUDENTS.ID; the outer record[].id is the DCID.
        students_id, dcid = _int_or_none(row.get("id")), _int_or_none(row.get("dcid"))
        if students_id is None or dcid is None:
            raise PowerSchoolRejected("PowerSchool returned a student without ID/DCID")
        return PSStudentIds(
            id=students_id,
            dcid=dcid,
            school_number=_int_or_none(row.get("schoolid")),
            student_number=str(row.get("student_number") or ""),
            enroll_status=_int_or_none(row.get("enroll_status")),
        )

    async def id_map(self, keys: list[int], *, by: str = "dcid") -> dict[int, int] | None:
        """Map many students at once with the core PowerQuery ``student_dcid_id_map``:
        DCID -> STUDENTS.ID (``by="dcid"``) or STUDENTS.ID -> DCID (``by="id"``).

        Returns None when the server does not offer the query, so callers can fall back.
        """
        argument = "students_dcid" if by == "dcid" else "students_id"
        try:
            body = await self.request(
                "POST",
                "/ws/schema/query/com.pearson.core.student.student_dcid_id_map",
                json={argument: [int(_digits(k, "student key")) for k in keys]},
            )
        except PowerSchoolRejected as exc:
            if exc.status == 404:
                return None
            raise
        mapping: dict[int, int] = {}
        for record in body.get("record") or [] if isinstance(body, dict) else []:
            row = (
                record.get("tables", {}).get("students", record) if isinstance(record, dict) else {}
            )
            students_id, dcid = _int_or_none(row.get("id")), _int_or_none(row.get("dcid"))
            if students_id is not None and dcid is not None:
                mapping[dcid if by == "dcid" else students_id] = (
                    students_id if by == "dcid" else dcid
                )
        return mapping

    async def year_terms(self, school_number: int) -> list[YearTerm]:
        """Every year-long term of a school, across all pages."""
        rows = await self._all_rows(
            "terms",
            f"schoolid=={_digits(school_number, 'school number')};isyearrec==1",
            "id,yearid,firstday,lastday",
        )
        terms = []
        for row in rows:
            yearid = _int_or_none(row.get("yearid"))
            try:
                first, last = (date.fromisoformat(str(row[k])) for k in ("firstday", "lastday"))
            except (KeyError, ValueError):
                continue
            if yearid is not None:
                terms.append(YearTerm(yearid=yearid, firstday=first, lastday=last))
        return terms

    async def attendance_codes(self, school_number: int, yearid: int) -> list[AttendanceCode]:
        """Every ATTENDANCE_CODE of one school and year."""
        rows = await self._all_rows(
            "attendance_code",
            f"schoolid=={_digits(school_number, 'school number')};"
            f"yearid=={_digits(yearid, 'yearid')}",
            "id,att_code,presence_status_cd",
        )
        codes = []
        for row in rows:
            code_id = _int_or_none(row.get("id"))
            if code_id is not None:
                codes.append(
                    AttendanceCode(
                        id=code_id,
                        att_code=str(row.get("att_code") or ""),
                        presence_status=str(row.get("presence_status_cd") or ""),
                    )
                )
        return codes

    async def daily_attendance(self, students_id: int, att_date: date) -> DailyAttendance | None:
        """The student's daily attendance row for that date, if PowerSchool has one."""
        body = await self.request(
            "GET",
            "/ws/schema/table/attendance",
            params={
                "q": f"studentid=={_digits(students_id, 'STUDENTS.ID')};"
                f"att_date=={att_date.isoformat()};att_mode_code==ATT_ModeDaily",
                "projection": "id,dcid,attendance_codeid,att_comment",
                "pagesize": "2",
            },
        )
        for row in _rows(body, "attendance"):
            row_id, dcid = _int_or_none(row.get("id")), _int_or_none(row.get("dcid"))
            if row_id is not None and dcid is not None:
                return DailyAttendance(
                    id=row_id,
                    dcid=dcid,
                    attendance_codeid=_int_or_none(row.get("attendance_codeid")),
                    comment=str(row.get("att_comment") or ""),
                )
        return None

    async def school_daily_attendance(
        self, school_number: int, att_date: date, *, after_id: int = 0
    ) -> tuple[list[tuple[int, DailyAttendance]], bool]:
        """One page (up to ``PAGE_SIZE``) of a school's daily rows for ``att_date``, each with
        its STUDENTS.ID, in ATTENDANCE.ID order after ``after_id``, and whether the page was
        full (more may follow). Keyset paging: a row deleted between pages cannot shift
        another out of the read, as ``page=`` would."""
        body = await self.request(
            "GET",
            "/ws/schema/table/attendance",
            params={
                "q": f"schoolid=={_digits(school_number, 'school number')};"
                f"att_date=={att_date.isoformat()};att_mode_code==ATT_ModeDaily;"
                f"id=gt={_digits(after_id, 'ATTENDANCE.ID')}",
                "projection": "id,dcid,studentid,attendance_codeid,att_comment",
                "sort": "id",
                "pagesize": str(PAGE_SIZE),
            },
        )
        page = _rows(body, "attendance")
        rows = []
        for row in page:
            keys = [_int_or_none(row.get(k)) for k in ("id", "dcid", "studentid")]
            if None not in keys:
                row_id, dcid, students_id = (k for k in keys if k is not None)
                rows.append(
                    (
                        students_id,
                        DailyAttendance(
                            id=row_id,
                            dcid=dcid,
                            attendance_codeid=_int_or_none(row.get("attendance_codeid")),
                            comment=str(row.get("att_comment") or ""),
                        ),
                    )
                )
        return rows, len(page) >= PAGE_SIZE

    async def class_meetings(
        self, students_id: int, school_number: int, att_date: date
    ) -> list[ClassMeeting]:
        """The student's class meetings that day at that school, in time order (the core
        PowerQuery ``meeting_interval_attendance_template``)."""
        body = await self.request(
            "POST",
            f"/ws/schema/query/{MEETING_TEMPLATE_QUERY}",
            params={"pagesize": "0"},
            json={
                "studentid": int(_digits(students_id, "STUDENTS.ID")),
                "schoolid": int(_digits(school_number, "school number")),
                "att_date": att_date.isoformat(),
            },
        )
        meetings = []
        for record in body.get("record") or [] if isinstance(body, dict) else []:
            meeting = _class_meeting(record)
            if meeting is not None:
                meetings.append(meeting)
        return sorted(meetings, key=lambda m: (m.start_time, m.ccid))

    async def meeting_attendance(self, students_id: int, att_date: date) -> list[MeetingAttendance]:
        """The student's Meeting-mode attendance rows for that date."""
        body = await self.request(
            "GET",
            "/ws/schema/table/attendance",
            params={
                "q": f"studentid=={_digits(students_id, 'STUDENTS.ID')};"
                f"att_date=={att_date.isoformat()};att_mode_code==ATT_ModeMeeting",
                "projection": "id,dcid,ccid,periodid,attendance_codeid,att_comment",
                "pagesize": str(PAGE_SIZE),
            },
        )
        rows = []
        for row in _rows(body, "attendance"):
            keys = [_int_or_none(row.get(k)) for k in ("id", "dcid", "ccid", "periodid")]
            if None not in keys:
                row_id, dcid, ccid, period_id = (k for k in keys if k is not None)
                rows.append(
                    MeetingAttendance(
                        id=row_id,
                        dcid=dcid,
                        ccid=ccid,
                        period_id=period_id,
                        attendance_codeid=_int_or_none(row.get("attendance_codeid")),
                        comment=str(row.get("att_comment") or ""),
                    )
                )
        return rows

    async def write_meeting_attendance(
        self,
        *,
        students_id: int,
        school_number: int,
        yearid: int,
        att_date: date,
        marks: list[MeetingWrite],
    ) -> list[WriteResult]:
        """Create or update the marks of several class meetings of one student and day, in
        the one request PowerSchool requires for them."""
        records = [
            {
                "name": "ATTENDANCE",
                "tables": {
                    "attendance": {
                        "studentid": str(students_id),
                        "schoolid": str(school_number),
                        "yearid": str(yearid),
                        "att_date": att_date.isoformat(),
                        "att_mode_code": "ATT_ModeMeeting",
                        "ccid": str(mark.meeting.ccid),
                        "periodid": str(mark.meeting.period_id),
                        "start_time": str(mark.meeting.start_time),
                        "end_time": str(mark.meeting.end_time),
                        "attendance_codeid": str(mark.attendance_codeid),
                        "att_comment": mark.comment,
                        "programid": "0",
                    }
                },
            }
            for mark in marks
        ]
        body = await self.request(
            "POST",
            "/ws/attendance/meeting_interval",
            json={"name": "ATTENDANCE", "record": records},
        )
        return _write_results(body)

    async def delete_attendance(self, dcid: int) -> None:
        """Delete an ATTENDANCE row by DCID (servers may refuse: 403/405)."""
        await self.request("DELETE", f"/ws/schema/table/attendance/{_digits(dcid, 'DCID')}")

    async def _all_rows(self, table: str, query: str, projection: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self.request(
                "GET",
                f"/ws/schema/table/{table}",
                params={
                    "q": query,
                    "projection": projection,
                    "pagesize": str(PAGE_SIZE),
                    "page": str(page),
                },
            )
            batch = _rows(body, table)
            rows.extend(batch)
            if len(batch) < PAGE_SIZE:
                return rows
            page += 1

    async def write_daily_attendance(
        self,
        *,
        students_id: int,
        school_number: int,
        yearid: int,
        att_date: date,
        attendance_codeid: int,
        comment: str,
    ) -> WriteResult:
        """Create or update the student's daily attendance row for ``att_date``."""
        record = {
            "studentid": str(students_id),
            "schoolid": str(school_number),
            "yearid": str(yearid),
            "att_date": att_date.isoformat(),
            "att_mode_code": "ATT_ModeDaily",
            "attendance_codeid": str(attendance_codeid),
            "att_comment": comment,
            "programid": "0",
        }
        body = await self.request(
            "POST",
            "/ws/attendance/daily_time",
            json={
                "name": "ATTENDANCE",
                "record": [{"name": "ATTENDANCE", "tables": {"attendance": record}}],
            },
        )
        return _write_result(body)


def _class_meeting(record: Any) -> ClassMeeting | None:
    """A meeting from a template record (``tables.attendance``, or flat), or None if it lacks
    its section, period or times; a period name is taken from any table that has one."""
    if not isinstance(record, dict):
        return None
    tables = record.get("tables")
    parts = [t for t in tables.values() if isinstance(t, dict)] if isinstance(tables, dict) else []
    row: dict[str, Any] = {}
    for part in [record, *reversed(parts)]:
        row.update(part)
    if isinstance(tables, dict) and isinstance(tables.get("attendance"), dict):
        row.update(tables["attendance"])
    ccid, period_id = _int_or_none(row.get("ccid")), _int_or_none(row.get("periodid"))
    start, end = _int_or_none(row.get("start_time")), _int_or_none(row.get("end_time"))
    if ccid is None or period_id is None or start is None or end is None:
        return None
    name = next(
        (
            str(row[k])
            for k in ("period_abbreviation", "abbreviation", "period_name", "period")
            if row.get(k) not in (None, "")
        ),
        "",
    )
    return ClassMeeting(ccid, period_id, start, end, name)


def _write_results(body: Any) -> list[WriteResult]:
    """Every result of a multi-record write; any that is not a SUCCESS raises."""
    if not isinstance(body, dict):
        raise PowerSchoolRejected("PowerSchool answered the write with an unexpected body")
    results = body.get("result")
    if results is None and isinstance(body.get("results"), dict):
        results = body["results"].get("result")
    if isinstance(results, dict):
        results = [results]
    if not isinstance(results, list) or not results:
        raise PowerSchoolRejected("PowerSchool answered the write without a result")
    return [_write_result({"result": [r]}) for r in results]


def _write_result(body: Any) -> WriteResult:
    """Parse a write answer; its shape is undocumented, so accept the known variants."""
    if not isinstance(body, dict):
        raise PowerSchoolRejected("PowerSchool answered the write with an unexpected body")
    results = body.get("result")
    if results is None and isinstance(body.get("results"), dict):
        results = body["results"].get("result")
    if isinstance(results, dict):  # single-element lists arrive as objects
        results = [results]
    if not results:
        raise PowerSchoolRejected("PowerSchool answered the write without a result")
    first = results[0] if isinstance(results[0], dict) else {}
    if str(first.get("status", "")).upper() != "SUCCESS":
        detail = first.get("error_message") or {}
        err = detail.get("error", detail) if isinstance(detail, dict) else {}
        if isinstance(err, list):
            err = err[0] if err else {}
        text = (
            f"{err.get('field', '')}: {err.get('error_description') or err.get('error_code', '')}"
            if isinstance(err, dict)
            else ""
        )
        raise PowerSchoolRejected(
            f"PowerSchool rejected the attendance record: {text.strip(': ') or 'status ERROR'}"
        )
    success = first.get("success_message") or {}
    return WriteResult(
        attendance_id=_int_or_none(success.get("id")) if isinstance(success, dict) else None,
        action=str(first.get("action", "")),
    )


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await json_capped(resp, MAX_BODY_BYTES)
    except ValueError:
        return None


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    raw = resp.headers.get("Retry-After", "")
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None


def _forbidden_text(body: Any, path: str) -> str:
    """Name what the plugin lacks: ``Table.Field`` for a table read or write, the field and
    query for a PowerQuery (whose 403 names fields as ``table.field``)."""
    names: list[str] = []
    errors = body.get("errors") if isinstance(body, dict) else None
    for err in errors if isinstance(errors, list) else []:
        if not isinstance(err, dict):
            continue
        resource, field = str(err.get("resource") or ""), str(err.get("field") or "")
        if "." in field:
            names.append(f"{field} (PowerQuery {resource})" if resource else field)
        elif resource or field:
            names.append(f"{resource}.{field}")
    what = ", ".join(names) or path
    return (
        f"PowerSchool plugin lacks access to {what} (HTTP 403); install and enable the "
        "current writeback plugin, which requests it"
    )[:400]


def _raise_for(
    resp: aiohttp.ClientResponse, body: Any, path: str, *, empty_ok: bool = False
) -> None:
    status = resp.status
    if 200 <= status < 300:
        if body is None and not empty_ok:
            raise PowerSchoolUnavailable(
                f"PowerSchool answered {path} with a non-JSON body", status=status
            )
        return
    detail = _error_text(body)
    suffix = f": {detail}" if detail else ""
    error: PowerSchoolError
    if status in _RETRYABLE_STATUSES or status >= 500 or body is None:
        error = PowerSchoolUnavailable(
            f"PowerSchool answered HTTP {status}{suffix}",
            status=status,
            retry_after=_retry_after(resp),
        )
    elif status == 401:
        error = PowerSchoolAuthError(
            f"PowerSchool refused a fresh token (HTTP 401){suffix}; check the plugin's access",
            status=status,
        )
    elif status == 403:
        error = PowerSchoolForbidden(
            _forbidden_text(body, path), status=status, denied=_denied(body)
        )
    else:
        error = PowerSchoolRejected(f"PowerSchool refused the request (HTTP {status}){suffix}")
        error.status = status
    raise error
