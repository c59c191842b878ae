"""Process layouts, as an operator runs them: ``--role api|worker|all`` (one database, the API
in one process and delivery in another) and ``GRPC_PROCESSES=N`` (N processes on one port
under a parent that forwards signals)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import FAST, TEST_ADMIN_TOKEN, World, authed_channel, local

WRITES = "/ws/attendance/daily_time"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``python -m service`` with ``args``, configured like the test server, logging to a
    file."""

    def __init__(self, log: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.log = log
        self.args = args
        fast = {key.upper(): str(value) for key, value in FAST.items() if key != "grpc_port"}
        self.env = {**os.environ, **fast, "GRPC_PORT": str(self.port), **env}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, ready: bool = True) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", *self.args, env=self.env, stderr=out
            )
        if ready:
            async with authed_channel(f"127.0.0.1:{self.port}") as channel:
                await asyncio.wait_for(channel.channel_ready(), timeout=60)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=60)

    async def logged(self, name: str, count: int, seconds: float = 60) -> None:
        """Return once the log holds ``count`` lines of event ``name``."""
        for _ in range(int(seconds * 10)):
            if len(self.events(name)) >= count:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"fewer than {count} {name} lines in {seconds} s")

    def events(self, name: str) -> list[dict[str, object]]:
        """The log lines with this event name (of the process and its children)."""
        lines = [line for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [entry for entry in map(json.loads, lines) if entry.get("event") == name]


def writes(sim: PowerSchoolSimulator) -> int:
    return sum(1 for call in sim.calls if call.path == WRITES and call.status == 200)


async def submit(world: World, *, wait: bool, deadline: float = 30) -> pb.SubmitAttendanceResponse:
    student = world.student()
    return await world.submit(
        student, local(world.school_day(), 9, 40), wait_for_writeback=wait, deadline=deadline
    )


async def test_an_api_process_queues_and_a_worker_process_delivers(
    own_database: str, sim: PowerSchoolSimulator, tmp_path: Path
) -> None:
    api = Service(tmp_path / "api.log", "--role", "api", DATABASE_URL=own_database)
    worker = Service(tmp_path / "worker.log", DATABASE_URL=own_database, ROLE="worker")
    await asyncio.gather(api.start(), worker.start())
    try:
        async with authed_channel(f"127.0.0.1:{api.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup()
            answer = await submit(world, wait=True)
            assert answer.record.state == pb.ATTENDANCE_STATE_WRITTEN
            assert writes(sim) == 1
            stats = await world.stub.GetDeliveryStats(
                pb.GetDeliveryStatsRequest(district_id=world.district_id)
            )
            # The api process delivers nothing, so it has no view of PowerSchool's breaker.
            assert stats.stats.breaker_state == pb.BREAKER_STATE_UNSPECIFIED
            assert stats.stats.written_last_hour == 1
    finally:
        assert await api.stop() == 0
        assert await worker.stop() == 0
    assert [e["record_id"] for e in worker.events("attendance_delivery")] == [
        answer.record.record_id
    ]
    assert api.events("attendance_delivery") == []
    assert [(e["role"], e["delivery"]) for e in api.events("service_started")] == [("api", False)]
    [started] = worker.events("service_started")
    assert (started["role"], started["delivery"], started["scheduler"]) == ("worker", True, True)


async def test_an_api_process_alone_never_delivers(
    own_database: str, sim: PowerSchoolSimulator, tmp_path: Path
) -> None:
    api = Service(tmp_path / "api.log", DATABASE_URL=own_database, ROLE="api")
    await api.start()
    try:
        async with authed_channel(f"127.0.0.1:{api.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup()
            # Its wait for the outcome ends at the deadline it was given, still PENDING.
            waited = await submit(world, wait=True, deadline=3)
            assert waited.record.state == pb.ATTENDANCE_STATE_PENDING
            record_id = (await submit(world, wait=False)).record.record_id
            await asyncio.sleep(2)  # ten delivery polls
            assert (await world.record(record_id)).state == pb.ATTENDANCE_STATE_PENDING
    finally:
        assert await api.stop() == 0
    assert writes(sim) == 0
    [started] = api.events("service_started")
    assert (started["delivery"], started["scheduler"]) == (False, False)
    conn = await asyncpg.connect(own_database)
    try:
        # No delivery worker ever registered on this database.
        assert await conn.fetchval("SELECT count(*) FROM delivery_workers") == 0
    finally:
        await conn.close()


async def test_a_worker_process_serves_health_and_no_api(own_database: str, tmp_path: Path) -> None:
    worker = Service(tmp_path / "worker.log", "--role", "worker", DATABASE_URL=own_database)
    await worker.start()
    try:
        async with authed_channel(f"127.0.0.1:{worker.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetDistrict(pb.GetDistrictRequest(district_id="any"))
            assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The image's probe asks a worker about its overall health (ROLE from the same env).
        env = {**worker.env, "ROLE": "worker", "GRPC_HOST": "127.0.0.1"}
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.healthcheck", env=env
        )
        assert await asyncio.wait_for(probe.wait(), timeout=60) == 0
    finally:
        assert await worker.stop() == 0
    assert [e["role"] for e in worker.events("service_started")] == ["worker"]


@pytest.mark.parametrize(("args", "env"), [(("--role", "both"), {}), ((), {"ROLE": "both"})])
async def test_a_bad_role_is_refused_at_start(
    args: tuple[str, ...], env: dict[str, str], tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env={**os.environ, **env},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    [line] = stderr.decode().splitlines()
    entry = json.loads(line)
    assert entry["event"] == "startup_failed"
    assert "ROLE='both' (allowed: one of api, worker, all)" in entry["error"]


def instances(service: Service) -> set[object]:
    """The processes that answered GetDistrict (from the access log)."""
    return {e["instance"] for e in service.events("rpc") if str(e["rpc"]).endswith("GetDistrict")}


def started_get_district(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "grpc_server_started_total"
        and sample.labels.get("grpc_method") == "GetDistrict"
    )


async def test_grpc_processes_share_one_port_and_stop_together(tmp_path: Path) -> None:
    # No DATABASE_URL: the parent alone starts the embedded Postgres for both children.
    service = Service(
        tmp_path / "service.log",
        GRPC_PROCESSES="2",
        METRICS_PORT=str(free_port()),
        WRITEBACK_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL="",
    )
    await service.start()
    assert service.proc is not None
    try:
        # The port answers once the first child listens; the second may still be starting.
        await service.logged("service_started", 2)
        for _ in range(20):
            # A channel of its own (no shared subchannel): a new connection each time.
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{service.port}",
                options=[("grpc.use_local_subchannel_pool", 1)],
                interceptors=[BearerToken(TEST_ADMIN_TOKEN)],
            ) as channel:
                stub = writeback_pb2_grpc.WritebackServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetDistrict(pb.GetDistrictRequest(district_id="nobody"))
                assert err.value.code() is grpc.StatusCode.NOT_FOUND
        # One scrape of the shared metrics port, whichever child answers, counts them all.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{service.env['METRICS_PORT']}/metrics") as response,
        ):
            scraped = await response.text()
        assert started_get_district(scraped) == 20
        [started] = service.events("processes_started")
        children = {f"{socket.gethostname()}:{pid}" for pid in started["pids"]}  # type: ignore[union-attr]
        assert len(children) == 2
    finally:
        code = await service.stop()
    assert code == 0
    assert instances(service) == children
    # Each child drained and stopped by itself: the parent killed none.
    assert {e["instance"] for e in service.events("service_stopped")} == children
    assert service.events("process_killed") == []
    # Migrated once, by the parent, before its children started.
    parent = f"{socket.gethostname()}:{service.proc.pid}"
    assert {e["instance"] for e in service.events("migration_applied")} == {parent}
    for pid in started["pids"]:  # type: ignore[union-attr]
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


async def test_a_killed_process_stops_the_others_and_the_parent_fails(
    own_database: str, tmp_path: Path
) -> None:
    service = Service(tmp_path / "service.log", GRPC_PROCESSES="2", DATABASE_URL=own_database)
    await service.start()
    [started] = service.events("processes_started")
    pids = [int(pid) for pid in started["pids"]]  # type: ignore[union-attr]
    os.kill(pids[0], signal.SIGKILL)
    assert service.proc is not None
    assert await asyncio.wait_for(service.proc.wait(), timeout=30) == 1
    [exited] = service.events("process_exited")
    assert (exited["pid"], exited["exit_code"]) == (pids[0], -signal.SIGKILL)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[1], 0)


async def test_a_process_that_does_not_stop_is_killed_and_the_parent_fails(
    own_database: str, tmp_path: Path
) -> None:
    service = Service(
        tmp_path / "service.log",
        GRPC_PROCESSES="2",
        DATABASE_URL=own_database,
        SHUTDOWN_GRACE_SECONDS="0",
    )
    await service.start()
    await service.logged("service_started", 2)
    [started] = service.events("processes_started")
    stuck = int(started["pids"][0])  # type: ignore[index]
    os.kill(stuck, signal.SIGSTOP)  # it cannot act on SIGTERM
    assert await service.stop() == 1
    [killed] = service.events("process_killed")
    assert killed["pid"] == stuck
    assert len(service.events("service_stopped")) == 1  # the other one drained


async def test_several_processes_refuse_a_port_in_use(own_database: str, tmp_path: Path) -> None:
    service = Service(tmp_path / "service.log", GRPC_PROCESSES="2", DATABASE_URL=own_database)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", service.port))
        taken.listen()
        await service.start(ready=False)
        assert service.proc is not None
        assert await asyncio.wait_for(service.proc.wait(), timeout=60) == 1
    [failed] = service.events("startup_failed")
    assert "the port is in use" in str(failed["error"])
    assert service.events("processes_started") == []
