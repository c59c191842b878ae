"""The shipped plugin against the service: everything a normal day does is granted, and a
missing grant fails the affected records at once, naming the table and field."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from writeback.v1 import writeback_pb2 as pb

from service.powerschool import PluginGrants, parse_plugin, plugin_path
from simulators.clever import CleverSimulator
from simulators.powerschool import without_field
from simulators.roster import school_roster_id
from tests.helpers import World, local

DCID_MAP = "/ws/schema/query/com.pearson.core.student.student_dcid_id_map"


async def test_a_normal_day_touches_only_what_the_plugin_requests(
    world: World, clever: CleverSimulator
) -> None:
    """Sync with prefetch, resolve, late + early on one day, a cancel that deletes and
    DiagnoseMapping (lookups by DCID and by STUDENTS.ID), against the simulator enforcing the
    shipped plugin: no call is refused. A grant the service needs but the plugin lacks fails
    this test."""
    await world.stub.UpsertDistrict(
        pb.UpsertDistrictRequest(
            district=world.district_pb(
                schools=[
                    pb.School(
                        school_number=n,
                        roster_school_id=school_roster_id("clever", n),
                        writeback_enabled=True,
                        late_check_in_code="T",
                        early_check_out_code="ED",
                    )
                    for n in (100, 200)
                ],
                clever=pb.CleverConnection(
                    base_url=clever.base_url,
                    client_id=clever.client_id,
                    client_secret=clever.client_secret,
                    clever_district_id=clever.district_id,
                ),
            )
        )
    )
    synced = await world.stub.SyncRoster(pb.SyncRosterRequest(district_id=world.district_id))
    assert synced.prefetched == len(world.students)

    day = world.school_day()
    one, two = world.student(100, 0), world.student(200, 0)
    assert (await world.resolve(sis_id=str(one.dcid))).powerschool_id == one.id
    late = (await world.submit(one, local(day, 8, 40))).record
    early = (
        await world.submit(one, local(day, 13, 5), event=pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT)
    ).record
    other = (await world.submit(two, local(day, 9, 0))).record
    assert {r.state for r in (late, early, other)} == {pb.ATTENDANCE_STATE_WRITTEN}
    cancelled = (
        await world.stub.CancelAttendance(
            pb.CancelAttendanceRequest(
                district_id=world.district_id,
                record_id=other.record_id,
                wait_for_writeback=True,
            ),
            timeout=10,
        )
    ).record
    assert cancelled.state == pb.ATTENDANCE_STATE_CANCELLED
    # DiagnoseMapping looks each sampled student up by DCID and by STUDENTS.ID.
    await world.stub.DiagnoseMapping(
        pb.DiagnoseMappingRequest(district_id=world.district_id, sample_size=50)
    )

    refused = [(c.method, c.path, c.status, c.query) for c in world.sim.calls if c.status == 403]
    assert refused == []
    touched = {
        (c.method, "/ws/schema/table/attendance/{dcid}" if c.method == "DELETE" else c.path)
        for c in world.sim.calls
    }
    assert {
        ("POST", DCID_MAP),
        ("GET", "/ws/schema/table/students"),
        ("GET", "/ws/schema/table/terms"),
        ("GET", "/ws/schema/table/attendance_code"),
        ("GET", "/ws/schema/table/attendance"),
        ("POST", "/ws/attendance/daily_time"),
        ("DELETE", "/ws/schema/table/attendance/{dcid}"),
    } <= touched


def _downgraded(table: str, field: str) -> Callable[[PluginGrants], PluginGrants]:
    def change(_: PluginGrants) -> PluginGrants:
        text = plugin_path().read_text()
        full = f'table="{table}" field="{field}" access="FullAccess"'
        assert full in text
        return parse_plugin(text.replace(full, full.replace("FullAccess", "ViewOnly")))

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda g: without_field(g, "ATTENDANCE", "ATT_COMMENT"), "Attendance.Att_Comment"),
        (_downgraded("ATTENDANCE", "ATT_COMMENT"), "Attendance.Att_Comment"),
        (lambda g: without_field(g, "STUDENTS", "STUDENT_NUMBER"), "Students.Student_Number"),
        (lambda g: without_field(g, "TERMS", "FIRSTDAY"), "Terms.FirstDay"),
    ],
    ids=["no-att-comment", "att-comment-view-only", "no-student-number", "no-terms-firstday"],
)
async def test_a_missing_grant_fails_the_record_once_naming_table_and_field(
    world: World, change: Callable[[PluginGrants], PluginGrants], named: str
) -> None:
    await world.setup()
    world.sim.plugin = change(world.sim.plugin)
    record = (await world.submit(world.student(), local(world.school_day(), 8, 30))).record
    assert record.state == pb.ATTENDANCE_STATE_FAILED
    assert record.attempts == 1
    assert named in record.last_error
    assert "HTTP 403" in record.last_error
    assert "install and enable the current writeback plugin" in record.last_error
    assert world.sim.attendance_rows() == []
    assert sum(1 for c in world.sim.calls if c.status == 403) == 1  # no retry loop
