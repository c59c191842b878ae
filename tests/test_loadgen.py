"""`writeback load`, the load tool callers run: against the bare echo server
(scripts/echo_server.py), a stalling in-test server, and the session's service."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients.loadgen import Options, Result, measure
from service import Server
from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from tests.helpers import TZ, World

ROOT = Path(__file__).resolve().parent.parent


async def run_load(*args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``python -m clients load ARGS``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients", "load", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def load_json(*args: str) -> dict[str, Any]:
    code, out, err = await run_load(*args, "--json", "-")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)  # nothing else on stdout with --json -
    return result


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    """scripts/echo_server.py in its own process; its address."""
    proc = subprocess.Popen(  # noqa: S603 (our own script, our own arguments)
        [sys.executable, str(ROOT / "scripts" / "echo_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def ordered(latency: dict[str, float]) -> bool:
    values = [latency[k] for k in ("p50", "p90", "p99", "p99.9", "max")]
    return values == sorted(values) and values[0] > 0


async def test_closed_loop_merges_the_processes_counts_and_plots(
    echo_server: str, tmp_path: Path
) -> None:
    plot = tmp_path / "latency.png"
    result = await load_json(
        "--target", echo_server, "--scenario", "echo", "--concurrency", "2",
        "--processes", "2", "--duration", "1", "--warmup", "0.2", "--plot", str(plot),
    )  # fmt: skip
    assert (result["scenario"], result["mode"], result["processes"]) == ("echo", "closed", 2)
    assert result["concurrency"] == 2
    assert result["rate"] is None
    parts = result["per_process_completed"]
    assert len(parts) == 2
    assert all(n > 0 for n in parts)
    assert result["completed"] == sum(parts) == result["ok"]
    assert result["errors"] == {}
    assert result["qps"] == pytest.approx(result["completed"] / result["duration_s"], abs=0.1)
    assert ordered(result["latency_ms"])
    assert result["client_cpu_s"] > 0
    assert result["host"]["cpus"] == os.cpu_count()
    png = plot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000


class StallingHealth:
    """A health Check served in the test's own event loop, which the ``stall_at``-th call
    blocks (time.sleep) for half a second: the load tool in the same loop stalls with it,
    as a client paused by GC or an overloaded loop would."""

    def __init__(self) -> None:
        self.calls = 0
        self.stall_at = 0

    async def check(self, _: Any, __: Any) -> health_pb2.HealthCheckResponse:
        self.calls += 1
        if self.calls == self.stall_at:
            time.sleep(0.5)  # noqa: ASYNC251 (blocking the loop is the point)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
async def stalling() -> AsyncIterator[tuple[str, StallingHealth]]:
    handler = StallingHealth()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        handler.check,
                        request_deserializer=health_pb2.HealthCheckRequest.FromString,
                        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                    )
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", handler
    await server.stop(None)


async def test_open_loop_counts_a_stall_against_every_call_it_delayed(
    stalling: tuple[str, StallingHealth],
) -> None:
    target, handler = stalling
    # The 20th call of the run (0.1 s in; the first call is the tool's reachability check).
    handler.calls, handler.stall_at = 0, 21
    opened = await measure(
        Options(target=target, scenario="echo", rate=200, duration=1.0, warmup=0.0)
    )
    lat = opened.latency_ms
    assert opened.counts.ok == opened.counts.completed >= 100
    # About 100 calls were due during the half second, each late by up to 500 ms: the 20
    # due in its first 100 ms took 400 ms or more.
    assert lat["p99"] >= 400
    assert lat["p90"] >= 300
    assert slower_than(opened, 400) >= 15
    handler.calls, handler.stall_at = 0, 21
    closed = await measure(
        Options(target=target, scenario="echo", concurrency=1, duration=1.0, warmup=0.0)
    )
    # The closed loop sent nothing during the stall: it is one slow call among many.
    assert closed.latency_ms["max"] >= 450
    assert 1 <= slower_than(closed, 400) <= 2
    assert closed.counts.completed >= 50


def slower_than(result: Result, ms: float) -> int:
    """How many calls of the result took ``ms`` or longer."""
    return sum(
        step.count_added_in_this_iter_step
        for step in result.histogram.get_recorded_iterator()
        if step.value_iterated_to >= ms * 1000
    )


def students_file(path: Path, world: World) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sis_id", "student_number", "powerschool_id", "school_number"])
        for s in world.students:
            out.writerow([s.dcid, s.student_number, s.id, s.schoolid])
    return path


async def test_resolve_hits_and_misses(world: World, server: Server, tmp_path: Path) -> None:
    await world.setup()
    common = (
        "--target", f"127.0.0.1:{server.port}", "--scenario", "resolve",
        "--district", world.district_id, "--students-file",
        str(students_file(tmp_path / "students.csv", world)),
        # An open loop below the session service's per-caller limit (CALLER_RATE_LIMIT):
        # a closed loop on a cache-fast service reaches it and is answered RATE_LIMITED.
        "--rate", "300", "--duration", "1", "--warmup", "0.3", "--key", "mix",
    )  # fmt: skip
    hits = await load_json(*common)
    assert hits["ok"] == hits["completed"] > 0
    assert hits["errors"] == {}
    assert hits["unexpected_errors"] == {}
    mixed = await load_json(*common, "--miss-share", "0.5")
    assert mixed["ok"] > 0
    assert mixed["misses"] == mixed["errors"]["NOT_FOUND"] == mixed["completed"] - mixed["ok"]
    assert mixed["misses"] > 0
    assert mixed["unexpected_errors"] == {}


@pytest.fixture
async def big_sim() -> AsyncIterator[PowerSchoolSimulator]:
    """Enough students (200) for every submission of a run to be a distinct record."""
    simulator = PowerSchoolSimulator(
        demo_dataset(students_per_school=100), client_id=f"sim-{uuid.uuid4().hex[:8]}"
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


async def test_submit_accepts_records_and_replays(
    stub: writeback_pb2_grpc.WritebackServiceStub,
    big_sim: PowerSchoolSimulator,
    server: Server,
    tmp_path: Path,
) -> None:
    world = World(stub, big_sim)
    await world.setup()
    result = await load_json(
        "--target", f"127.0.0.1:{server.port}", "--scenario", "submit",
        "--district", world.district_id, "--students-file",
        str(students_file(tmp_path / "students.csv", world)),
        "--rate", "100", "--duration", "1", "--warmup", "0", "--replay-share", "0.2",
        "--day", world.school_day().isoformat(),
    )  # fmt: skip
    assert result["mode"] == "open"
    assert result["errors"] == {}
    assert result["ok"] == result["completed"] >= 50
    assert result["replays"] == result["replays_sent"] > 0
    records: list[pb.AttendanceRecord] = []
    token = ""
    while True:
        page = await world.stub.ListAttendance(
            pb.ListAttendanceRequest(district_id=world.district_id, page_size=500, page_token=token)
        )
        records.extend(page.records)
        if not (token := page.next_page_token):
            break
    assert len(records) == result["ok"] - result["replays"]
    assert {r.event for r in records} == {pb.ATTENDANCE_EVENT_LATE_CHECK_IN}  # 200 students first


async def test_rush_resolves_then_checks_in_across_schools(
    stub: writeback_pb2_grpc.WritebackServiceStub,
    big_sim: PowerSchoolSimulator,
    server: Server,
    database_url: str,
    tmp_path: Path,
) -> None:
    world = World(stub, big_sim)
    await world.setup()
    # Each first lookup waits 50 ms for PowerSchool, five times the 10 ms between calls.
    big_sim.faults.latency = 0.05
    result = await load_json(
        "--target", f"127.0.0.1:{server.port}", "--scenario", "rush",
        "--district", world.district_id, "--students-file",
        str(students_file(tmp_path / "students.csv", world)),
        "--rate", "100", "--duration", "1", "--warmup", "0",
        "--day", world.school_day().isoformat(),
    )  # fmt: skip
    assert result["errors"] == {}
    assert result["ok"] == result["completed"] >= 50
    records = (
        await stub.ListAttendance(
            pb.ListAttendanceRequest(district_id=world.district_id, page_size=500)
        )
    ).records
    # One check-in per resolve: half the calls.
    assert len(records) == result["ok"] // 2
    assert {r.school_number for r in records} == {100, 200}
    local = {r.occurred_at.ToDatetime(tzinfo=ZoneInfo(TZ)).time() for r in records}
    assert min(local) >= dtime(8, 0)
    assert max(local) <= dtime(9, 30)
    assert {r.event for r in records} == {pb.ATTENDANCE_EVENT_LATE_CHECK_IN}
    # As at a front desk, each check-in went once its lookup had answered: the student's
    # STUDENTS.ID was saved before the record was.
    db = await asyncpg.connect(database_url)
    try:
        before_lookup = await db.fetchval(
            "SELECT count(*) FROM attendance_records r JOIN students s USING (district_id, "
            "roster_id) WHERE r.district_id = $1 "
            "AND (s.resolved_at IS NULL OR r.created_at < s.resolved_at)",
            world.district_id,
        )
    finally:
        await db.close()
    assert before_lookup == 0


async def test_bad_usage_exits_2_with_the_reason(echo_server: str) -> None:
    code, out, err = await run_load(
        "--target", echo_server, "--scenario", "echo", "--rate", "10", "--concurrency", "2"
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert "give --rate (open loop) or --concurrency (closed loop), not both" in err
    code, _, err = await run_load("--target", echo_server, "--scenario", "flood")
    assert code == 2
    assert "invalid choice: 'flood'" in err
    code, _, err = await run_load(
        "--target", echo_server, "--scenario", "resolve", "--district", "d1"
    )  # fmt: skip
    assert code == 2
    assert "--scenario resolve needs --students-file" in err
    code, _, err = await run_load("--target", "127.0.0.1:1", "--scenario", "echo")
    assert code == 1
    assert "cannot reach 127.0.0.1:1" in err


def test_only_the_load_command_imports_matplotlib() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, clients.__main__; print('matplotlib' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "False"


def test_plot_without_matplotlib_is_refused_before_any_load() -> None:
    # matplotlib is an extra (`writeback[plot]`), not in the service image.
    script = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from clients.__main__ import main\n"
        "sys.argv = ['writeback', 'load', '--target', '127.0.0.1:9', '--scenario', 'echo',"
        " '--duration', '1', '--plot', 'x.png']\n"
        "sys.exit(main())\n"
    )
    run = subprocess.run(  # noqa: S603  (our own interpreter and code)
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr
    assert "writeback[plot]" in run.stderr
