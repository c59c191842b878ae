"""District configuration, secret handling, roster import and logs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from service import Settings
from service.models import (
    AttendanceEvent,
    AttendanceRecord,
    AttendanceState,
    ClassLinkConnection,
    CleverConnection,
    District,
    PowerSchoolConnection,
    RosterStudent,
)
from tests.conftest import LogCapture
from tests.helpers import World, failure, local, roster_id_of


class TestDistricts:
    async def test_secret_is_write_only(self, world: World) -> None:
        """GetDistrict says a secret is stored but never returns it; an update without a
        secret keeps the stored one working."""
        await world.setup()
        got = (
            await world.stub.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id))
        ).district
        assert got.powerschool.client_secret == ""
        assert got.powerschool.has_client_secret
        assert world.sim.client_secret not in str(got)

        without_secret = world.district_pb()
        without_secret.powerschool.client_secret = ""
        saved = await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=without_secret))
        assert saved.district.powerschool.has_client_secret
        ps = world.student()
        assert (await world.resolve(sis_id=str(ps.dcid))).powerschool_id == ps.id

    async def test_round_trip(self, world: World) -> None:
        await world.setup(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        got = (
            await world.stub.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id))
        ).district
        sent = world.district_pb(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        for school in sent.schools:  # unspecified means daily, and comes back said
            school.attendance_mode = pb.ATTENDANCE_MODE_DAILY
        assert got.visible_student_id == pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER
        assert list(got.schools) == list(sent.schools)
        assert got.timezone == sent.timezone


class TestListDistricts:
    async def test_pages_cover_every_district_once_without_secrets(self, world: World) -> None:
        """Walking ListDistricts page by page lists each district once, by district_id, and
        shows a stored secret only as has_client_secret."""
        created = [f"{world.district_id}-{n}" for n in range(3)]
        for district_id in created:
            await world.stub.UpsertDistrict(
                pb.UpsertDistrictRequest(district=world.district_pb(district_id=district_id))
            )
        seen: list[pb.District] = []
        token = ""
        while True:
            page = await world.stub.ListDistricts(
                pb.ListDistrictsRequest(page_size=2, page_token=token)
            )
            assert len(page.districts) <= 2
            seen.extend(page.districts)
            token = page.next_page_token
            if not token:
                break
        ids = [d.district_id for d in seen]
        assert ids == sorted(set(ids))
        ours = [d for d in seen if d.district_id in created]
        assert [d.district_id for d in ours] == created
        assert all(d.powerschool.has_client_secret for d in ours)
        assert all(len(d.schools) == 2 for d in ours)
        assert world.sim.client_secret not in str(seen)

    async def test_bad_page_size_and_token_are_named(self, world: World) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.stub.ListDistricts(pb.ListDistrictsRequest(page_size=501))
        assert failure(caught.value).violations.keys() == {"page_size"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.stub.ListDistricts(pb.ListDistrictsRequest(page_token="!!"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure(caught.value).violations.keys() == {"page_token"}


class TestImport:
    async def test_counts_created_updated_unchanged(self, world: World) -> None:
        await world.setup()
        first, second = world.student(100, 0), world.student(100, 1)
        response = await world.stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id=world.district_id,
                students=[
                    pb.RosterStudent(
                        roster_id=roster_id_of(first),
                        sis_id=str(first.dcid),
                        student_number="NEW-NUMBER",
                        first_name=first.first_name,
                        last_name=first.last_name,
                        roster_school_id="sch-100",
                        grade=str(first.grade_level),
                        active=True,
                    ),
                    pb.RosterStudent(
                        roster_id=roster_id_of(second),
                        sis_id=str(second.dcid),
                        student_number=second.student_number,
                        first_name=second.first_name,
                        last_name=second.last_name,
                        roster_school_id="sch-100",
                        grade=str(second.grade_level),
                        active=True,
                    ),
                    pb.RosterStudent(roster_id="brand-new", sis_id="1", active=True),
                ],
            )
        )
        assert (response.created, response.updated, response.unchanged) == (1, 1, 1)
        assert (await world.resolve(student_number="NEW-NUMBER")).roster_id == roster_id_of(first)

    async def test_deactivations_are_counted(self, world: World) -> None:
        """Switching a student off, or handing their DCID to a new record, is reported."""
        await world.setup()
        a, b = world.student(100, 0), world.student(100, 1)
        response = await world.stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id=world.district_id,
                students=[
                    pb.RosterStudent(roster_id=roster_id_of(a), sis_id=str(a.dcid), active=False),
                    pb.RosterStudent(roster_id="re-provisioned", sis_id=str(b.dcid), active=True),
                ],
            )
        )
        assert (response.created, response.updated, response.deactivated) == (1, 0, 2)
        assert (await world.resolve(sis_id=str(b.dcid))).roster_id == "re-provisioned"

    async def test_changed_sis_id_forgets_the_old_mapping(self, world: World) -> None:
        """A roster fix (Student ID remapped from STUDENTS.ID to DCID) must not keep a
        STUDENTS.ID looked up for the old value."""
        await world.setup(sis_field="id", id_mode=pb.ID_MODE_STUDENTS_ID)
        ps = world.student()
        assert (await world.resolve(roster_id=roster_id_of(ps))).powerschool_id == ps.id
        await world.setup(sis_field="dcid", id_mode=pb.ID_MODE_DCID)
        student = await world.resolve(roster_id=roster_id_of(ps))
        assert (student.sis_id, student.powerschool_id) == (str(ps.dcid), ps.id)
        assert world.sim.count("/ws/schema/table/students") == 2


class TestLogs:
    async def test_one_line_per_rpc_and_no_secrets_or_names(
        self, world: World, logs: LogCapture
    ) -> None:
        mark = logs.tell()
        await world.setup()
        ps = world.student()
        await world.submit(ps, local(world.school_day(), 8, 15))
        lines = [json.loads(line) for line in logs.since(mark).splitlines() if line.strip()]
        rpcs = [entry for entry in lines if entry["event"] == "rpc"]
        assert [entry["rpc"].rsplit("/", 1)[1] for entry in rpcs] == [
            "UpsertDistrict",
            "ImportStudents",
            "SubmitAttendance",
        ]
        assert all(entry["grpc_code"] == "OK" and "duration_ms" in entry for entry in rpcs)
        assert all(entry["district_id"] == world.district_id for entry in rpcs)
        calls = [entry for entry in lines if entry["event"] == "powerschool_call"]
        # Context reaches adapter lines: the district, and the RPC's request id or the
        # worker's record id. (Other tests' deliveries may still be running: their lines
        # carry their own districts.)
        assert all(c.get("district_id") for c in calls)
        assert all(c.get("request_id") or c.get("record_id") for c in calls)
        ours = [c for c in calls if c["district_id"] == world.district_id]
        assert {c["endpoint"] for c in ours} >= {
            "/oauth/access_token",
            "/ws/schema/table/students",
            "/ws/attendance/daily_time",
        }
        text = logs.since(mark)
        for secret in (world.sim.client_secret, ps.first_name, ps.last_name, "Bearer"):
            assert secret not in text


class TestReprs:
    def test_reprs_hide_secrets_names_and_free_text(self) -> None:
        """Objects that end up in tracebacks and debug logs never show secrets or PII."""
        district = District(
            "d1",
            powerschool=PowerSchoolConnection("https://ps", "id", "ps-SECRET"),
            clever=CleverConnection("", "id", "clever-SECRET", "TOKEN-SECRET"),
            classlink=ClassLinkConnection("https://cl", "id", "cl-SECRET"),
        )
        record = AttendanceRecord(
            record_id="r",
            district_id="d1",
            idempotency_key="k",
            request_hash="h",
            roster_id="s",
            event=AttendanceEvent.LATE_CHECK_IN,
            occurred_at=datetime.now(UTC),
            school_number=1,
            att_date=date.today(),
            attendance_code="T",
            state=AttendanceState.PENDING,
            reason="Mrs Jones picked up",
            comment="Called Mr Smith",
            checked_out_by="Jane Doe",
        )
        student = RosterStudent("s", first_name="Ada", last_name="Lovelace")
        settings = Settings(database_url="postgresql://u:DB-SECRET@host/db")
        text = " ".join(map(repr, (district, record, student, settings)))
        for hidden in ("SECRET", "Jones", "Smith", "Jane", "Ada", "Lovelace"):
            assert hidden not in text


class TestConfigChanges:
    async def test_a_secret_is_not_kept_for_another_server(self, world: World) -> None:
        await world.setup()
        moved = world.district_pb()
        moved.powerschool.base_url = "https://elsewhere.example.org"
        moved.powerschool.client_secret = ""
        saved = await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=moved))
        assert not saved.district.powerschool.has_client_secret

    async def test_switching_id_mode_forgets_looked_up_ids(self, world: World) -> None:
        """STUDENTS.IDs found while the roster was read as DCIDs are not trusted after the
        district is switched to STUDENTS.ID mode (and the other way round)."""
        await world.setup(sis_field="id", id_mode=pb.ID_MODE_STUDENTS_ID)
        ps = world.student()
        await world.resolve(sis_id=str(ps.id))
        await world.setup(sis_field="id", id_mode=pb.ID_MODE_DCID)
        before = world.sim.count("/ws/schema/table/students")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.resolve(sis_id=str(ps.id))  # an ID is not a DCID: looked up again
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert world.sim.count("/ws/schema/table/students") == before + 1
