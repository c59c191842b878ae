"""Prometheus metrics on METRICS_PORT: RED per RPC, PowerSchool calls, the delivery queue,
the breaker, and the example alert rules and dashboard in deploy/ using only what is served."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.metrics import MetricsServer, endpoint_template
from simulators.classlink import ClassLinkSimulator
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from tests.helpers import World, authed_channel, fast_settings, local
from tests.test_roster_sync import classlink_district, clever_district

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = {"grpc_service": "writeback.v1.WritebackService", "grpc_method": "SubmitAttendance"}
DAILY = {"upstream": "powerschool", "endpoint": "/ws/attendance/daily_time", "method": "POST"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Scrape:
    """One answer of /metrics: every sample, and every family's type."""

    samples: list[tuple[str, dict[str, str], float]]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
        return sum(v for n, ls, v in self.samples if n == name and labels.items() <= ls.items())

    def labelled(self, name: str, **labels: str) -> list[dict[str, str]]:
        return [ls for n, ls, _ in self.samples if n == name and labels.items() <= ls.items()]

    def series_names(self) -> set[str]:
        """Every series name the service exports, including those no sample uses yet."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
        }
        names = {n for n, _, _ in self.samples}
        for family, kind in self.types.items():
            names |= {family + s for s in suffixes.get(kind, ("",))}
        return names


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    samples, types = [], {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
    return Scrape(samples, types)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


@dataclass
class Metered:
    """A service with its metrics endpoint on, in a database of its own."""

    server: Server
    stub: writeback_pb2_grpc.WritebackServiceStub
    url: str


@pytest.fixture
async def metered(own_database: str) -> AsyncIterator[Metered]:
    port = free_port()
    srv = Server(fast_settings(own_database, metrics_port=port))
    await srv.start()
    try:
        async with authed_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            yield Metered(srv, stub, f"http://127.0.0.1:{port}/metrics")
    finally:
        await srv.stop()


@pytest.fixture
async def big_sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(
        demo_dataset(students_per_school=60), client_id=f"sim-{uuid.uuid4().hex[:8]}"
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


def host_label(sim: PowerSchoolSimulator) -> str:
    return sim.base_url.split("://", 1)[1].rstrip("/")


async def test_a_run_of_100_check_ins_shows_red_powerschool_latency_queue_and_breaker(
    metered: Metered, big_sim: PowerSchoolSimulator
) -> None:
    world = World(metered.stub, big_sim)
    # About 10 s for 100 records: longer than the 5 s the queue figures are cached, so a
    # scrape sees the queue before it drains.
    await world.setup(max_requests_per_second=10)
    before = await scrape(metered.url)
    day = world.school_day()
    students = world.students[:100]

    async def submit(i: int) -> None:
        await world.submit(students[i], local(day, 8, i % 60), wait_for_writeback=False)

    await asyncio.gather(*(submit(i) for i in range(100)))

    depths: list[float] = []

    async def drained() -> bool:
        now = await scrape(metered.url)
        depths.append(now.value("writeback_delivery_queue_depth", district=world.district_id))
        return any(d > 0 for d in depths) and depths[-1] == 0

    await eventually(drained, 60)
    after = await scrape(metered.url)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # RED for SubmitAttendance, in the grpc-ecosystem names and labels.
    assert grew("grpc_server_started_total", grpc_type="unary", **SUBMIT) >= 100
    assert grew("grpc_server_handled_total", grpc_code="OK", **SUBMIT) >= 100
    assert grew("grpc_server_handling_seconds_count", **SUBMIT) >= 100
    buckets = {ls["le"] for ls in after.labelled("grpc_server_handling_seconds_bucket", **SUBMIT)}
    assert {"0.001", "0.0025", "10.0", "+Inf"} <= buckets
    # PowerSchool: one write per check-in, counted for this district, with its latency.
    assert (
        after.value(
            "writeback_upstream_requests_total", district=world.district_id, status="200", **DAILY
        )
        == 100
    )
    assert grew("writeback_upstream_request_duration_seconds_count", **DAILY) >= 100
    assert len(after.labelled("writeback_upstream_request_duration_seconds_bucket", **DAILY)) > 10
    written = after.value(
        "writeback_delivery_attempts_total", district=world.district_id, outcome="written"
    )
    assert written == 100
    assert after.value("writeback_delivery_oldest_pending_seconds", district=world.district_id) == 0
    assert after.value("writeback_db_pool_max_connections") > 0

    # PowerSchool goes down: the breaker opens, and closes once it is back.
    host = host_label(big_sim)
    big_sim.faults.outage = True
    for i, student in enumerate(world.students[100:106]):
        await world.submit(student, local(day, 9, i), wait_for_writeback=False)

    async def breaker(state: str) -> bool:
        now = await scrape(metered.url)
        return (
            now.value("writeback_powerschool_breaker_transitions_total", host=host, state=state) > 0
        )

    await eventually(lambda: breaker("open"))
    assert (await scrape(metered.url)).value("writeback_powerschool_breaker_state", host=host) >= 1
    retries = (await scrape(metered.url)).value(
        "writeback_delivery_attempts_total", district=world.district_id, outcome="retry"
    )
    assert retries > 0
    big_sim.faults.outage = False
    await eventually(lambda: breaker("closed"))
    assert (await scrape(metered.url)).value("writeback_powerschool_breaker_state", host=host) == 0

    # No label anywhere names a student, or carries a secret.
    private = {big_sim.client_secret}
    for s in big_sim.dataset.students:
        private |= {str(s.dcid), str(s.id), s.student_number, s.first_name, s.last_name}
    values = {v for _, labels, _ in after.samples for v in labels.values()}
    assert not values & private


async def test_status_codes_are_counted_as_callers_see_them(metered: Metered) -> None:
    before = await scrape(metered.url)
    missing = f"d-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await metered.stub.GetDistrict(pb.GetDistrictRequest(district_id=missing))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await metered.stub.GetDistrict(pb.GetDistrictRequest(district_id=""))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = await scrape(metered.url)
    method = {"grpc_service": "writeback.v1.WritebackService", "grpc_method": "GetDistrict"}
    for code in ("NotFound", "InvalidArgument"):
        counted = after.value("grpc_server_handled_total", grpc_code=code, **method)
        assert counted - before.value("grpc_server_handled_total", grpc_code=code, **method) == 1
    assert after.value("grpc_server_handled_total", grpc_code="Unknown", **method) == 0


async def test_health_and_reflection_are_counted_too(metered: Metered) -> None:
    before = await scrape(metered.url)
    async with authed_channel(f"127.0.0.1:{metered.server.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.read()
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.OK
    after = await scrape(metered.url)
    for grpc_type, service, method in (
        ("unary", "grpc.health.v1.Health", "Check"),
        ("bidi_stream", "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"),
    ):
        labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}
        for name in ("grpc_server_started_total", "grpc_server_handled_total"):
            assert after.value(name, **labels) - before.value(name, **labels) == 1, name
        assert after.value("grpc_server_handled_total", grpc_code="OK", **labels) >= 1


def test_endpoints_are_templated_without_identifiers() -> None:
    assert endpoint_template("/ws/schema/table/attendance/48213") == (
        "/ws/schema/table/attendance/{id}"
    )
    assert endpoint_template("/v3.0/users") == "/v3.0/users"
    assert endpoint_template("/v3.0/districts/5f0c1e2d3b4a596877665544/users") == (
        "/v3.0/districts/{id}/users"
    )
    assert endpoint_template("/ims/oneroster/v1p1/students") == "/ims/oneroster/v1p1/students"
    assert endpoint_template("/ws/schema/query/com.pearson.core.student.student_dcid_id_map") == (
        "/ws/schema/query/com.pearson.core.student.student_dcid_id_map"
    )


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(?:grpc_server|writeback)_[a-z0-9_]+", expression))


async def test_alert_rules_and_dashboard_use_only_exported_metrics(metered: Metered) -> None:
    exported = (await scrape(metered.url)).series_names()
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert len(alerts) >= 4
    for name, rule in alerts.items():
        used = metric_names(rule["expr"])
        assert used, name
        assert used <= exported, f"{name}: {sorted(used - exported)}"
        assert rule["annotations"]["summary"], name
    dashboard = json.loads((ROOT / "deploy/grafana/writeback.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 4
    for expr in exprs:
        used = metric_names(expr)
        assert used, expr
        assert used <= exported, sorted(used - exported)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize("metrics", [True, False], ids=["METRICS_PORT=free", "METRICS_PORT=0"])
async def test_python_m_service_serves_metrics_only_when_asked(
    database_url: str, metrics: bool
) -> None:
    grpc_port, metrics_port = free_port(), free_port() if metrics else 0
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        "SYNC_SCHEDULER": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with authed_channel(f"127.0.0.1:{grpc_port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        if metrics:
            assert listening_ports(proc.pid) == {grpc_port, metrics_port}
            served = await scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            assert "grpc_server_started" in served.types
            # One process: prometheus-client's own process and runtime metrics come too.
            assert {"process_cpu_seconds", "python_gc_objects_collected"} <= set(served.types)
        else:
            assert listening_ports(proc.pid) == {grpc_port}
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert proc.returncode == 0


async def start_service(env: dict[str, str], grpc_port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", env=env, stderr=asyncio.subprocess.PIPE
    )
    async with authed_channel(f"127.0.0.1:{grpc_port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
    return proc


async def stop_service(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), timeout=30)


async def test_processes_sharing_a_multiprocess_dir_share_the_port_and_report_together(
    database_url: str, tmp_path: Path
) -> None:
    """Two processes on one host, one metrics port: whichever answers a scrape reports both
    (their RPCs summed, their pools summed), and a stopped process's pool leaves the sum."""
    metrics_port, shared = free_port(), tmp_path / "prometheus"
    shared.mkdir()
    ports = [free_port(), free_port()]
    base = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "DB_POOL_SIZE": "3",
        "SYNC_SCHEDULER": "false",
    }
    procs = [await start_service({**base, "GRPC_PORT": str(p)}, p) for p in ports]
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    method = {"grpc_service": "writeback.v1.WritebackService", "grpc_method": "ListDistricts"}
    try:
        for port, calls in zip(ports, (3, 5), strict=True):
            async with authed_channel(f"127.0.0.1:{port}") as channel:
                stub = writeback_pb2_grpc.WritebackServiceStub(channel)
                for _ in range(calls):
                    await stub.ListDistricts(pb.ListDistrictsRequest())
        for _ in range(8):  # the kernel spreads these over both processes
            scraped = await scrape(url)
            assert scraped.value("grpc_server_handled_total", grpc_code="OK", **method) == 8
            assert scraped.value("writeback_db_pool_max_connections") == 6
        await stop_service(procs[0])

        async def one_pool_left() -> bool:
            return (await scrape(url)).value("writeback_db_pool_max_connections") == 3

        await eventually(one_pool_left, 10)
        assert (await scrape(url)).value("grpc_server_handled_total", **method) == 8
    finally:
        for proc in procs:
            await stop_service(proc)


async def test_a_taken_metrics_port_stops_the_service_before_it_opens_a_database(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "WRITEBACK_DATA_DIR": str(tmp_path / "data"),
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(free_port()),
            "METRICS_PORT": str(port),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode != 0
    assert f"cannot bind METRICS_PORT {port}: Address already in use" in stderr.decode()
    assert not (tmp_path / "data").exists()


async def test_roster_syncs_show_their_schedule_last_success_and_roster_calls(
    metered: Metered,
    sim: PowerSchoolSimulator,
    clever: CleverSimulator,
    classlink: ClassLinkSimulator,
) -> None:
    started = time.time()
    by_source = {}
    every_hour = Duration(seconds=3600)
    for source, students in (
        ("clever", "/v3.0/users"),
        ("classlink", "/ims/oneroster/v1p1/students"),
    ):
        world = World(metered.stub, sim)
        if source == "clever":
            await clever_district(world, clever, sync_interval=every_hour)
        else:
            await classlink_district(world, classlink, sync_interval=every_hour)
        await metered.stub.SyncRoster(pb.SyncRosterRequest(district_id=world.district_id))
        by_source[source] = (world.district_id, students)
    scraped = await scrape(metered.url)
    for source, (district, students) in by_source.items():
        assert scraped.value("writeback_roster_sync_interval_seconds", district=district) == 3600
        last = scraped.value(
            "writeback_roster_sync_last_success_timestamp_seconds", district=district
        )
        assert started <= last <= time.time()
        assert scraped.value("writeback_roster_sync_last_duration_seconds", district=district) > 0
        calls = scraped.value(
            "writeback_upstream_requests_total",
            upstream=source,
            endpoint=students,
            status="200",
            district=district,
        )
        assert calls >= 1, source


async def test_a_scrape_answers_at_once_when_postgres_does_not() -> None:
    async def hanging() -> list[Any]:
        await asyncio.sleep(60)
        return []

    port = free_port()
    server = MetricsServer("127.0.0.1", port, snapshot=hanging, pool=lambda: (0, 0, 0), timeout=0.5)
    await server.start()
    try:
        began = time.monotonic()
        scraped = await scrape(f"http://127.0.0.1:{port}/metrics")
        assert time.monotonic() - began < 3
        assert scraped.value("writeback_stats_up") == 0
        assert "grpc_server_started" in scraped.types
    finally:
        await server.stop()
