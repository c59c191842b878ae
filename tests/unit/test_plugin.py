"""The shipped plugin.xml and its parser: least access, PowerQueries, refusals of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.powerschool import Access, PluginError, load_plugin, parse_plugin
from simulators.powerschool import without_field, without_query

_HEAD = (
    '<plugin xmlns="http://plugin.powerschool.pearson.com" name="t" version="1">'
    '<publisher name="p"><contact email="a@b.c"/></publisher>'
)


def test_shipped_plugin_requests_oauth_read_only_fields_and_writes_only_attendance() -> None:
    grants = load_plugin()
    assert grants.oauth
    assert grants.v1_access == "NONE"  # the service calls no /ws/v1 resource
    assert grants.queries == {
        "com.pearson.core.student.student_dcid_id_map",
        "com.pearson.core.attendance.meeting_interval_attendance_template",
    }
    assert set(grants.tables) == {
        "STUDENTS",
        "TERMS",
        "ATTENDANCE_CODE",
        "ATTENDANCE",
        # Meeting schools' class schedules (the meeting template reads them too).
        "CC",
        "SECTION_MEETING",
        "PERIOD",
        "BELL_SCHEDULE_ITEMS",
    }
    for table in grants.tables:
        full = {f for f, a in grants.fields(table).items() if a is Access.FULL_ACCESS}
        if table != "ATTENDANCE":
            assert not full, table
    assert grants.fields("attendance")["ID"] is Access.VIEW_ONLY
    assert grants.allows("students", "student_number")
    assert not grants.allows("students", "student_number", write=True)
    assert grants.allows("Attendance", "Att_Comment", write=True)
    assert not grants.allows("students", "last_name")  # no names: the service never reads them
    assert grants.fields("schools") == {}


def test_without_field_and_query_leave_the_original_alone() -> None:
    grants = load_plugin()
    fewer = without_query(
        without_field(grants, "STUDENTS", "student_number"),
        "com.pearson.core.student.student_dcid_id_map",
    )
    assert not fewer.allows("STUDENTS", "STUDENT_NUMBER")
    assert fewer.allows("STUDENTS", "DCID")
    assert "com.pearson.core.student.student_dcid_id_map" not in fewer.queries
    assert grants.allows("STUDENTS", "STUDENT_NUMBER")
    assert grants.queries


def test_v1_level_and_a_file_path(tmp_path: Path) -> None:
    path = tmp_path / "plugin.xml"
    path.write_text(
        f'{_HEAD}<oauth accessLevelV1Api="READ"/><access_request>'
        '<field table="Students" field="DCID" access="ViewOnly"/></access_request></plugin>'
    )
    grants = load_plugin(path)
    assert grants.v1_access == "READ"
    assert grants.fields("STUDENTS") == {"DCID": Access.VIEW_ONLY}
    assert grants.queries == frozenset()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<plugin/>", "root must be"),
        (f"{_HEAD}<oauth", "not well-formed"),
        (
            f'{_HEAD}<oauth/><access_request><field table="STUDENTS" field="ID" access="Write"/>'
            "</access_request></plugin>",
            "STUDENTS.ID: access must be ViewOnly or FullAccess",
        ),
        (
            f'{_HEAD}<oauth/><access_request><field table="STUDENTS" field="" access="ViewOnly"/>'
            "</access_request></plugin>",
            "field name of 1 to 30",
        ),
        (
            f'{_HEAD}<oauth/><access_request><field table="S" field="ID" access="ViewOnly"/>'
            '<field table="s" field="id" access="FullAccess"/></access_request></plugin>',
            "S.ID is requested twice",
        ),
        (f'{_HEAD}<oauth accessLevelV1Api="ALL"/></plugin>', "accessLevelV1Api"),
    ],
)
def test_bad_plugin_files_are_refused_with_a_reason(body: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        parse_plugin(body)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="cannot read plugin file"):
        load_plugin(tmp_path / "nope.xml")
