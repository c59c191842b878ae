"""Limits at the edge: request-size caps per RPC and for the server, repeated-field caps,
a per-caller request rate, and time budgets for the long RPCs. Real gRPC server, embedded
Postgres, simulators over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.api.limits import caller_of
from service.api.validation import MAX_ABSENCE_CODES, MAX_SCHOOLS
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import World, authed_channel, failure, fast_settings
from tests.test_roster_sync import clever_district

MIB = 1024 * 1024
RATE = 5  # requests per second per caller on the rate-limited server
DEFAULT_DEADLINE, MAX_DEADLINE = 1.0, 2.0
WRITEBACK = "writeback.v1.WritebackService"


async def refused(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return failure(err.value)


def raw(channel: grpc.aio.Channel, method: str) -> Any:
    """A unary call that sends ``bytes`` as the request body, unparsed."""
    return channel.unary_unary(
        f"/{WRITEBACK}/{method}",
        request_serializer=lambda body: body,
        response_deserializer=lambda body: body,
    )


async def limited_server(database_url: str, **limits: Any) -> AsyncIterator[Server]:
    srv = Server(fast_settings(database_url, **limits))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(scope="module")
async def tight(database_url: str) -> AsyncIterator[Server]:
    """Small overall cap and short time budgets, no rate limit."""
    async for srv in limited_server(
        database_url,
        grpc_max_receive_bytes=MIB,
        caller_rate_limit=0,
        rpc_default_deadline=DEFAULT_DEADLINE,
        rpc_max_deadline=MAX_DEADLINE,
    ):
        yield srv


@pytest.fixture(scope="module")
async def throttled(database_url: str) -> AsyncIterator[Server]:
    async for srv in limited_server(database_url, caller_rate_limit=RATE):
        yield srv


@pytest.fixture
async def tight_world(tight: Server, sim: PowerSchoolSimulator) -> AsyncIterator[World]:
    async with authed_channel(f"127.0.0.1:{tight.port}") as channel:
        yield World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)


class TestRequestSize:
    @pytest.mark.parametrize("method", ["GetDistrict", "SubmitAttendance", "ImportStudents"])
    async def test_undecodable_body_is_invalid_argument_not_unknown(
        self, channel: grpc.aio.Channel, method: str
    ) -> None:
        """Found by the fuzz suite: grpc answered UNKNOWN with the parser's exception text
        for a body that is not a protobuf message."""
        got = await refused(raw(channel, method)(b"\xff\xff\xff\xff"))
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert got.violations == {"request": "is not a valid message for this RPC"}
        # Valid wire format, but a string field that is not UTF-8.
        got = await refused(raw(channel, method)(b"\x0a\x02\xff\xfe"))
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT

    async def test_small_rpc_refuses_a_large_request_before_reading_it(
        self, stub: writeback_pb2_grpc.WritebackServiceStub
    ) -> None:
        got = await refused(stub.GetDistrict(pb.GetDistrictRequest(district_id="x" * 100_000)))
        assert (got.code, got.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE")
        assert "at most 65536" in got.message
        assert got.retry_after is None  # waiting never makes it smaller

    async def test_import_takes_what_a_small_rpc_refuses(
        self, stub: writeback_pb2_grpc.WritebackServiceStub
    ) -> None:
        """ImportStudents may carry 10,000 students: the same 100 KB is parsed and checked."""
        got = await refused(
            stub.ImportStudents(
                pb.ImportStudentsRequest(
                    district_id="x" * 100_000, students=[pb.RosterStudent(roster_id="r1")]
                )
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert set(got.violations) == {"district_id"}

    async def test_server_cap_applies_to_every_rpc(self, tight_world: World) -> None:
        students = [
            pb.RosterStudent(roster_id=f"r{i}", first_name="a" * 90, last_name="b" * 90)
            for i in range(7000)
        ]
        request = pb.ImportStudentsRequest(district_id="d1", students=students)
        assert request.ByteSize() > MIB
        got = await refused(tight_world.stub.ImportStudents(request))
        assert got.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        got = await refused(
            tight_world.stub.ImportStudents(
                pb.ImportStudentsRequest(district_id="d1", students=students[:3000])
            )
        )
        assert got.code is grpc.StatusCode.NOT_FOUND  # read: the district does not exist


class TestRepeatedFields:
    async def test_schools_per_district_capped(self, world: World) -> None:
        schools = [
            pb.School(school_number=n, late_check_in_code="T") for n in range(1, MAX_SCHOOLS + 2)
        ]
        got = await refused(
            world.stub.UpsertDistrict(
                pb.UpsertDistrictRequest(district=world.district_pb(schools=schools))
            )
        )
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert got.violations == {"district.schools": f"must hold at most {MAX_SCHOOLS} schools"}

    async def test_absence_codes_capped(self, world: World) -> None:
        school = pb.School(
            school_number=100,
            late_check_in_code="T",
            absence_codes=[f"A{i}" for i in range(MAX_ABSENCE_CODES + 1)],
        )
        got = await refused(
            world.stub.UpsertDistrict(
                pb.UpsertDistrictRequest(district=world.district_pb(schools=[school]))
            )
        )
        assert set(got.violations) == {"district.schools[0].absence_codes"}
        school.absence_codes.pop()
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(schools=[school]))
        )


class TestRate:
    async def test_a_fast_caller_is_slowed_with_retry_info_and_recovers(
        self, throttled: Server
    ) -> None:
        async with authed_channel(f"127.0.0.1:{throttled.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            calls = [
                stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(district_id="nowhere"))
                for _ in range(4 * RATE)
            ]
            answers = await asyncio.gather(*calls, return_exceptions=True)
            codes = [failure(a).code for a in answers if isinstance(a, grpc.aio.AioRpcError)]
            assert codes.count(grpc.StatusCode.NOT_FOUND) <= RATE + 1  # served: no district
            limited = [
                failure(a)
                for a in answers
                if isinstance(a, grpc.aio.AioRpcError)
                and a.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            ]
            assert len(limited) >= 3 * RATE - 1
            assert {(e.reason, e.retry_after) for e in limited} == {("RATE_LIMITED", 1 / RATE)}
            # Probes are never limited, even now.
            for _ in range(3 * RATE):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=WRITEBACK))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(1.0)
            got = await refused(
                stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(district_id="nowhere"))
            )
            assert got.code is grpc.StatusCode.NOT_FOUND

    def test_caller_is_the_peer_host_without_its_port(self) -> None:
        class Peer:
            def __init__(self, peer: str) -> None:
                self._peer = peer

            def peer(self) -> str:
                return self._peer

        assert caller_of(Peer("ipv4:127.0.0.1:50123")) == "ipv4:127.0.0.1"  # type: ignore[arg-type]
        assert caller_of(Peer("ipv6:[::1]:50123")) == "ipv6:[::1]"  # type: ignore[arg-type]
        assert caller_of(Peer("unix:/tmp/s")) == "unix:/tmp/s"  # type: ignore[arg-type]


class TestDeadlines:
    async def slow_district(self, world: World) -> None:
        await world.setup()
        world.sim.faults.latency = 5.0  # above FAST's 2 s PowerSchool timeout: every probe fails

    async def test_long_rpc_without_a_deadline_gets_the_default_budget(
        self, tight_world: World
    ) -> None:
        await self.slow_district(tight_world)
        started = time.monotonic()
        got = await refused(
            tight_world.stub.CheckConnection(
                pb.CheckConnectionRequest(district_id=tight_world.district_id)
            )
        )
        took = time.monotonic() - started
        assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
        assert DEFAULT_DEADLINE <= took < DEFAULT_DEADLINE + 1.0

    async def test_a_huge_deadline_is_capped(self, tight_world: World) -> None:
        await self.slow_district(tight_world)
        started = time.monotonic()
        got = await refused(
            tight_world.stub.DiagnoseMapping(
                pb.DiagnoseMappingRequest(district_id=tight_world.district_id), timeout=3600
            )
        )
        took = time.monotonic() - started
        assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
        assert MAX_DEADLINE <= took < MAX_DEADLINE + 1.0

    async def test_sync_without_a_deadline_answers_still_running_within_the_default(
        self, tight_world: World, clever: CleverSimulator
    ) -> None:
        await clever_district(tight_world, clever)
        clever.faults.latency = 0.5
        started = time.monotonic()
        got = await refused(
            tight_world.stub.SyncRoster(pb.SyncRosterRequest(district_id=tight_world.district_id))
        )
        assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "SYNC_STILL_RUNNING")
        assert got.metadata["sync_id"]
        assert time.monotonic() - started < DEFAULT_DEADLINE + 0.5

    async def test_short_rpcs_have_no_budget(self, tight_world: World) -> None:
        """ResolveStudent is not a long RPC: a first lookup waits for a slow PowerSchool
        beyond the long RPCs' default budget."""
        await tight_world.setup()
        tight_world.sim.faults.latency = 1.5
        student = tight_world.student()
        got = await tight_world.resolve(sis_id=str(student.dcid))
        assert got.powerschool_id == student.id
