"""PowerSchool adapter: OAuth, student ID lookups, terms, attendance codes and daily writes;
and the plugin (``plugin/plugin.xml``) that grants the service its access."""

from service.powerschool._client import (
    MEETING_TEMPLATE_QUERY,
    PAGE_SIZE,
    AttendanceCode,
    ClassMeeting,
    DailyAttendance,
    MeetingAttendance,
    MeetingWrite,
    PowerSchoolClient,
    PSStudentIds,
    WriteResult,
    YearTerm,
)
from service.powerschool._errors import (
    PowerSchoolAuthError,
    PowerSchoolBlocked,
    PowerSchoolError,
    PowerSchoolForbidden,
    PowerSchoolRejected,
    PowerSchoolUnavailable,
)
from service.powerschool._plugin import (
    Access,
    PluginError,
    PluginGrants,
    load_plugin,
    parse_plugin,
    plugin_path,
)
from service.powerschool._pool import PowerSchoolPool

__all__ = [
    "MEETING_TEMPLATE_QUERY",
    "PAGE_SIZE",
    "Access",
    "AttendanceCode",
    "ClassMeeting",
    "DailyAttendance",
    "MeetingAttendance",
    "MeetingWrite",
    "PSStudentIds",
    "PluginError",
    "PluginGrants",
    "PowerSchoolAuthError",
    "PowerSchoolBlocked",
    "PowerSchoolClient",
    "PowerSchoolError",
    "PowerSchoolForbidden",
    "PowerSchoolPool",
    "PowerSchoolRejected",
    "PowerSchoolUnavailable",
    "WriteResult",
    "YearTerm",
    "load_plugin",
    "parse_plugin",
    "plugin_path",
]
