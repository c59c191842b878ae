"""PowerSchool adapter: OAuth, student ID lookups, terms, attendance codes and daily writes."""

from service.powerschool._client import (
    AttendanceCode,
    DailyAttendance,
    PowerSchoolClient,
    PSStudentIds,
    WriteResult,
    YearTerm,
)
from service.powerschool._errors import (
    PowerSchoolAuthError,
    PowerSchoolError,
    PowerSchoolForbidden,
    PowerSchoolRejected,
    PowerSchoolUnavailable,
)
from service.powerschool._pool import PowerSchoolPool

__all__ = [
    "AttendanceCode",
    "DailyAttendance",
    "PSStudentIds",
    "PowerSchoolAuthError",
    "PowerSchoolClient",
    "PowerSchoolError",
    "PowerSchoolForbidden",
    "PowerSchoolPool",
    "PowerSchoolRejected",
    "PowerSchoolUnavailable",
    "WriteResult",
    "YearTerm",
]
