"""CheckConnection over real gRPC: each problem an admin can make in a district's setup is
reported as its own finding (with the school it concerns), a correct district gets none, and
the check writes nothing to PowerSchool."""

from __future__ import annotations

import socket

import asyncpg
import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from service import Server
from service.powerschool import MEETING_TEMPLATE_QUERY, load_plugin
from simulators.classlink import ClassLinkSimulator
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator, demo_dataset, without_field, without_query
from simulators.roster import school_roster_id
from tests.helpers import World, failure
from tests.test_cli import cli


def schools(source: str, **codes: str) -> list[pb.School]:
    return [
        pb.School(
            school_number=n,
            roster_school_id=school_roster_id(source, n),  # type: ignore[arg-type]
            writeback_enabled=True,
            late_check_in_code=codes.get(f"late_{n}", "T"),
            early_check_out_code="ED",
            late_check_in_excused_code="TE",
            early_check_out_excused_code="EDE",
            late_and_early_code="LE",
        )
        for n in (100, 200)
    ]


def clever_connection(clever: CleverSimulator, *, secret: str = "") -> pb.CleverConnection:
    return pb.CleverConnection(
        base_url=clever.base_url,
        client_id=clever.client_id,
        client_secret=secret or clever.client_secret,
        clever_district_id=clever.district_id,
    )


async def clever_district(world: World, roster: CleverSimulator, **overrides: object) -> None:
    fields: dict[str, object] = {
        "schools": schools("clever"),
        "clever": clever_connection(roster),
        **overrides,
    }
    await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=world.district_pb(**fields)))


async def check(world: World) -> tuple[pb.CheckConnectionResponse, list[tuple[int, int, int]]]:
    """The response, and its findings as (code, severity, school_number)."""
    response = await world.stub.CheckConnection(
        pb.CheckConnectionRequest(district_id=world.district_id)
    )
    return response, [(f.code, f.severity, f.school_number) for f in response.findings]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestCorrectDistricts:
    async def test_a_correct_clever_district_has_no_findings_and_nothing_is_written(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        world.sim.reset_calls()
        rows_before = world.sim.attendance_rows()
        response, found = await check(world)
        assert found == []
        assert response.schools_checked == 2
        ws_calls = [c for c in world.sim.calls if c.path.startswith("/ws/")]
        assert ws_calls, "the check must actually probe PowerSchool"
        # Reads are GETs; the one POST allowed is PowerSchool's read-only PowerQuery API.
        assert all(
            c.method in ("GET", "HEAD")
            for c in ws_calls
            if not c.path.startswith("/ws/schema/query/")
        ), [(c.method, c.path) for c in ws_calls]
        assert not [c for c in ws_calls if c.method in ("PUT", "DELETE", "PATCH")]
        assert not [c for c in ws_calls if c.path.startswith("/ws/attendance/")]
        assert world.sim.attendance_rows() == rows_before
        assert clever.count("/v3.0/schools") == 1

    async def test_a_correct_classlink_district_has_no_findings(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(
                district=world.district_pb(
                    roster_source=pb.ROSTER_SOURCE_CLASSLINK,
                    schools=schools("classlink"),
                    classlink=pb.ClassLinkConnection(
                        endpoint_url=classlink.base_url,
                        client_id=classlink.client_id,
                        client_secret=classlink.client_secret,
                    ),
                )
            )
        )
        _, found = await check(world)
        assert found == []
        assert classlink.count("/ims/oneroster/v1p1/schools") == 1


class TestPowerSchoolFindings:
    async def test_wrong_powerschool_url(self, world: World, clever: CleverSimulator) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        await clever_district(
            world,
            clever,
            powerschool=pb.PowerSchoolConnection(
                base_url=url, client_id="sim", client_secret="secret"
            ),
        )
        response, found = await check(world)
        assert found == [(pb.FINDING_CODE_POWERSCHOOL_UNREACHABLE, pb.SEVERITY_ERROR, 0)]
        assert url in response.findings[0].message
        assert "server URL" in response.findings[0].message

    async def test_bad_secret(self, world: World, clever: CleverSimulator) -> None:
        await clever_district(
            world,
            clever,
            powerschool=pb.PowerSchoolConnection(
                base_url=world.sim.base_url,
                client_id=world.sim.client_id,
                client_secret="not-the-secret",
            ),
        )
        response, found = await check(world)
        assert found == [(pb.FINDING_CODE_POWERSCHOOL_CREDENTIALS_REFUSED, pb.SEVERITY_ERROR, 0)]
        assert "not-the-secret" not in response.findings[0].message
        assert "Data Provider Configuration" in response.findings[0].message

    async def test_missing_code_in_one_school(self, world: World, clever: CleverSimulator) -> None:
        await clever_district(world, clever, schools=schools("clever", late_200="TX"))
        response, found = await check(world)
        assert found == [(pb.FINDING_CODE_ATTENDANCE_CODE_MISSING, pb.SEVERITY_ERROR, 200)]
        assert "'TX'" in response.findings[0].message
        assert "late check-in" in response.findings[0].message

    async def test_school_in_meeting_mode_with_other_problems_at_once(
        self, stub: object, clever: CleverSimulator
    ) -> None:
        """School 100 takes period attendance in PowerSchool while the district expects
        daily; school 200 lacks a code; PowerSchool lacks the PowerQuery: all three come back
        from one check, each naming its school."""
        meeting = PowerSchoolSimulator(
            demo_dataset(students_per_school=10), meeting_schools={100}, dcid_id_map_query=False
        )
        await meeting.start()
        try:
            world = World(stub, meeting)  # type: ignore[arg-type]
            await clever_district(world, clever, schools=schools("clever", late_200="TX"))
            response, found = await check(world)
            assert found == [
                (pb.FINDING_CODE_ATTENDANCE_MODE_UNSUPPORTED, pb.SEVERITY_ERROR, 100),
                (pb.FINDING_CODE_ATTENDANCE_CODE_MISSING, pb.SEVERITY_ERROR, 200),
                (pb.FINDING_CODE_POWERQUERY_UNAVAILABLE, pb.SEVERITY_WARNING, 0),
            ]
            assert "Meeting" in response.findings[0].message
            assert "Daily" in response.findings[0].message
        finally:
            await meeting.stop()

    @pytest.mark.parametrize(
        "case",
        [
            (True, "A", None, ""),
            (False, "A", pb.FINDING_CODE_POWERQUERY_UNAVAILABLE, MEETING_TEMPLATE_QUERY),
            (True, "AX", pb.FINDING_CODE_ATTENDANCE_CODE_MISSING, "'AX'"),
        ],
    )
    async def test_a_meeting_school_needs_the_class_meeting_powerquery_and_its_missed_code(
        self,
        stub: object,
        clever: CleverSimulator,
        case: tuple[bool, str, int | None, str],
    ) -> None:
        """School 100 is set to Meeting, as PowerSchool takes it: the check asks the class
        meetings' PowerQuery once; an installed plugin that may not run it is an error for
        that school naming the query, and so is a missed_code PowerSchool lacks."""
        runs_the_query, missed_code, expected, said = case
        plugin = load_plugin()
        if not runs_the_query:
            plugin = without_query(plugin, MEETING_TEMPLATE_QUERY)
        meeting = PowerSchoolSimulator(
            demo_dataset(students_per_school=10), meeting_schools={100}, plugin=plugin
        )
        await meeting.start()
        try:
            world = World(stub, meeting)  # type: ignore[arg-type]
            configured = schools("clever")
            configured[0].attendance_mode = pb.ATTENDANCE_MODE_MEETING
            configured[0].missed_code = missed_code
            await clever_district(world, clever, schools=configured)
            response, found = await check(world)
        finally:
            await meeting.stop()
        assert meeting.count(f"/ws/schema/query/{MEETING_TEMPLATE_QUERY}") == 1
        if expected is None:
            assert found == []
        else:
            assert found == [(expected, pb.SEVERITY_ERROR, 100)]
            assert said in response.findings[0].message

    async def test_a_school_powerschool_does_not_know(
        self, world: World, clever: CleverSimulator
    ) -> None:
        extra = pb.School(school_number=300, writeback_enabled=True, late_check_in_code="T")
        await clever_district(world, clever, schools=[*schools("clever"), extra])
        response, found = await check(world)
        assert found == [(pb.FINDING_CODE_SCHOOL_YEAR_MISSING, pb.SEVERITY_ERROR, 300)]
        assert "school number" in response.findings[0].message
        assert response.schools_checked == 3

    async def test_fields_the_installed_plugin_does_not_grant_are_named(
        self, stub: object, clever: CleverSimulator
    ) -> None:
        """PowerSchool runs an older plugin lacking two fields the service needs: one finding
        names the table and both fields, and the school checks that need them add nothing."""
        installed = without_field(
            without_field(load_plugin(), "ATTENDANCE", "ATT_MODE_CODE"), "ATTENDANCE", "ATT_COMMENT"
        )
        older = PowerSchoolSimulator(demo_dataset(students_per_school=4), plugin=installed)
        await older.start()
        try:
            world = World(stub, older)  # type: ignore[arg-type]
            await clever_district(world, clever)
            response, found = await check(world)
            assert found == [(pb.FINDING_CODE_POWERSCHOOL_FIELD_FORBIDDEN, pb.SEVERITY_ERROR, 0)]
            message = response.findings[0].message
            assert "ATTENDANCE field(s) ATT_COMMENT, ATT_MODE_CODE" in message
            assert response.findings[0].count == 2
        finally:
            await older.stop()

    async def test_every_field_of_the_shipped_plugin_is_probed(
        self, world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(world, clever)
        world.sim.reset_calls()
        await check(world)
        plugin = load_plugin()
        for table in plugin.tables:
            probes = [
                c.query["projection"].upper().split(",")
                for c in world.sim.calls
                if c.path == f"/ws/schema/table/{table.lower()}" and c.query.get("pagesize") == "1"
            ]
            assert sorted(plugin.fields(table)) in [sorted(p) for p in probes], table

    async def test_a_stored_time_zone_that_no_longer_exists(
        self, world: World, clever: CleverSimulator, database_url: str
    ) -> None:
        """Time zones are validated on UpsertDistrict, but a stored one can stop existing
        (a tzdata update, or a row written before validation): the check still names it."""
        await clever_district(world, clever)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE schools SET timezone = 'America/Atlantis' "
                "WHERE district_id = $1 AND school_number = 200",
                world.district_id,
            )
        finally:
            await conn.close()
        response, found = await check(world)
        assert found == [(pb.FINDING_CODE_TIMEZONE_INVALID, pb.SEVERITY_ERROR, 200)]
        assert "America/Atlantis" in response.findings[0].message


class TestRosterFindings:
    async def test_clever_bad_secret(self, world: World, clever: CleverSimulator) -> None:
        secret = "s3cret-that-is-wrong"
        await clever_district(world, clever, clever=clever_connection(clever, secret=secret))
        response, found = await check(world)
        assert found == [(pb.FINDING_CODE_ROSTER_CREDENTIALS_REFUSED, pb.SEVERITY_ERROR, 0)]
        assert secret not in response.findings[0].message

    async def test_clever_school_not_shared(self, world: World, clever: CleverSimulator) -> None:
        del clever.schools[school_roster_id("clever", 200)]
        await clever_district(world, clever)
        _, found = await check(world)
        assert found == [(pb.FINDING_CODE_ROSTER_SCHOOL_NOT_VISIBLE, pb.SEVERITY_ERROR, 200)]

    async def test_classlink_wrong_endpoint_and_bad_signature(
        self, world: World, classlink: ClassLinkSimulator
    ) -> None:
        async def classlink_check(endpoint: str, secret: str) -> list[tuple[int, int, int]]:
            await world.stub.UpsertDistrict(
                pb.UpsertDistrictRequest(
                    district=world.district_pb(
                        roster_source=pb.ROSTER_SOURCE_CLASSLINK,
                        schools=schools("classlink"),
                        classlink=pb.ClassLinkConnection(
                            endpoint_url=endpoint,
                            client_id=classlink.client_id,
                            client_secret=secret,
                        ),
                    )
                )
            )
            return (await check(world))[1]

        wrong = await classlink_check(
            classlink.base_url + "/ims/oneroster/v1p2", classlink.client_secret
        )
        assert wrong == [(pb.FINDING_CODE_ONEROSTER_ENDPOINT_WRONG, pb.SEVERITY_ERROR, 0)]
        refused = await classlink_check(classlink.base_url, "not-the-secret")
        assert refused == [(pb.FINDING_CODE_ROSTER_CREDENTIALS_REFUSED, pb.SEVERITY_ERROR, 0)]

    async def test_no_roster_connection_is_information_only(self, world: World) -> None:
        await world.setup()
        _, found = await check(world)
        assert found == [(pb.FINDING_CODE_ROSTER_NOT_CONFIGURED, pb.SEVERITY_INFO, 0)]


class TestEdges:
    async def test_bad_and_unknown_district(self, world: World) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await world.stub.CheckConnection(pb.CheckConnectionRequest(district_id="bad id!"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "district_id" in failure(bad.value).violations
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await world.stub.CheckConnection(pb.CheckConnectionRequest(district_id="nobody"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    async def test_cli_check_exit_codes(
        self, world: World, clever: CleverSimulator, server: Server
    ) -> None:
        await clever_district(world, clever)
        code, shown, err = await cli(server, "check", world.district_id)
        assert (code, shown["findings"], shown["schools_checked"]) == (0, [], 2)
        assert "No problems; 2 school(s) checked." in err
        await clever_district(world, clever, schools=schools("clever", late_200="TX"))
        code, shown, err = await cli(server, "check", world.district_id)
        assert code == 1
        assert [(f["code"], f["school_number"]) for f in shown["findings"]] == [
            ("FINDING_CODE_ATTENDANCE_CODE_MISSING", 200)
        ]
        assert "ERROR   school 200   ATTENDANCE_CODE_MISSING" in err
        assert "1 problem(s) to fix; 2 school(s) checked." in err
