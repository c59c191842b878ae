"""Roster sync from the Clever and ClassLink simulators through the real service, with the
PowerSchool simulator answering the STUDENTS.ID prefetch."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import grpc
import pytest
import stamina
from google.protobuf.duration_pb2 import Duration
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.classlink import ClassLinkSimulator
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator, PSStudent
from simulators.roster import roster_from_powerschool, school_roster_id
from tests.conftest import LogCapture
from tests.helpers import World, authed_channel, failure, fast_settings

DCID_MAP = "/ws/schema/query/com.pearson.core.student.student_dcid_id_map"


def schools(source: str) -> list[pb.School]:
    return [
        pb.School(
            school_number=n,
            roster_school_id=school_roster_id(source, n),  # type: ignore[arg-type]
            writeback_enabled=True,
            late_check_in_code="T",
            early_check_out_code="ED",
        )
        for n in (100, 200)
    ]


async def clever_district(world: World, clever: CleverSimulator, **overrides: object) -> None:
    await world.stub.UpsertDistrict(
        pb.UpsertDistrictRequest(
            district=world.district_pb(
                schools=schools("clever"),
                clever=pb.CleverConnection(
                    base_url=clever.base_url,
                    client_id=clever.client_id,
                    client_secret=clever.client_secret,
                    clever_district_id=clever.district_id,
                ),
                **overrides,
            )
        )
    )


async def classlink_district(
    world: World,
    classlink: ClassLinkSimulator,
    *,
    secret: str | None = None,
    endpoint: str | None = None,
    **overrides: object,
) -> None:
    await world.stub.UpsertDistrict(
        pb.UpsertDistrictRequest(
            district=world.district_pb(
                roster_source=pb.ROSTER_SOURCE_CLASSLINK,
                schools=schools("classlink"),
                classlink=pb.ClassLinkConnection(
                    endpoint_url=classlink.base_url if endpoint is None else endpoint,
                    client_id=classlink.client_id,
                    client_secret=secret or classlink.client_secret,
                ),
                **overrides,
            )
        )
    )


async def sync(world: World, *, full: bool = False) -> pb.SyncRosterResponse:
    return await world.stub.SyncRoster(
        pb.SyncRosterRequest(district_id=world.district_id, full=full)
    )


class TestClever:
    async def test_full_sync_then_barcode_resolve_without_waiting(
        self, world: World, clever: CleverSimulator
    ) -> None:
        """A first sync reads every student, prefetches STUDENTS.IDs in batches, and a
        barcode scan afterwards resolves without calling PowerSchool."""
        await clever_district(world, clever)
        result = await sync(world)
        n = len(world.students)
        assert (result.full, result.created, result.prefetched, result.unresolved) == (
            True,
            n,
            n,
            0,
        )
        assert world.sim.count(DCID_MAP) == math.ceil(n / 100)
        ps = world.student(200, 1)
        student = await world.resolve(student_number=ps.student_number)
        assert (student.powerschool_id, student.dcid, student.school_number) == (
            ps.id,
            ps.dcid,
            200,
        )
        assert world.sim.count("/ws/schema/table/students") == 0

    async def test_incremental_sync_applies_events(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        await sync(world)
        people = clever.people()
        newcomer = PSStudent(
            id=3999,
            dcid=79999,
            student_number="777777",
            first_name="New",
            last_name="Student",
            schoolid=100,
        )
        world.sim.add_student(newcomer)
        added = replace(people[0], roster_id="", sis_id="79999", student_number="777777")
        new_id = clever.create(added)
        clever.update(people[1].roster_id, student_number="555555")
        clever.delete(people[2].roster_id)
        result = await sync(world)
        assert result.full is False
        assert (result.created, result.updated, result.deactivated) == (1, 1, 1)
        assert (await world.resolve(roster_id=new_id)).student_number == "777777"
        assert (await world.resolve(student_number="555555")).roster_id == people[1].roster_id
        assert (await world.resolve(roster_id=people[2].roster_id)).active is False

    async def test_changed_sis_id_leaves_one_active_student_per_dcid(
        self, world: World, clever: CleverSimulator
    ) -> None:
        """Clever re-provisions a user whose sis_id changed; the old record must not stay
        active, and a DCID must never be active on two records."""
        await clever_district(world, clever)
        await sync(world)
        ps_a, ps_b = world.student(100, 0), world.student(100, 1)
        person_a = next(p for p in clever.people() if p.sis_id == str(ps_a.dcid))
        # A's Student ID is corrected in the SIS: Clever deletes A and creates a new user.
        corrected = PSStudent(
            id=3998,
            dcid=79998,
            student_number=ps_a.student_number,
            first_name="A",
            last_name="Corrected",
            schoolid=100,
        )
        world.sim.add_student(corrected)
        new_id = clever.change_sis_id(person_a.roster_id, "79998")
        # And B is re-provisioned under a new Clever id with the same DCID.
        person_b = next(p for p in clever.people() if p.sis_id == str(ps_b.dcid))
        readded = clever.create(replace(person_b, roster_id=""))
        result = await sync(world)
        assert result.deactivated >= 2
        assert (await world.resolve(roster_id=person_a.roster_id)).active is False
        assert (await world.resolve(roster_id=new_id)).powerschool_id == 3998
        current = await world.resolve(sis_id=str(ps_b.dcid))
        assert (current.roster_id, current.active) == (readded, True)
        assert (await world.resolve(roster_id=person_b.roster_id)).active is False

    async def test_expired_cursor_means_full_resync(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        clever.update(clever.people()[1].roster_id, grade="11")  # so the cursor is an event
        await sync(world)
        clever.update(clever.people()[0].roster_id, student_number="424242")
        clever.age_events(40)
        result = await sync(world)
        assert result.full is True
        assert result.updated == 1
        assert (await world.resolve(student_number="424242")).active

    async def test_clever_outage_is_roster_unavailable_with_retry_info(
        self, world: World, clever: CleverSimulator
    ) -> None:
        """Clever answering 503: UNAVAILABLE naming the roster (not PowerSchool), with a
        retry delay, and the district shows the sync error."""
        await clever_district(world, clever)
        clever.faults.outage = True
        # stamina's test mode: the client's own retries run without waiting out backoff.
        with stamina.set_testing(True, attempts=2), pytest.raises(grpc.aio.AioRpcError) as err:
            await sync(world)
        got = failure(err.value)
        assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "ROSTER_UNAVAILABLE")
        assert got.retry_after
        assert "Clever" in got.message
        district = await world.stub.GetDistrict(
            pb.GetDistrictRequest(district_id=world.district_id)
        )
        assert "503" in district.district.last_sync_error

    async def test_full_sync_deactivates_the_missing(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        await sync(world)
        gone = clever.people()[3]
        clever.delete(gone.roster_id)
        clever.age_events(40)  # the delete event is gone too: only a full read can tell
        result = await sync(world, full=True)
        assert result.deactivated == 1
        assert (await world.resolve(roster_id=gone.roster_id)).active is False

    async def test_visible_id_rules(self, world: World, clever: CleverSimulator) -> None:
        await clever_district(
            world, clever, visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER
        )
        await sync(world)
        ps = world.student()
        assert (await world.resolve(sis_id=str(ps.dcid))).visible_student_id == ps.student_number


class TestClassLink:
    async def test_full_sync_and_identifier_is_visible(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        await classlink_district(world, classlink)
        result = await sync(world)
        assert (result.full, result.created, result.unresolved) == (True, len(world.students), 0)
        ps = world.student(100, 2)
        student = await world.resolve(student_number=ps.student_number)
        assert (student.powerschool_id, student.visible_student_id) == (ps.id, ps.student_number)
        assert classlink.rejected_signatures == 0

    @pytest.mark.parametrize(
        "suffix",
        ["/", "/ims/oneroster/v1p1", "/ims/oneroster/v1p1/", "/IMS/OneRoster/v1p1/students"],
    )
    async def test_endpoint_in_any_form_classlink_shows(
        self, world: World, classlink: ClassLinkSimulator, suffix: str
    ) -> None:
        """The endpoint URL as copied from ClassLink: with a trailing slash, or with the
        OneRoster path (even a resource under it): the same Roster Server either way."""
        await classlink_district(world, classlink, endpoint=f" {classlink.base_url}{suffix} ")
        result = await sync(world)
        assert result.created == len(world.students)
        assert {c.path for c in classlink.calls} == {"/ims/oneroster/v1p1/students"}

    async def test_delta_sync_and_tobedeleted(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        await classlink_district(world, classlink)
        await sync(world)
        people = classlink.people()
        classlink.update(people[0].roster_id, student_number="313131")
        classlink.soft_delete(people[1].roster_id)
        result = await sync(world)
        assert result.full is False
        assert (result.updated, result.deactivated) == (1, 1)
        assert (await world.resolve(student_number="313131")).roster_id == people[0].roster_id
        assert (await world.resolve(roster_id=people[1].roster_id)).active is False
        delta = [c for c in classlink.calls if c.path.endswith("/students")][-1]
        assert delta.query["filter"].startswith("dateLastModified>'")

    async def test_hard_delete_is_caught_by_full_reconcile(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        await classlink_district(world, classlink)
        await sync(world)
        gone = classlink.people()[4]
        classlink.hard_delete(gone.roster_id)
        assert (await sync(world)).deactivated == 0  # a delta cannot see a hard delete
        assert (await sync(world, full=True)).deactivated == 1
        assert (await world.resolve(roster_id=gone.roster_id)).active is False

    async def test_bad_signature_is_refused(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        await classlink_district(world, classlink, secret="not-the-secret")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sync(world)
        got = failure(err.value)
        assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ROSTER_AUTH_FAILED")
        assert "not-the-secret" not in got.message
        assert classlink.rejected_signatures >= 1
        district = await world.stub.GetDistrict(
            pb.GetDistrictRequest(district_id=world.district_id)
        )
        assert "ClassLink" in district.district.last_sync_error

    async def test_unreachable_roster_server_is_roster_unavailable(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        await classlink_district(world, classlink)
        await classlink.stop()  # nothing listens on its port any more
        with stamina.set_testing(True, attempts=2), pytest.raises(grpc.aio.AioRpcError) as err:
            await sync(world)
        got = failure(err.value)
        assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "ROSTER_UNAVAILABLE")
        assert got.retry_after
        assert "ClassLink unreachable" in got.message

    async def test_enabled_user_as_boolean(self, world: World, sim: PowerSchoolSimulator) -> None:
        people = roster_from_powerschool(sim.dataset, "classlink")
        people[0] = replace(people[0], active=False)
        classlink = ClassLinkSimulator(people, enabled_user_as_string=False)
        await classlink.start()
        try:
            await classlink_district(world, classlink)
            result = await sync(world)
        finally:
            await classlink.stop()
        assert result.created == len(people)
        assert (await world.resolve(roster_id=people[0].roster_id)).active is False
        assert (await world.resolve(roster_id=people[1].roster_id)).active is True


class TestSchedule:
    async def test_roster_connection_secrets_are_write_only(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        got = (
            await world.stub.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id))
        ).district
        assert got.clever.client_secret == ""
        assert got.clever.has_client_secret
        assert clever.client_secret not in str(got)

    async def test_not_configured(self, world: World) -> None:
        await world.setup()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sync(world)
        assert failure(err.value).reason == "ROSTER_NOT_CONFIGURED"

    async def test_background_schedule_syncs_on_its_own(
        self, world: World, clever: CleverSimulator, database_url: str
    ) -> None:
        srv = Server(fast_settings(database_url, sync_poll_seconds=0.2))
        await srv.start()
        try:
            async with authed_channel(f"127.0.0.1:{srv.port}") as ch:
                other = World(
                    writeback_pb2_grpc.WritebackServiceStub(ch), world.sim, world.district_id
                )
                await clever_district(other, clever, sync_interval=Duration(seconds=3600))
                for _ in range(50):
                    district = (
                        await other.stub.GetDistrict(
                            pb.GetDistrictRequest(district_id=world.district_id)
                        )
                    ).district
                    if district.HasField("last_sync_at"):
                        break
                    await asyncio.sleep(0.1)
                assert district.HasField("last_sync_at"), "the schedule never ran"
                ps = world.student()
                assert (await other.resolve(sis_id=str(ps.dcid))).powerschool_id == ps.id
        finally:
            await srv.stop()


class TestLogs:
    async def test_sync_logs_carry_no_records_tokens_or_names(
        self, world: World, clever: CleverSimulator, classlink: ClassLinkSimulator, logs: LogCapture
    ) -> None:
        mark = logs.tell()
        await clever_district(world, clever)
        await sync(world)
        other = World(world.stub, world.sim)
        await classlink_district(other, classlink)
        await sync(other)
        text = logs.since(mark)
        assert '"clever_call"' in text
        assert '"classlink_call"' in text
        assert '"roster_synced"' in text
        for secret in (clever.client_secret, clever.district_token, classlink.client_secret):
            assert secret not in text
        for person in clever.people()[:10] + classlink.people()[:10]:
            assert person.last_name not in text
            assert person.first_name not in text
        assert "oauth_signature" not in text
