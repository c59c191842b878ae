"""Bad input and unreachable systems get the right status and google.rpc details;
never UNKNOWN, never a traceback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from tests.helpers import World, failure, local, ts


async def fails(call: object) -> object:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return failure(err.value)


class TestInvalidArgument:
    @pytest.mark.parametrize(
        ("key", "field"),
        [
            (pb.StudentKey(), "key"),
            (pb.StudentKey(sis_id="12 OR 1=1"), "key.sis_id"),
            (pb.StudentKey(sis_id=""), "key.sis_id"),
            (pb.StudentKey(student_number="x" * 200), "key.student_number"),
            (pb.StudentKey(powerschool_id=-5), "key.powerschool_id"),
            (pb.StudentKey(roster_id="a\nb"), "key.roster_id"),
        ],
    )
    async def test_malformed_student_keys(
        self, world: World, key: pb.StudentKey, field: str
    ) -> None:
        await world.setup()
        got = await fails(
            world.stub.ResolveStudent(
                pb.ResolveStudentRequest(district_id=world.district_id, key=key)
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in got.violations
        assert world.sim.calls == []

    async def test_malformed_district_id(
        self, stub: writeback_pb2_grpc.WritebackServiceStub
    ) -> None:
        got = await fails(stub.GetDistrict(pb.GetDistrictRequest(district_id="no spaces allowed")))
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert set(got.violations) == {"district_id"}

    async def test_a_time_zone_too_long_for_a_file_name_is_named(
        self, stub: writeback_pb2_grpc.WritebackServiceStub
    ) -> None:
        # ZoneInfo looks the name up as a file: 300 characters raised OSError (found by fuzz).
        got = await fails(
            stub.UpsertDistrict(
                pb.UpsertDistrictRequest(
                    district=pb.District(district_id="tz-long", timezone="\u00e9" * 300)
                )
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "district.timezone" in got.violations

    async def test_politeness_limits_out_of_range_name_the_defaults_in_force(
        self, stub: writeback_pb2_grpc.WritebackServiceStub
    ) -> None:
        got = await fails(
            stub.UpsertDistrict(
                pb.UpsertDistrictRequest(
                    district=pb.District(
                        district_id="limits-bad", max_in_flight=65, max_requests_per_second=1001
                    )
                )
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "(default 6)" in got.violations["district.max_in_flight"]
        assert "(default 50)" in got.violations["district.max_requests_per_second"]

    @pytest.mark.parametrize("token", ["\u00b2", "\u0663", "-1", "9" * 19])
    async def test_a_page_token_that_is_not_ours_is_named(
        self, stub: writeback_pb2_grpc.WritebackServiceStub, token: str
    ) -> None:
        # "²" passes str.isdigit() but not int(): found by the fuzz suite as INTERNAL.
        got = await fails(stub.ListAuditEvents(pb.ListAuditEventsRequest(page_token=token)))
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert set(got.violations) == {"page_token"}

    async def test_submit_lists_every_bad_field(self, world: World) -> None:
        await world.setup()
        got = await fails(
            world.stub.SubmitAttendance(
                pb.SubmitAttendanceRequest(
                    district_id=world.district_id,
                    student=pb.StudentKey(sis_id="abc def"),
                    reason="r" * 500,
                )
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert {"idempotency_key", "student.sis_id", "event", "occurred_at", "reason"} <= set(
            got.violations
        )

    async def test_future_check_in_is_refused(self, world: World) -> None:
        await world.setup()
        got = await fails(world.submit(world.student(), datetime.now(UTC) + timedelta(days=2)))
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "occurred_at" in got.violations

    async def test_bad_district_config(self, world: World) -> None:
        district = world.district_pb(timezone="Mars/Olympus", roster_source=0)
        district.powerschool.base_url = "ftp://ps.example.org?x=1"
        district.schools[1].school_number = 100
        got = await fails(world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district)))
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert {
            "district.timezone",
            "district.roster_source",
            "district.powerschool.base_url",
            "district.schools[1].school_number",
        } <= set(got.violations)

    async def test_duplicate_roster_ids_in_one_import(self, world: World) -> None:
        await world.setup()
        got = await fails(
            world.stub.ImportStudents(
                pb.ImportStudentsRequest(
                    district_id=world.district_id,
                    students=[pb.RosterStudent(roster_id="a"), pb.RosterStudent(roster_id="a")],
                )
            )
        )
        assert "students[1].roster_id" in got.violations

    async def test_record_id_must_be_an_id(self, world: World) -> None:
        got = await fails(
            world.stub.GetAttendance(
                pb.GetAttendanceRequest(district_id=world.district_id, record_id="42")
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "record_id" in got.violations


class TestNotFound:
    async def test_unknown_district(self, stub: writeback_pb2_grpc.WritebackServiceStub) -> None:
        got = await fails(stub.GetDistrict(pb.GetDistrictRequest(district_id="nobody")))
        assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "DISTRICT_NOT_FOUND")

    async def test_unknown_student_on_submit(self, world: World) -> None:
        await world.setup()
        got = await fails(
            world.stub.SubmitAttendance(
                pb.SubmitAttendanceRequest(
                    district_id=world.district_id,
                    idempotency_key="k1",
                    student=pb.StudentKey(student_number="999999"),
                    event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
                    occurred_at=ts(local(world.school_day(), 8, 0)),
                )
            )
        )
        assert (got.code, got.reason) == (grpc.StatusCode.NOT_FOUND, "STUDENT_NOT_FOUND")

    async def test_unknown_record(self, world: World) -> None:
        await world.setup()
        got = await fails(
            world.stub.GetAttendance(
                pb.GetAttendanceRequest(
                    district_id=world.district_id,
                    record_id="00000000-0000-4000-8000-000000000000",
                )
            )
        )
        assert got.code is grpc.StatusCode.NOT_FOUND

    async def test_powerschool_id_unknown_everywhere(self, world: World) -> None:
        await world.setup()
        got = await fails(world.resolve(powerschool_id=987654321))
        assert got.code is grpc.StatusCode.NOT_FOUND


class TestFailedPrecondition:
    async def test_district_without_powerschool(self, world: World) -> None:
        await world.setup(powerschool=pb.PowerSchoolConnection())
        got = await fails(world.resolve(sis_id=str(world.student().dcid)))
        assert (got.code, got.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "POWERSCHOOL_NOT_CONFIGURED",
        )

    async def test_school_not_configured(self, world: World) -> None:
        await world.setup()
        got = await fails(
            world.submit(world.student(), local(world.school_day(), 8, 0), school_number=999)
        )
        assert (got.code, got.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "SCHOOL_NOT_CONFIGURED",
        )

    async def test_roster_school_not_mapped(self, world: World) -> None:
        await world.setup(schools=[])
        got = await fails(world.submit(world.student(), local(world.school_day(), 8, 0)))
        assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SCHOOL_NOT_MAPPED")

    async def test_non_numeric_sis_id(self, world: World) -> None:
        await world.setup()
        await world.stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id=world.district_id,
                students=[pb.RosterStudent(roster_id="guid-1", sis_id="a1b2-c3", active=True)],
            )
        )
        got = await fails(world.resolve(roster_id="guid-1"))
        assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SIS_ID_NOT_NUMERIC")

    async def test_bad_powerschool_credentials(self, world: World) -> None:
        district = world.district_pb()
        district.powerschool.client_secret = "wrong"
        await world.setup(powerschool=district.powerschool)
        got = await fails(world.resolve(sis_id=str(world.student().dcid)))
        assert got.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "credentials" in got.message
        assert "wrong" not in got.message


class TestUnavailable:
    async def test_outage_with_nothing_cached(self, world: World) -> None:
        await world.setup()
        world.sim.faults.outage = True
        got = await fails(world.resolve(sis_id=str(world.student().dcid)))
        assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "POWERSCHOOL_UNAVAILABLE")
        assert got.retry_after is not None
        assert got.retry_after > 0

    async def test_outage_with_the_mapping_cached_still_answers(self, world: World) -> None:
        await world.setup()
        ps = world.student()
        await world.resolve(sis_id=str(ps.dcid))
        world.sim.faults.outage = True
        assert (await world.resolve(sis_id=str(ps.dcid))).powerschool_id == ps.id

    async def test_throttled_retry_after_is_passed_on(self, world: World) -> None:
        await world.setup()
        await world.resolve(sis_id=str(world.student(100, 0).dcid))  # token fetched
        world.sim.faults.queue.append((429, 7.0))
        got = await fails(world.resolve(sis_id=str(world.student(100, 1).dcid)))
        assert got.code is grpc.StatusCode.UNAVAILABLE
        assert got.retry_after == 7.0
