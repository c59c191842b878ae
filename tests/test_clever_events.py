"""Clever Events off: an app that never enabled Clever's Events API (opt-in since December
2022) still gets roster changes, through scheduled full reads; DiagnoseMapping says how to
enable Events; and the district token is picked from a paged list of many districts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.clever import CleverClient
from service.models import CleverConnection
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator, PSStudent, demo_dataset
from simulators.roster import roster_from_powerschool
from tests.conftest import LogCapture
from tests.helpers import World, authed_channel, fast_settings
from tests.test_roster_clients import QUICK
from tests.test_roster_sync import clever_district, sync

NEWCOMER = PSStudent(
    id=3999, dcid=79999, student_number="777777", first_name="New", last_name="Kid", schoolid=100
)


async def started(sim: PowerSchoolSimulator, *, events_enabled: bool) -> CleverSimulator:
    clever = CleverSimulator(
        roster_from_powerschool(sim.dataset, "clever"), events_enabled=events_enabled
    )
    await clever.start()
    return clever


@pytest.fixture
async def clever_off(sim: PowerSchoolSimulator) -> AsyncIterator[CleverSimulator]:
    clever = await started(sim, events_enabled=False)
    yield clever
    await clever.stop()


@pytest.fixture
async def clever_on(sim: PowerSchoolSimulator) -> AsyncIterator[CleverSimulator]:
    clever = await started(sim, events_enabled=True)
    yield clever
    await clever.stop()


def add_newcomer(world: World, clever: CleverSimulator) -> str:
    """A new student in PowerSchool and in Clever; returns the new Clever user id."""
    world.sim.add_student(NEWCOMER)
    template = clever.people()[0]
    return clever.create(
        replace(template, roster_id="", sis_id=str(NEWCOMER.dcid), student_number="777777")
    )


async def events_finding(world: World) -> pb.MappingFinding | None:
    """The Events-off finding of DiagnoseMapping, which CheckConnection reports the same."""
    diagnosed = await world.stub.DiagnoseMapping(
        pb.DiagnoseMappingRequest(district_id=world.district_id)
    )
    checked = await world.stub.CheckConnection(
        pb.CheckConnectionRequest(district_id=world.district_id)
    )
    found = [f for f in diagnosed.findings if f.code == pb.FINDING_CODE_CLEVER_EVENTS_OFF]
    assert found == [f for f in checked.findings if f.code == pb.FINDING_CODE_CLEVER_EVENTS_OFF]
    assert len(found) <= 1
    return found[0] if found else None


async def eventually(check: object, seconds: float) -> None:
    """Wait until the coroutine function ``check`` returns True."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.2)


class TestScheduledFullSync:
    @pytest.mark.parametrize("turned_off", [False, True])
    async def test_events_off_district_picks_up_roster_changes_on_schedule(
        self, world: World, clever_off: CleverSimulator, own_database: str, turned_off: bool
    ) -> None:
        """Events off (never enabled, or turned off after the first read saw an event) and a
        sync every minute: a new student and a changed student number arrive within seconds
        through the FULL_SYNC_INTERVAL full read (events would never bring them); from then
        on the district gets full reads only, no event reads."""
        if turned_off:
            clever_off.events_enabled = True
            clever_off.update(clever_off.people()[3].roster_id, grade="11")
        srv = Server(fast_settings(own_database, sync_poll_seconds=0.2, full_sync_interval=2.0))
        await srv.start()
        try:
            async with authed_channel(f"127.0.0.1:{srv.port}") as ch:
                here = World(
                    writeback_pb2_grpc.WritebackServiceStub(ch), world.sim, world.district_id
                )
                await clever_district(here, clever_off, sync_interval=Duration(seconds=60))

                async def synced() -> bool:
                    district = await here.stub.GetDistrict(
                        pb.GetDistrictRequest(district_id=world.district_id)
                    )
                    return district.district.HasField("last_sync_at")

                await eventually(synced, 10)
                clever_off.events_enabled = False
                changed = clever_off.people()[1]
                new_id = add_newcomer(here, clever_off)
                clever_off.update(changed.roster_id, student_number="555555")

                async def arrived() -> bool:
                    try:
                        await here.resolve(roster_id=new_id)
                    except grpc.aio.AioRpcError as err:
                        if err.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                        return False
                    return True

                await eventually(arrived, 15)
                student = await here.resolve(roster_id=new_id)
                assert (student.powerschool_id, student.student_number) == (3999, "777777")
                renumbered = await here.resolve(student_number="555555")
                assert renumbered.roster_id == changed.roster_id
                assert await events_finding(here) is not None

                clever_off.reset_calls()
                await asyncio.sleep(3.0)
                reads = [c for c in clever_off.calls if c.path == "/v3.0/users"]
                event_reads = [
                    c
                    for c in clever_off.calls
                    if c.path == "/v3.0/events" and "record_type" in c.query
                ]
                assert reads, "no scheduled full read"
                assert event_reads == []
        finally:
            await srv.stop()


class TestDiagnose:
    async def test_events_off_is_reported_with_how_to_enable_them(
        self, world: World, clever_off: CleverSimulator, logs: LogCapture
    ) -> None:
        mark = logs.tell()
        await clever_district(world, clever_off)
        await sync(world)
        assert await events_finding(world) is None  # nothing to compare with yet
        add_newcomer(world, clever_off)
        assert (await sync(world)).created == 0  # no event comes
        assert (await sync(world, full=True)).created == 1
        finding = await events_finding(world)
        assert finding is not None
        assert finding.severity == pb.SEVERITY_WARNING
        assert finding.count == 1
        assert "Settings > Integrations" in finding.message
        assert "Enable events" in finding.message
        assert '"clever_events_off"' in logs.since(mark)

        # Known off: a plain SyncRoster reads in full, since events would show nothing.
        clever_off.update(clever_off.people()[1].roster_id, student_number="555555")
        result = await sync(world)
        assert (result.full, result.updated) == (True, 1)

        # The admin enables Events: the first event clears the finding.
        clever_off.events_enabled = True
        clever_off.update(clever_off.people()[2].roster_id, student_number="565656")
        await sync(world)
        assert await events_finding(world) is None

    async def test_no_finding_when_events_are_on(
        self, world: World, clever_on: CleverSimulator
    ) -> None:
        await clever_district(world, clever_on)
        await sync(world)
        new_id = add_newcomer(world, clever_on)
        result = await sync(world)
        assert (result.full, result.created) == (False, 1)
        assert (await world.resolve(roster_id=new_id)).student_number == "777777"
        clever_on.update(clever_on.people()[1].roster_id, student_number="555555")
        assert (await sync(world, full=True)).updated == 1
        assert await events_finding(world) is None


class TestDistrictToken:
    @pytest.mark.parametrize("filtered", [True, False])
    async def test_right_token_from_many_districts_over_several_pages(self, filtered: bool) -> None:
        """An app connected to 400 districts: Clever pages the token list (100 a page) and
        may ignore the district filter; the client still uses this district's token."""
        others = [f"{i:024x}" for i in range(1, 401)]
        clever = CleverSimulator(
            roster_from_powerschool(demo_dataset(students_per_school=3), "clever"),
            other_districts=others,
            token_page_size=100,
            token_district_filter=filtered,
        )
        await clever.start()
        try:
            async with aiohttp.ClientSession() as http:
                client = CleverClient(
                    http,
                    CleverConnection(
                        base_url=clever.base_url,
                        client_id=clever.client_id,
                        client_secret=clever.client_secret,
                        clever_district_id=clever.district_id,
                    ),
                    retry=QUICK,
                )
                ids = [s.roster_id async for page in client.students() for s in page]
        finally:
            await clever.stop()
        assert sorted(ids) == sorted(p.roster_id for p in clever.people())
        token_calls = [c for c in clever.calls if c.path == "/oauth/tokens"]
        assert all(c.query.get("district") == clever.district_id for c in token_calls)
        assert len(token_calls) == (1 if filtered else 3)
