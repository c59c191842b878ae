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
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
"""One table row: lowercase column name -> ``int`` | ``str`` | ``datetime.date`` | ``None``."""


@dataclass
class PSSchool:
    """A SCHOOLS row. ``school_number`` is what every other table calls ``schoolid``."""

    school_number: int
    name: str
    id: int
    dcid: int


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
class Dataset:
    """Everything a simulated district starts with (attendance starts empty)."""

    schools: list[PSSchool]
    students: list[PSStudent]
    terms: list[PSTerm]
    codes: list[PSAttendanceCode]


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
    students_per_school: int = 20, seed: int = 7, today: datetime.date | None = None
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
    return Dataset(schools=schools, students=students, terms=terms, codes=codes)


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
