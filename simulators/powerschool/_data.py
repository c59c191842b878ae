"""Dataset model, table schemas and the deterministic demo seed for the PowerSchool simulator.

The simulator keeps each table as a list of rows (``dict`` keyed by lowercase column name,
holding ``int``, ``str``, ``datetime.date`` or ``None``). The ``TableSpec`` objects here say
which columns each table has, their PowerSchool spelling (echoed in error messages) and how
they compare in ``q=`` filters.
"""

from __future__ import annotations

import datetime
import enum
import random
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
"""One table row: lowercase column name -> ``int`` | ``str`` | ``datetime.date`` | ``None``."""


ATT_MODE_DAILY = "ATT_ModeDaily"
"""A school that takes attendance once per day (the default)."""
ATT_MODE_MEETING = "ATT_ModeMeeting"
"""A school that takes attendance per class meeting (period)."""
ATT_MODE_TIME = "ATT_ModeTime"
"""A school that records attendance in minutes (``total_minutes`` on a daily-style row)."""
ATTENDANCE_MODES = frozenset({ATT_MODE_DAILY, ATT_MODE_MEETING, ATT_MODE_TIME})
"""The attendance modes a simulated school can take."""


@dataclass
class PSSchool:
    """A SCHOOLS row. ``school_number`` is what every other table calls ``schoolid``.

    ``attendance_mode`` is how the school takes attendance (one of ``ATTENDANCE_MODES``); it
    is no column PowerSchool serves, only what its attendance endpoints accept."""

    school_number: int
    name: str
    id: int
    dcid: int
    attendance_mode: str = ATT_MODE_DAILY


@dataclass
class PSStudent:
    """A STUDENTS row. ``id`` (STUDENTS.ID) and ``dcid`` (STUDENTS.DCID) are different keys."""

    id: int
    dcid: int
    student_number: str
    first_name: str
    last_name: str
    schoolid: int
    grade_level: int = 9
    enroll_status: int = 0


@dataclass
class PSTerm:
    """A TERMS row. The full-year term of a school year has ``isyearrec == 1`` and id yearid*100."""

    id: int
    dcid: int
    yearid: int
    schoolid: int
    firstday: datetime.date
    lastday: datetime.date
    isyearrec: int = 1
    name: str = ""
    abbreviation: str = ""


@dataclass
class PSAttendanceCode:
    """An ATTENDANCE_CODE row; codes are defined per (schoolid, yearid)."""

    id: int
    dcid: int
    schoolid: int
    yearid: int
    att_code: str
    description: str
    presence_status_cd: str = "Absent"


@dataclass
class PSPeriod:
    """A PERIOD row: one period of a school's day in one school year."""

    id: int
    dcid: int
    schoolid: int
    yearid: int
    period_number: int
    name: str
    abbreviation: str


@dataclass
class PSBellSchedule:
    """A BELL_SCHEDULE row: the school-year's timetable (one per school and year here)."""

    id: int
    dcid: int
    schoolid: int
    yearid: int
    name: str


@dataclass
class PSBellScheduleItem:
    """A BELL_SCHEDULE_ITEMS row: when a period starts and ends, in seconds since local
    midnight."""

    id: int
    dcid: int
    bell_schedule_id: int
    period_id: int
    start_time: int
    end_time: int


@dataclass
class PSSection:
    """A SECTIONS row (a class). It meets in ``period_number`` every day (expression
    ``"<n>(A)"``), which SECTION_MEETING records."""

    id: int
    dcid: int
    schoolid: int
    termid: int
    course_number: str
    section_number: str
    period_number: int
    room: str = ""

    @property
    def expression(self) -> str:
        """PowerSchool's period expression: period number and cycle day."""
        return f"{self.period_number}(A)"


@dataclass
class PSEnrollment:
    """A CC row: one student enrolled in one section from ``dateenrolled`` up to (not
    including) ``dateleft``. ``id`` is CC.ID, the ``ccid`` of a meeting attendance row."""

    id: int
    dcid: int
    studentid: int
    sectionid: int
    schoolid: int
    termid: int
    dateenrolled: datetime.date
    dateleft: datetime.date


@dataclass
class Dataset:
    """Everything a simulated district starts with (attendance starts empty). Schools in
    Meeting mode have a class schedule (periods, bell schedule, sections, CC enrollments);
    ``add_schedule`` builds one."""

    schools: list[PSSchool]
    students: list[PSStudent]
    terms: list[PSTerm]
    codes: list[PSAttendanceCode]
    periods: list[PSPeriod] = field(default_factory=list)
    bell_schedules: list[PSBellSchedule] = field(default_factory=list)
    bell_items: list[PSBellScheduleItem] = field(default_factory=list)
    sections: list[PSSection] = field(default_factory=list)
    enrollments: list[PSEnrollment] = field(default_factory=list)

    def school(self, school_number: int) -> PSSchool | None:
        """The school with ``school_number``, or ``None``."""
        return next((s for s in self.schools if s.school_number == school_number), None)


class ColType(enum.Enum):
    """How a column compares in ``q=`` filters."""

    NUMBER = "number"
    STRING = "string"
    DATE = "date"
    CLOB = "clob"


@dataclass(frozen=True)
class Column:
    """One column: lowercase key, PowerSchool's spelling, and comparison type."""

    key: str
    canonical: str
    type: ColType


@dataclass(frozen=True)
class TableSpec:
    """A readable table: URL key (``students``), display name (``Students``) and columns."""

    key: str
    display: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        """Return the column called ``name`` (case-insensitive), or ``None``."""
        wanted = name.strip().lower()
        for col in self.columns:
            if col.key == wanted:
                return col
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        """All column keys, in schema order."""
        return tuple(c.key for c in self.columns)


def _cols(spec: str) -> tuple[Column, ...]:
    """Build columns from ``"Canonical:type Canonical:type ..."`` (type n, s, d or c)."""
    types_ = {"n": ColType.NUMBER, "s": ColType.STRING, "d": ColType.DATE, "c": ColType.CLOB}
    out: list[Column] = []
    for item in spec.split():
        canonical, kind = item.split(":")
        out.append(Column(canonical.lower(), canonical, types_[kind]))
    return tuple(out)


_TABLE_LIST = (
    TableSpec(
        "students",
        "Students",
        _cols(
            "ID:n DCID:n Student_Number:n First_Name:s Last_Name:s SchoolID:n "
            "Grade_Level:n Enroll_Status:n"
        ),
    ),
    TableSpec(
        "attendance",
        "Attendance",
        _cols(
            "ID:n DCID:n StudentID:n SchoolID:n YearID:n Att_Date:d Att_Mode_Code:s "
            "Attendance_CodeID:n CCID:n PeriodID:n Calendar_DayID:n Att_Interval:n "
            "Att_Comment:c Att_Flags:n Total_Minutes:n ProgramID:n Prog_Crse_Type:s "
            "ADA_Value_Code:n ADA_Value_Time:n ADM_Value:n Lock_Teacher_YN:n "
            "Lock_Reporting_YN:n Parent_AttendanceID:n Transaction_Type:s IP_Address:s "
            "WhoModifiedID:n WhoModifiedType:s"
        ),
    ),
    TableSpec(
        "attendance_code",
        "Attendance_Code",
        _cols(
            "ID:n DCID:n Att_Code:s Description:s Presence_Status_CD:s SchoolID:n YearID:n "
            "SortOrder:n Course_Credit_Points:n Calculate_ADA_YN:n Calculate_ADM_YN:n "
            "Assignment_Filter_YN:n Alternate_Code:s AttendanceCodeInfo_GUID:s Unused1:s"
        ),
    ),
    TableSpec(
        "terms",
        "Terms",
        _cols(
            "ID:n DCID:n YearID:n SchoolID:n FirstDay:d LastDay:d IsYearRec:n Name:s Abbreviation:s"
        ),
    ),
    TableSpec("schools", "Schools", _cols("ID:n DCID:n School_Number:n Name:s")),
    TableSpec(
        "period",
        "Period",
        _cols(
            "ID:n DCID:n SchoolID:n Year_ID:n Period_Number:n Name:s Abbreviation:s Sort_Order:n"
        ),
    ),
    TableSpec("bell_schedule", "Bell_Schedule", _cols("ID:n DCID:n SchoolID:n Year_ID:n Name:s")),
    TableSpec(
        "bell_schedule_items",
        "Bell_Schedule_Items",
        _cols("ID:n DCID:n Bell_Schedule_ID:n Period_ID:n Start_Time:n End_Time:n"),
    ),
    TableSpec(
        "sections",
        "Sections",
        _cols(
            "ID:n DCID:n SchoolID:n TermID:n Course_Number:s Section_Number:s Expression:s Room:s"
        ),
    ),
    TableSpec(
        "section_meeting",
        "Section_Meeting",
        _cols(
            "ID:n DCID:n SectionID:n SchoolID:n Year_ID:n Period_Number:n Cycle_Day_Letter:s "
            "Meeting:s"
        ),
    ),
    TableSpec(
        "cc",
        "CC",
        _cols(
            "ID:n DCID:n StudentID:n SectionID:n SchoolID:n TermID:n Course_Number:s "
            "Section_Number:s Expression:s DateEnrolled:d DateLeft:d"
        ),
    ),
)

TABLES: Mapping[str, TableSpec] = types.MappingProxyType({t.key: t for t in _TABLE_LIST})
"""Tables the simulated plugin can read through ``/ws/schema/table/{key}``."""

FORBIDDEN_TABLES: frozenset[str] = frozenset({"teachers", "users", "schoolstaff"})
"""Core tables that answer 405 on ``/ws/schema/table`` (observed for TEACHERS)."""

ATTENDANCE_DEFAULTS: Mapping[str, Any] = types.MappingProxyType(
    {
        "ccid": 0,
        "periodid": 0,
        "calendar_dayid": 0,
        "att_interval": 0,
        "att_comment": None,
        "att_flags": 0,
        "total_minutes": 0,
        "programid": 0,
        "prog_crse_type": None,
        "ada_value_code": 0,
        "ada_value_time": 0,
        "adm_value": 1,
        "lock_teacher_yn": 0,
        "lock_reporting_yn": 0,
        "parent_attendanceid": 0,
        "transaction_type": None,
        "ip_address": None,
        "whomodifiedid": 0,
        "whomodifiedtype": None,
    }
)
"""Values an ATTENDANCE row gets for columns the writer did not send."""


def render_value(value: object) -> str:
    """Render a stored value the way the schema API does: always a string, ``None`` -> ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def school_row(s: PSSchool) -> Row:
    """SCHOOLS row for ``s``."""
    return {"id": s.id, "dcid": s.dcid, "school_number": s.school_number, "name": s.name}


def student_row(s: PSStudent) -> Row:
    """STUDENTS row for ``s`` (``student_number`` stored as an int when it is numeric)."""
    number: int | str = int(s.student_number) if s.student_number.isdigit() else s.student_number
    return {
        "id": s.id,
        "dcid": s.dcid,
        "student_number": number,
        "first_name": s.first_name,
        "last_name": s.last_name,
        "schoolid": s.schoolid,
        "grade_level": s.grade_level,
        "enroll_status": s.enroll_status,
    }


def term_row(t: PSTerm) -> Row:
    """TERMS row for ``t``."""
    return {
        "id": t.id,
        "dcid": t.dcid,
        "yearid": t.yearid,
        "schoolid": t.schoolid,
        "firstday": t.firstday,
        "lastday": t.lastday,
        "isyearrec": t.isyearrec,
        "name": t.name or None,
        "abbreviation": t.abbreviation or None,
    }


def code_row(c: PSAttendanceCode, sortorder: int = 0) -> Row:
    """ATTENDANCE_CODE row for ``c``, with plausible values for the other recorded columns."""
    present = c.presence_status_cd == "Present"
    return {
        "id": c.id,
        "dcid": c.dcid,
        "att_code": c.att_code or None,
        "description": c.description,
        "presence_status_cd": c.presence_status_cd,
        "schoolid": c.schoolid,
        "yearid": c.yearid,
        "sortorder": sortorder,
        "course_credit_points": 1 if present else 0,
        "calculate_ada_yn": 1,
        "calculate_adm_yn": 1,
        "assignment_filter_yn": 0,
        "alternate_code": None,
        "attendancecodeinfo_guid": None,
        "unused1": None,
    }


def period_row(p: PSPeriod) -> Row:
    """PERIOD row for ``p``."""
    return {
        "id": p.id,
        "dcid": p.dcid,
        "schoolid": p.schoolid,
        "year_id": p.yearid,
        "period_number": p.period_number,
        "name": p.name,
        "abbreviation": p.abbreviation,
        "sort_order": p.period_number,
    }


def bell_schedule_row(b: PSBellSchedule) -> Row:
    """BELL_SCHEDULE row for ``b``."""
    return {"id": b.id, "dcid": b.dcid, "schoolid": b.schoolid, "year_id": b.yearid, "name": b.name}


def bell_item_row(i: PSBellScheduleItem) -> Row:
    """BELL_SCHEDULE_ITEMS row for ``i``."""
    return {
        "id": i.id,
        "dcid": i.dcid,
        "bell_schedule_id": i.bell_schedule_id,
        "period_id": i.period_id,
        "start_time": i.start_time,
        "end_time": i.end_time,
    }


def section_row(s: PSSection) -> Row:
    """SECTIONS row for ``s``."""
    return {
        "id": s.id,
        "dcid": s.dcid,
        "schoolid": s.schoolid,
        "termid": s.termid,
        "course_number": s.course_number,
        "section_number": s.section_number,
        "expression": s.expression,
        "room": s.room or None,
    }


def section_meeting_row(s: PSSection) -> Row:
    """SECTION_MEETING row saying ``s`` meets in its period on cycle day A."""
    return {
        "id": s.id,
        "dcid": s.dcid,
        "sectionid": s.id,
        "schoolid": s.schoolid,
        "year_id": s.termid // 100,
        "period_number": s.period_number,
        "cycle_day_letter": "A",
        "meeting": s.expression,
    }


def cc_row(e: PSEnrollment, section: PSSection) -> Row:
    """CC row for ``e`` (course, section number and expression copied from ``section``)."""
    return {
        "id": e.id,
        "dcid": e.dcid,
        "studentid": e.studentid,
        "sectionid": e.sectionid,
        "schoolid": e.schoolid,
        "termid": e.termid,
        "course_number": section.course_number,
        "section_number": section.section_number,
        "expression": section.expression,
        "dateenrolled": e.dateenrolled,
        "dateleft": e.dateleft,
    }


# ---------------------------------------------------------------------------------------------
# Class schedules (Meeting-mode schools)
# ---------------------------------------------------------------------------------------------


def _hm(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


# (course number, start, end) per period, school-local. Lunch sits between periods 4 and 5.
BELL_TIMES: tuple[tuple[str, int, int], ...] = tuple(
    (course, _hm(start), _hm(end))
    for course, start, end in (
        ("ENG", "08:00", "08:50"),
        ("MATH", "09:00", "09:50"),
        ("SCI", "10:00", "10:50"),
        ("HIST", "11:00", "11:50"),
        ("ART", "12:30", "13:20"),
        ("PE", "13:30", "14:20"),
    )
)
"""The demo bell schedule: six periods, ``(course number, start, end)`` with start and end in
seconds since the school's local midnight (P1 08:00-08:50 ... P6 13:30-14:20)."""
SECTIONS_PER_PERIOD = 2
"""Sections of each period's course; a school's k-th student takes section ``k % 2 + 1``."""
_FIRST_CC_ID = 500001
_FIRST_CC_DCID = 600001


def add_schedule(dataset: Dataset, school_number: int) -> None:
    """Give ``school_number`` a class schedule in every school year of its year-long terms,
    unless it has one: six PERIOD rows, a BELL_SCHEDULE with ``BELL_TIMES``, two sections
    per period (full-year term), and a CC row per student and period for the whole year
    (every student takes one section per period). Ids are derived from the school number,
    year and period, CC ids count up from 500001 (DCID from 600001) in dataset order, so the
    same dataset always gets the same schedule."""
    if any(p.schoolid == school_number for p in dataset.periods):
        return
    block = school_number // 100
    years = [t for t in dataset.terms if t.schoolid == school_number and t.isyearrec == 1]
    for term in sorted(years, key=lambda t: t.yearid):
        yearid = term.yearid
        bell_id = yearid * 1000 + block * 10
        dataset.bell_schedules.append(
            PSBellSchedule(bell_id, 50000 + bell_id, school_number, yearid, "Regular Day")
        )
        sections_by_period: dict[int, list[PSSection]] = {}
        for n, (course, start, end) in enumerate(BELL_TIMES, start=1):
            period_id = yearid * 1000 + block * 10 + n
            dataset.periods.append(
                PSPeriod(
                    period_id, 20000 + period_id, school_number, yearid, n, f"Period {n}", f"P{n}"
                )
            )
            dataset.bell_items.append(
                PSBellScheduleItem(period_id, 30000 + period_id, bell_id, period_id, start, end)
            )
            for k in range(1, SECTIONS_PER_PERIOD + 1):
                section_id = yearid * 10000 + block * 100 + n * 10 + k
                section = PSSection(
                    section_id,
                    100000 + section_id,
                    school_number,
                    term.id,
                    f"{course}{block}{n:02d}",
                    str(k),
                    n,
                    room=f"{block}{n}{k}",
                )
                dataset.sections.append(section)
                sections_by_period.setdefault(n, []).append(section)
        students = [s for s in dataset.students if s.schoolid == school_number]
        for index, student in enumerate(students):
            enroll_student(dataset, student, sections_by_period, term, index)


def enroll_student(
    dataset: Dataset,
    student: PSStudent,
    sections_by_period: Mapping[int, list[PSSection]],
    term: PSTerm,
    index: int,
) -> None:
    """Enrol ``student`` for ``term`` in section ``index % count`` of every period."""
    for _, sections in sorted(sections_by_period.items()):
        section = sections[index % len(sections)]
        cc_id = _FIRST_CC_ID + len(dataset.enrollments)
        dataset.enrollments.append(
            PSEnrollment(
                id=cc_id,
                dcid=_FIRST_CC_DCID + len(dataset.enrollments),
                studentid=student.id,
                sectionid=section.id,
                schoolid=student.schoolid,
                termid=term.id,
                dateenrolled=term.firstday,
                dateleft=term.lastday + datetime.timedelta(days=1),
            )
        )


# ---------------------------------------------------------------------------------------------
# Demo seed
# ---------------------------------------------------------------------------------------------

_FIRST_NAMES = (
    "Ava", "Liam", "Maya", "Noah", "Zoe", "Ethan", "Lena", "Omar", "Iris", "Caleb",
    "Nora", "Mateo", "Ruby", "Jonah", "Priya", "Felix", "Hana", "Diego", "Leah", "Theo",
)  # fmt: skip
_LAST_NAMES = (
    "Garcia", "Nguyen", "Okafor", "Smith", "Kowalski", "Haddad", "Johnson", "Lindqvist",
    "Patel", "Moreno", "Brooks", "Tanaka", "O'Brien", "Fischer", "Reyes", "Adeyemi",
)  # fmt: skip

# (att_code, description, presence_status_cd, id offset within a school-year block)
_CODE_DEFS = (
    ("", "Present", "Present", 10),
    ("A", "Absent", "Absent", 11),
    ("T", "Tardy", "Present", 17),
    ("TE", "Tardy Excused", "Present", 18),
    ("ED", "Early Dismissal", "Present", 21),
    ("EDE", "Early Dismissal Excused", "Present", 22),
    ("LE", "Late and left early", "Present", 25),
)

_Years = list[tuple[int, datetime.date, datetime.date, datetime.date]]


def school_years(today: datetime.date) -> _Years:
    """The previous and current school year around ``today`` (a year starts in July), as
    ``(yearid, first day, last day, semester-2 first day)``; yearid = start year - 1990."""
    start = today.year if today.month >= 7 else today.year - 1
    return [
        (
            year - 1990,
            datetime.date(year, 8, 12),
            datetime.date(year + 1, 6, 4),
            datetime.date(year + 1, 1, 11),
        )
        for year in (start - 1, start)
    ]


def _terms_for(school: PSSchool, school_index: int, years: _Years) -> list[PSTerm]:
    terms: list[PSTerm] = []
    for yearid, first, last, s2_first in years:
        dcid_base = 8000 + school_index * 100 + (yearid - 35) * 10
        label = f"{1990 + yearid}-{1991 + yearid}"
        short = f"{(1990 + yearid) % 100:02d}-{(1991 + yearid) % 100:02d}"
        s1_last = s2_first - datetime.timedelta(days=3)
        for offset, firstday, lastday, isyearrec, name, abbreviation in (
            (0, first, last, 1, label, short),
            (1, first, s1_last, 0, "Semester 1", "S1"),
            (2, s2_first, last, 0, "Semester 2", "S2"),
        ):
            terms.append(
                PSTerm(
                    id=yearid * 100 + offset,
                    dcid=dcid_base + offset + 1,
                    yearid=yearid,
                    schoolid=school.school_number,
                    firstday=firstday,
                    lastday=lastday,
                    isyearrec=isyearrec,
                    name=name,
                    abbreviation=abbreviation,
                )
            )
    return terms


def _codes_for(school: PSSchool, years: _Years) -> list[PSAttendanceCode]:
    codes: list[PSAttendanceCode] = []
    for yearid, *_ in years:
        base = (school.school_number // 100) * 1000 + (yearid - 35) * 600
        for att_code, description, presence, offset in _CODE_DEFS:
            code_id = base + offset
            codes.append(
                PSAttendanceCode(
                    id=code_id,
                    dcid=40000 + code_id,
                    schoolid=school.school_number,
                    yearid=yearid,
                    att_code=att_code,
                    description=description,
                    presence_status_cd=presence,
                )
            )
    return codes


def demo_dataset(
    students_per_school: int = 20,
    seed: int = 7,
    today: datetime.date | None = None,
    attendance_modes: Mapping[int, str] | None = None,
) -> Dataset:
    """Return a deterministic two-school district.

    * Schools 100 "Lincoln High School" (SCHOOLS.ID 4, DCID 14) and 200 "Washington Middle
      School" (ID 7, DCID 17).
    * Per school: full-year terms for the previous and current school year around ``today``
      (default: the real date; e.g. 3500 = 2025-08-12..2026-06-04 and 3600 = 2026-08-12..
      2027-06-04 in late 2026), plus two semester terms per year (``isyearrec`` 0).
    * Per school and year: codes "", A, T, TE, ED, EDE, LE. Code id is
      ``school_number // 100 * 1000 + (yearid - 35) * 600 + offset`` (school 100 / year 35 T is
      1017, school 200 / year 36 T is 2617), so no id repeats across school-years.
    * Students: STUDENTS.ID sampled from 3000.., DCID from a disjoint range starting at 70000
      (never equal to any ID, not sequential); 6-digit student numbers from 240001.
    * ``attendance_modes`` (school number -> ``ATT_MODE_*``; default: every school Daily): a
      Meeting school gets a class schedule (``add_schedule``).
    """
    if students_per_school < 0:
        raise ValueError("students_per_school must be >= 0")
    rng = random.Random(seed)
    schools = [
        PSSchool(100, "Lincoln High School", 4, 14),
        PSSchool(200, "Washington Middle School", 7, 17),
    ]
    total = students_per_school * len(schools)
    id_hi = 3000 + max(1000, total * 4)
    dcid_lo = max(70000, id_hi + 1000)
    ids = rng.sample(range(3000, id_hi), total)
    dcids = rng.sample(range(dcid_lo, dcid_lo + max(10000, total * 10)), total)
    students: list[PSStudent] = []
    for i in range(total):
        school = schools[i % len(schools)]
        grades = (9, 10, 11, 12) if school.school_number == 100 else (6, 7, 8)
        students.append(
            PSStudent(
                id=ids[i],
                dcid=dcids[i],
                student_number=str(240001 + i),
                first_name=rng.choice(_FIRST_NAMES),
                last_name=rng.choice(_LAST_NAMES),
                schoolid=school.school_number,
                grade_level=grades[i // len(schools) % len(grades)],
            )
        )
    years = school_years(today or datetime.date.today())
    terms = [t for i, s in enumerate(schools) for t in _terms_for(s, i, years)]
    codes = [c for s in schools for c in _codes_for(s, years)]
    dataset = Dataset(schools=schools, students=students, terms=terms, codes=codes)
    for number, mode in sorted((attendance_modes or {}).items()):
        set_attendance_mode(dataset, number, mode)
    return dataset


def set_attendance_mode(dataset: Dataset, school_number: int, mode: str) -> None:
    """Switch a school of ``dataset`` to ``mode``; a Meeting school gets a class schedule.
    Raises ``ValueError`` for an unknown school or mode."""
    if mode not in ATTENDANCE_MODES:
        raise ValueError(f"attendance mode must be one of {sorted(ATTENDANCE_MODES)}, not {mode!r}")
    school = dataset.school(school_number)
    if school is None:
        raise ValueError(f"no school {school_number}")
    school.attendance_mode = mode
    if mode == ATT_MODE_MEETING:
        add_schedule(dataset, school_number)


def recent_school_day(
    dataset: Dataset, *, back: int = 1, today: datetime.date | None = None
) -> datetime.date:
    """Return the most recent date at least ``back`` days before ``today`` (default: the real
    date) that lies inside a year-long term (``isyearrec == 1``) of ``dataset``.

    Looks at the 400 days ending ``back`` days before ``today``; raises ``ValueError`` when
    none of them is inside such a term.
    """
    years = [(t.firstday, t.lastday) for t in dataset.terms if t.isyearrec == 1]
    start = (today or datetime.date.today()) - datetime.timedelta(days=back)
    for offset in range(400):
        day = start - datetime.timedelta(days=offset)
        if any(first <= day <= last for first, last in years):
            return day
    raise ValueError(f"no day of a year-long term in the 400 days up to {start}")
