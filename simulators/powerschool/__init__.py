"""A simulated PowerSchool SIS server (one district) for tests, demos and load tests.

Speaks PowerSchool's wire format for what the writeback service uses: OAuth client
credentials, the schema table API (``/ws/schema/table/...``), the core PowerQueries
``student_dcid_id_map``, ``daily_attendance_template`` and ``meeting_interval_attendance_template``,
``/ws/v1/student``, ``/ws/v1/metadata``, ``POST /ws/attendance/daily_time`` (Daily and Time) and
``POST /ws/attendance/meeting_interval`` (Meeting schools, with class schedules), with
switchable faults. Run it alone with ``python -m simulators.powerschool``.
"""

from ._app import Call, Faults, Meeting, PowerSchoolSimulator
from ._data import (
    ATT_MODE_DAILY,
    ATT_MODE_MEETING,
    ATT_MODE_TIME,
    BELL_TIMES,
    Dataset,
    PSAttendanceCode,
    PSSchool,
    PSStudent,
    PSTerm,
    demo_dataset,
    recent_school_day,
)
from ._grants import without_field, without_query

__all__ = [
    "ATT_MODE_DAILY",
    "ATT_MODE_MEETING",
    "ATT_MODE_TIME",
    "BELL_TIMES",
    "Call",
    "Dataset",
    "Faults",
    "Meeting",
    "PSAttendanceCode",
    "PSSchool",
    "PSStudent",
    "PSTerm",
    "PowerSchoolSimulator",
    "demo_dataset",
    "recent_school_day",
    "without_field",
    "without_query",
]
