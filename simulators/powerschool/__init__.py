"""A simulated PowerSchool SIS server (one district) for tests, demos and load tests.

Speaks PowerSchool's wire format for what the writeback service uses: OAuth client
credentials, the schema table API (``/ws/schema/table/...``), the core PowerQueries
``student_dcid_id_map`` and ``daily_attendance_template``, ``/ws/v1/student``, ``/ws/v1/metadata``
and ``POST /ws/attendance/daily_time``, with switchable faults. Run it alone with
``python -m simulators.powerschool``.
"""

from ._app import Call, Faults, PowerSchoolSimulator
from ._data import (
    Dataset,
    PSAttendanceCode,
    PSSchool,
    PSStudent,
    PSTerm,
    demo_dataset,
    recent_school_day,
)

__all__ = [
    "Call",
    "Dataset",
    "Faults",
    "PSAttendanceCode",
    "PSSchool",
    "PSStudent",
    "PSTerm",
    "PowerSchoolSimulator",
    "demo_dataset",
    "recent_school_day",
]
