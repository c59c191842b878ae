"""CheckConnection: probes one district's PowerSchool and roster connections, read-only, and
reports every problem at once, each with its severity, the school it concerns and the fix an
admin can follow, before a single check-in fails on it.

PowerSchool: the URL (TLS), a fresh token, every field the shipped plugin requests (one read
per table projecting all of them: the installed plugin may be older or edited), the
PowerQuery the service calls, and for every enabled school its time zone, the year-long term
containing today, the configured codes in that year, and its attendance mode (for a Meeting
school also the PowerQuery its class meetings come from). PowerSchool
has no documented API field for a school's attendance mode, so the mode is read from the
school's ATTENDANCE rows of the year (the mode with the most rows) and compared with the
school's ``attendance_mode``; a school with no rows yet is given the benefit of the doubt, and a
school set to Time mode is reported unsupported.

Roster: Clever's token and the schools it shares, or the ClassLink Roster Server's endpoint,
OneRoster version and signatures, and that each configured roster school is visible.

Nothing is written: every PowerSchool call is a GET, except the PowerQuery probe, which is a
POST to PowerSchool's read-only query API (``/ws/schema/query``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.domain import rules_meeting
from service.domain._school_years import ATT_MODE_CODES
from service.domain.clever_events import clever_events_finding
from service.domain.districts import DistrictService
from service.models import (
    AttendanceMode,
    ConnectionReport,
    District,
    Finding,
    FindingCode,
    RosterSource,
    School,
    Severity,
)
from service.powerschool import (
    MEETING_TEMPLATE_QUERY,
    PluginGrants,
    PowerSchoolAuthError,
    PowerSchoolBlocked,
    PowerSchoolClient,
    PowerSchoolError,
    PowerSchoolForbidden,
    PowerSchoolPool,
    PowerSchoolRejected,
    PowerSchoolUnavailable,
)
from service.roster import (
    RetryPolicy,
    RosterAuthError,
    RosterError,
    RosterSchool,
    RosterSources,
    RosterUnavailable,
)
from service.store import SyncStateStore

DCID_ID_MAP_QUERY = "com.pearson.core.student.student_dcid_id_map"
# An admin is waiting at a screen: one quick retry, not a sync's minutes of patience.
CHECK_RETRY = RetryPolicy(attempts=2, timeout=20.0, wait_initial=0.5, wait_max=2.0)
_SCHOOL_CONCURRENCY = 3
_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_CODE_SETTINGS = (
    ("late_check_in_code", "late check-in"),
    ("early_check_out_code", "early check-out"),
    ("late_check_in_excused_code", "excused late check-in"),
    ("early_check_out_excused_code", "excused early check-out"),
    ("late_and_early_code", "late and left early"),
    ("missed_code", "missed class meeting"),
)


def _is_number(value: object) -> bool:
    # str.isdigit() alone takes "²" and other digits int() refuses.
    text = str(value)
    return text.isascii() and text.isdigit()


def _finding(
    code: FindingCode, severity: Severity, message: str, *, school: int = 0, count: int = 1
) -> Finding:
    return Finding(code, severity, message, count, count, school_number=school)


def plain_http_off_loopback(url: str) -> bool:
    """True for an ``http://`` URL whose host is not this machine: its traffic (a secret,
    tokens, student data) would cross a network unencrypted."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _forbidden(exc: PowerSchoolForbidden, what: str, *, school: int = 0) -> Finding:
    named = ", ".join(f"{r}.{f}" if r else f for r, f in exc.denied) or "a field"
    return _finding(
        FindingCode.POWERSCHOOL_FIELD_FORBIDDEN,
        Severity.ERROR,
        f"PowerSchool refused {what}: the plugin lacks access to {named}. Install the "
        "current Writeback plugin (it requests every field the service uses) and enable it "
        "under System > System Settings > Plugin Management Configuration.",
        school=school,
    )


class ConnectionChecker:
    """Produces a :class:`ConnectionReport` for a district."""

    def __init__(
        self,
        districts: DistrictService,
        powerschool: PowerSchoolPool,
        rosters: RosterSources,
        plugin: PluginGrants,
        sync_state: SyncStateStore,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._districts = districts
        self._powerschool = powerschool
        self._rosters = rosters
        self._plugin = plugin
        self._sync_state = sync_state
        self._now = now

    async def check(self, district_id: str) -> ConnectionReport:
        """Run every check of the district; problems become findings, never errors."""
        district = await self._districts.get(district_id, fresh=True)
        schools = [s for s in district.schools if s.writeback_enabled]
        (ps, checked), roster = await asyncio.gather(
            self._powerschool_checks(district, schools), self._roster_checks(district)
        )
        findings = [*_timezone_checks(district, schools), *ps, *roster]
        findings.sort(key=lambda f: (_ORDER[f.severity], f.school_number, f.code.value))
        return ConnectionReport(tuple(findings), schools_checked=checked)

    # --- PowerSchool ---------------------------------------------------------------------

    async def _powerschool_checks(
        self, district: District, schools: list[School]
    ) -> tuple[list[Finding], int]:
        conn = district.powerschool
        if not conn.configured:
            return [
                _finding(
                    FindingCode.POWERSCHOOL_NOT_CONFIGURED,
                    Severity.ERROR,
                    "The district has no PowerSchool connection. Enter the server URL "
                    "(https://your-district.powerschool.com) and the plugin's client ID and "
                    "secret from Plugin Management Configuration > Writeback Attendance > "
                    "Data Provider Configuration.",
                )
            ], 0
        findings: list[Finding] = []
        if plain_http_off_loopback(conn.base_url):
            findings.append(
                _finding(
                    FindingCode.POWERSCHOOL_NOT_TLS,
                    Severity.ERROR,
                    f"The PowerSchool URL {conn.base_url} is plain http://: the plugin's "
                    "secret and student data would cross the network unencrypted. Use the "
                    "https:// address of the PowerSchool server.",
                )
            )
        client = self._powerschool.client(conn.base_url, conn.client_id, conn.client_secret)
        try:
            await client.authenticate()
        except PowerSchoolUnavailable as exc:
            findings.append(
                _finding(
                    FindingCode.POWERSCHOOL_UNREACHABLE,
                    Severity.ERROR,
                    f"PowerSchool at {conn.base_url} did not answer ({exc}). Check the server "
                    "URL (the address staff use to sign in to PowerSchool, without a path) "
                    "and that the server is up and reachable from this service.",
                )
            )
            return findings, 0
        except PowerSchoolAuthError as exc:
            findings.append(
                _finding(
                    FindingCode.POWERSCHOOL_CREDENTIALS_REFUSED,
                    Severity.ERROR,
                    f"PowerSchool refused the plugin's client ID and secret (HTTP "
                    f"{exc.status or '?'}). Copy both again from System > System Settings > "
                    "Plugin Management Configuration > Writeback Attendance > Data Provider "
                    "Configuration, and check that the plugin is enabled.",
                )
            )
            return findings, 0
        except PowerSchoolBlocked as exc:
            findings.append(
                _finding(
                    FindingCode.POWERSCHOOL_UNREACHABLE,
                    Severity.ERROR,
                    f"{exc}. Use the https:// address of the PowerSchool server; an "
                    "on-premises server on a private network needs its host or network in "
                    "the service's UPSTREAM_ALLOWLIST.",
                )
            )
            return findings, 0
        findings += await _field_checks(client, self._plugin)
        if DCID_ID_MAP_QUERY in self._plugin.queries:
            findings += await _powerquery_checks(client)
        gate = asyncio.Semaphore(_SCHOOL_CONCURRENCY)

        async def one(school: School) -> list[Finding]:
            async with gate:
                return await self._school_checks(client, district, school)

        refused = any(f.code is FindingCode.POWERSCHOOL_FIELD_FORBIDDEN for f in findings)
        for found in await asyncio.gather(*(one(s) for s in schools)):
            # A school's read refused for a field already reported adds nothing to fix.
            findings += [
                f
                for f in found
                if not (refused and f.code is FindingCode.POWERSCHOOL_FIELD_FORBIDDEN)
            ]
        return findings, len(schools)

    async def _school_checks(
        self, client: PowerSchoolClient, district: District, school: School
    ) -> list[Finding]:
        number = school.school_number
        today = self._now().astimezone(_zone(school.timezone or district.timezone)).date()
        try:
            yearid, findings = await _school_year(client, school, today)
            if yearid is None:
                return findings
            findings += await _code_checks(client, school, yearid)
            findings += await _mode_checks(client, school, yearid)
            if school.attendance_mode is AttendanceMode.MEETING:
                findings += await _meeting_query_check(client, school, today)
        except PowerSchoolForbidden as exc:
            return [_forbidden(exc, f"a read for school {number}", school=number)]
        except PowerSchoolError as exc:
            return [
                _finding(
                    FindingCode.POWERSCHOOL_CHECK_FAILED,
                    Severity.WARNING,
                    f"The checks of school {number} could not finish: {exc}. Run the check "
                    "again; if it persists, PowerSchool is answering unexpectedly.",
                    school=number,
                )
            ]
        return findings

    # --- Roster --------------------------------------------------------------------------

    async def _roster_checks(self, district: District) -> list[Finding]:
        if district.roster_source is RosterSource.CLASSLINK:
            return await self._classlink_checks(district)
        return await self._clever_checks(district)

    async def _clever_checks(self, district: District) -> list[Finding]:
        if not district.clever.configured:
            return [_roster_not_configured(district, "Clever")]
        source = self._rosters.clever(district.clever, retry=CHECK_RETRY)
        findings, schools = await _roster_call(
            source.schools(),
            name="Clever",
            refused="Clever refused the app's credentials or district token",
            fix="Check the Clever client ID and secret (or district token) and that the "
            "district has authorised the app in Clever (Applications > Writeback).",
            other=FindingCode.ROSTER_UNREACHABLE,
        )
        if schools is not None:
            findings += _visible_schools(district, schools, "Clever", "shared with the app")
        events = clever_events_finding(district, await self._sync_state.get(district.district_id))
        if events is not None:
            findings.append(events)
        return findings

    async def _classlink_checks(self, district: District) -> list[Finding]:
        if not district.classlink.configured:
            return [_roster_not_configured(district, "ClassLink")]
        source = self._rosters.classlink(district.classlink, retry=CHECK_RETRY)
        findings, schools = await _roster_call(
            source.schools(),
            name="ClassLink",
            refused="The ClassLink Roster Server refused the signed request",
            fix="Copy the OneRoster client ID and secret again from ClassLink Roster Server "
            "> Applications > Writeback > OneRoster (OAuth 1.0a keys).",
            other=FindingCode.ONEROSTER_ENDPOINT_WRONG,
            endpoint=district.classlink.endpoint_url,
        )
        if schools is not None:
            findings += _visible_schools(district, schools, "ClassLink", "on the Roster Server")
        return findings


# --- PowerSchool checks, one concern each --------------------------------------------------


async def _field_checks(client: PowerSchoolClient, plugin: PluginGrants) -> list[Finding]:
    """One read per table projecting every field the plugin requests; a 403 names the
    refused fields, which are dropped and the read repeated, so all of them are reported."""
    findings = []
    for table in plugin.tables:
        wanted = list(plugin.fields(table))
        refused: list[str] = []
        while wanted:
            try:
                await client.first_row(table, wanted)
                break
            except PowerSchoolForbidden as exc:
                named = {f.upper() for _, f in exc.denied} & set(wanted)
                if not named:  # PowerSchool did not say which: report the table
                    refused.append("(fields not named by PowerSchool)")
                    break
                refused += sorted(named)
                wanted = [w for w in wanted if w not in named]
            except PowerSchoolError as exc:
                findings.append(
                    _finding(
                        FindingCode.POWERSCHOOL_CHECK_FAILED,
                        Severity.WARNING,
                        f"Reading {table} to check the plugin's fields failed: {exc}. Run "
                        "the check again; if it persists, PowerSchool is answering "
                        "unexpectedly.",
                    )
                )
                break
        if refused:
            findings.append(
                _finding(
                    FindingCode.POWERSCHOOL_FIELD_FORBIDDEN,
                    Severity.ERROR,
                    f"PowerSchool refuses {table} field(s) {', '.join(refused)}, which the "
                    "service needs: the installed plugin does not grant them (an older "
                    f"version, or an edited plugin.xml). Install the current {plugin.name} "
                    f"plugin (version {plugin.version}) and enable it under System > System "
                    "Settings > Plugin Management Configuration.",
                    count=len(refused),
                )
            )
    return findings


async def _powerquery_checks(client: PowerSchoolClient) -> list[Finding]:
    try:
        row = await client.first_row("students", ["id", "dcid"])
        if row is None or not _is_number(row.get("dcid", "")):
            return []  # no student to map: nothing to call the query with
        mapping = await client.id_map([int(row["dcid"])])
    except PowerSchoolForbidden as exc:
        return [_forbidden(exc, f"the PowerQuery {DCID_ID_MAP_QUERY} or a STUDENTS read")]
    except PowerSchoolError as exc:
        return [
            _finding(
                FindingCode.POWERQUERY_UNAVAILABLE,
                Severity.WARNING,
                f"The PowerQuery {DCID_ID_MAP_QUERY} failed ({exc}); roster syncs will look "
                "students up one at a time. Run the check again; if it persists, ask "
                "PowerSchool support whether core PowerQueries are enabled.",
            )
        ]
    if mapping is None:
        return [
            _finding(
                FindingCode.POWERQUERY_UNAVAILABLE,
                Severity.WARNING,
                f"PowerSchool does not offer the core PowerQuery {DCID_ID_MAP_QUERY}; roster "
                "syncs will look students up one at a time (slower for large districts). "
                "Update PowerSchool or ask its support to enable core PowerQueries.",
            )
        ]
    return []


async def _school_year(
    client: PowerSchoolClient, school: School, today: date
) -> tuple[int | None, list[Finding]]:
    number = school.school_number
    terms = await client.year_terms(number)
    current = next((t for t in terms if t.firstday <= today <= t.lastday), None)
    if current is not None:
        return current.yearid, []
    upcoming = min((t for t in terms if t.firstday > today), key=lambda t: t.firstday, default=None)
    if upcoming is not None:
        return upcoming.yearid, [
            _finding(
                FindingCode.SCHOOL_YEAR_MISSING,
                Severity.WARNING,
                f"School {number} is between school years: its next year starts on "
                f"{upcoming.firstday.isoformat()}; check-ins before then cannot be written.",
                school=number,
            )
        ]
    if not terms:
        message = (
            f"PowerSchool has no year-long term for school number {number}: either the "
            "school number is wrong (use SCHOOLS.SCHOOL_NUMBER, e.g. from School Setup) or "
            "the school's years are not set up. Fix the school number or create the year "
            "term under School Setup > Years & Terms."
        )
    else:
        message = (
            f"School {number} has no year-long term containing today ({today.isoformat()}): "
            "check-ins cannot be written. Create the current school year under School Setup "
            "> Years & Terms."
        )
    return None, [_finding(FindingCode.SCHOOL_YEAR_MISSING, Severity.ERROR, message, school=number)]


async def _code_checks(client: PowerSchoolClient, school: School, yearid: int) -> list[Finding]:
    number = school.school_number
    known = {c.att_code for c in await client.attendance_codes(number, yearid)}
    findings = []
    for setting, label in _CODE_SETTINGS:
        code = str(getattr(school, setting))
        if code and code not in known:
            findings.append(
                _finding(
                    FindingCode.ATTENDANCE_CODE_MISSING,
                    Severity.ERROR,
                    f"School {number} has no attendance code {code!r} (the {label} code) in "
                    f"school year {1990 + yearid}-{1991 + yearid}; those check-ins will fail. "
                    "Create it under School Setup > Attendance Codes, or set "
                    f"{setting} to an existing code.",
                    school=number,
                )
            )
    return findings


async def _mode_checks(client: PowerSchoolClient, school: School, yearid: int) -> list[Finding]:
    number = school.school_number
    counts: dict[AttendanceMode, int] = {}
    if school.attendance_mode is not AttendanceMode.TIME:
        counts = {
            mode: await client.attendance_count(number, yearid, code)
            for mode, code in ATT_MODE_CODES.items()
        }
    problem = rules_meeting.mode_problem(school, rules_meeting.observed_mode(counts), counts)
    if not problem:
        return []
    return [
        _finding(
            FindingCode.ATTENDANCE_MODE_UNSUPPORTED,
            Severity.ERROR,
            f"{problem[0].upper()}{problem[1:]}. Its check-ins fail until then.",
            school=number,
        )
    ]


async def _meeting_query_check(
    client: PowerSchoolClient, school: School, today: date
) -> list[Finding]:
    """A Meeting school's check-ins need the student's class meetings of the day, which only
    the core PowerQuery gives: ask it for one student (any answer, even none, proves it)."""
    number = school.school_number
    row = await client.first_row("students", ["id"])
    students_id = int(row["id"]) if row and _is_number(row.get("id", "")) else 0
    try:
        await client.class_meetings(students_id, number, today)
    except PowerSchoolForbidden as exc:
        why = str(exc)  # names what the plugin lacks and says to install the current one
    except PowerSchoolRejected as exc:
        if exc.status != 404:
            raise
        why = (
            "PowerSchool does not offer it; update PowerSchool or ask its support to enable "
            "core PowerQueries"
        )
    else:
        return []
    return [
        _finding(
            FindingCode.POWERQUERY_UNAVAILABLE,
            Severity.ERROR,
            f"School {number} takes Meeting attendance, whose class meetings come from the "
            f"core PowerQuery {MEETING_TEMPLATE_QUERY}, which failed: {why}. Its check-ins "
            "fail until then.",
            school=number,
        )
    ]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo("UTC")


def _timezone_checks(district: District, schools: list[School]) -> list[Finding]:
    findings = []
    for name, number in [(district.timezone, 0)] + [(s.timezone, s.school_number) for s in schools]:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            where = f"School {number}'s" if number else "The district's"
            findings.append(
                _finding(
                    FindingCode.TIMEZONE_INVALID,
                    Severity.ERROR,
                    f"{where} time zone {name!r} is not a known IANA time zone, so the "
                    "school day of a check-in cannot be computed. Use a name such as "
                    "America/Chicago.",
                    school=number,
                )
            )
    return findings


# --- Roster checks --------------------------------------------------------------------------


def _roster_not_configured(district: District, name: str) -> Finding:
    scheduled = district.sync_interval_seconds > 0
    return _finding(
        FindingCode.ROSTER_NOT_CONFIGURED,
        Severity.ERROR if scheduled else Severity.INFO,
        f"The district has no {name} connection"
        + (
            ", yet a roster sync is scheduled: every scheduled sync fails. "
            if scheduled
            else "; its students come only from ImportStudents. "
        )
        + f"Enter the {name} credentials to sync the roster.",
    )


async def _roster_call(
    call: Awaitable[list[RosterSchool]],
    *,
    name: str,
    refused: str,
    fix: str,
    other: FindingCode,
    endpoint: str = "",
) -> tuple[list[Finding], list[RosterSchool] | None]:
    try:
        return [], await call
    except RosterAuthError as exc:
        return [
            _finding(
                FindingCode.ROSTER_CREDENTIALS_REFUSED,
                Severity.ERROR,
                f"{refused} ({exc}). {fix}",
            )
        ], None
    except RosterUnavailable as exc:
        return [
            _finding(
                FindingCode.ROSTER_UNREACHABLE,
                Severity.ERROR,
                f"{name} did not answer ({exc}). Check the URL and that {name} is up; run "
                "the check again later.",
            )
        ], None
    except RosterError as exc:
        if other is FindingCode.ONEROSTER_ENDPOINT_WRONG:
            message = (
                f"{endpoint} does not answer as a OneRoster 1.1 Roster Server ({exc}). Use "
                "the Roster Server's endpoint URL as ClassLink shows it (e.g. "
                "https://district-xx-v2.rosterserver.com); the service adds "
                "/ims/oneroster/v1p1."
            )
        else:
            message = f"{name} answered unexpectedly ({exc}). Run the check again later."
        return [_finding(other, Severity.ERROR, message)], None


def _visible_schools(
    district: District, visible: list[RosterSchool], name: str, where: str
) -> list[Finding]:
    ids = {s.id for s in visible}
    return [
        _finding(
            FindingCode.ROSTER_SCHOOL_NOT_VISIBLE,
            Severity.ERROR,
            f"School {s.school_number}'s roster school ID {s.roster_school_id!r} is not among "
            f"the {len(ids)} schools {where} in {name}; its students will not sync. Share the "
            f"school with the app in {name}, or correct roster_school_id.",
            school=s.school_number,
        )
        for s in district.schools
        if s.writeback_enabled and s.roster_school_id and s.roster_school_id not in ids
    ]
