"""``make bench``'s own arithmetic: the request body it hands h2load is one gRPC frame of
the message meant, and the figures it reads back from h2load are the ones h2load reported."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up while the class is made.
    sys.modules["bench"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["bench"]


def test_the_h2load_body_is_one_uncompressed_length_prefixed_frame(bench: ModuleType) -> None:
    request = pb.ResolveStudentRequest(
        district_id="d" * 300, key=pb.StudentKey(student_number="S-100")
    )
    body = bench.grpc_frame(request)
    data = request.SerializeToString()
    # Flag 0 (not compressed), then the length as 4 bytes big-endian: 300+ bytes need two.
    assert body[:5] == b"\x00" + len(data).to_bytes(4, "big")
    assert len(data) > 255
    assert pb.ResolveStudentRequest.FromString(bench.unframe(body)) == request


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00\x00", b"\x01\x00\x00\x00\x01x", b"\x00\x00\x00\x00\x02x"],
    ids=["empty", "short header", "compressed flag", "length mismatch"],
)
def test_a_body_that_is_not_one_plain_frame_is_refused(bench: ModuleType, body: bytes) -> None:
    with pytest.raises(ValueError, match="gRPC frame"):
        bench.unframe(body)


H2LOAD_OUT = """\
finished in 2.00s, 2997.50 req/s, 193.18KB/s
requests: 5995 total, 6011 started, 5995 done, 5995 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 5995 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_h2load_figures_come_from_its_summary_and_per_request_log(bench: ModuleType) -> None:
    # 100 requests of 1..100 ms, and one that was not an HTTP 200 (not counted).
    log = "".join(f"17961782574465{i:02d}\t200\t{i * 1000}\n" for i in range(100, 0, -1))
    log += "1796178257446999\t503\t999999\n"
    figures = bench.parse_h2load(H2LOAD_OUT, log)
    assert figures["qps"] == 2997.50
    assert figures["completed"] == 5995
    assert figures["latency_ms"]["p50"] == 50.0
    assert figures["latency_ms"]["p99"] == 99.0
    assert figures["latency_ms"]["max"] == 100.0


async def test_the_front_server_is_the_services_front(bench: ModuleType, tmp_path: Path) -> None:
    """What ``make bench`` reports as "front alone" runs the service's interceptors: a call
    without the token is refused as the service refuses it, one with it is answered, and each
    gets the service's access-log line. The bench's random token may start with "-"; this
    one does."""
    runner = bench.Bench(tmp_path, 1.0)
    runner.token = "-" + runner.token
    front = runner.start_front()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            stub = pb_grpc.WritebackServiceStub(channel)
            request = pb.ResolveStudentRequest(district_id="d1")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ResolveStudent(request)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            answer = await stub.ResolveStudent(
                request, metadata=(("authorization", f"Bearer {runner.token}"),)
            )
            assert answer.student.powerschool_id
    finally:
        runner.stop(front)
    lines = [json.loads(line) for line in front.log.read_text().splitlines()]
    rpc = [(line["grpc_code"], line.get("caller")) for line in lines if line["event"] == "rpc"]
    assert rpc == [("UNAUTHENTICATED", None), ("OK", "bootstrap-admin")]


async def test_each_submit_figure_has_its_own_echo_run_beside_a_drained_backlog(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit ratio's echo figure is measured right before its submits, with the backlog
    of the run before switched off, never reused from another pair."""
    steps: list[str] = []

    async def loadgen(_self: Any, name: str, server: Any, scenario: str, **_: Any) -> Any:
        steps.append(f"{scenario} on {server.name}")
        return {"qps": 1.0}

    async def drain(_bench: Any, server: Any) -> None:
        steps.append(f"drain {server.name}")

    async def writeback_on(_bench: Any, server: Any, district: str) -> None:
        steps.append(f"writeback on {server.name}")

    monkeypatch.setattr(bench.Bench, "loadgen", loadgen)
    monkeypatch.setattr(bench, "_drain_load_district", drain)
    monkeypatch.setattr(bench, "_writeback_on", writeback_on)
    runner = bench.Bench(tmp_path, 1.0)
    runner.echo = bench.Proc("echo", None, 0, tmp_path / "echo.log")
    service = bench.Proc("service", None, 0, tmp_path / "service.log")
    for in_flight in (1, 16, 16):
        await bench._submit_pair(runner, service, "all", in_flight)
    pair = ["drain service", "echo on echo", "writeback on service", "submit on service"]
    assert steps == pair * 3
    # No worker, no delivery: the backlog stays pending, and waiting for it would never end.
    steps.clear()
    await bench._submit_pair(runner, service, "api-alone", 16, delivering=False)
    assert steps == pair[1:]


async def test_each_pair_of_a_figure_submits_in_a_district_of_its_own(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repeats of a submit figure go to the load districts in turn, each district
    stepping back its own submit days: a run's check-ins stay new records, and all of them
    stay within the 400 days a check-in may go back."""
    runs: list[tuple[str, str]] = []

    async def loadgen(self: Any, name: str, server: Any, scenario: str, **kw: Any) -> Any:
        argv = self.loadgen_argv(name, server, scenario, **kw)
        if scenario == "submit":
            runs.append((argv[argv.index("--district") + 1], argv[argv.index("--day") + 1]))
        return {"qps": 1.0}

    async def nothing(*_: Any) -> None:
        return None

    monkeypatch.setattr(bench.Bench, "loadgen", loadgen)
    monkeypatch.setattr(bench, "_drain_load_district", nothing)
    monkeypatch.setattr(bench, "_writeback_on", nothing)
    runner = bench.Bench(tmp_path, 1.0)
    runner.day = "2026-12-01"
    runner.load_district = "d1"
    runner.submit_districts = ["d1", "d2", "d3"]
    runner.echo = bench.Proc("echo", None, 0, tmp_path / "echo.log")
    service = bench.Proc("service", None, 0, tmp_path / "service.log")
    for in_flight in (1, 16):
        await bench._submit_pairs(runner, service, "all", in_flight)
    assert runs == [
        ("d1", "2026-12-01"),
        ("d2", "2026-12-01"),
        ("d3", "2026-12-01"),
        ("d1", "2026-10-06"),
        ("d2", "2026-10-06"),
        ("d3", "2026-10-06"),
    ]


def test_the_figure_is_the_pair_with_the_median_ratio(bench: ModuleType) -> None:
    def pair(echo: float, service: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"qps": echo, "latency_ms": {"p99": echo}}, {
            "qps": service,
            "latency_ms": {"p99": service},
        }

    pairs = [pair(100, 90), pair(100, 70), pair(200, 160)]  # 0.9x, 0.7x, 0.8x
    assert bench.median_pair(pairs, "qps") == 2
    assert bench.pairs_note(pairs, "qps") == (
        "median of 3 alternating echo/service pairs: 0.90x, 0.70x, 0.80x"
    )
    # Of an even count, the lower middle; a pair missing a figure is left out.
    assert bench.median_pair([pair(100, 90), pair(100, 70), (None, None)], "p99") == 1
    assert bench.median_pair([(None, None)], "qps") is None


def test_front_cost_prints_each_interceptors_cost_and_the_access_lines() -> None:
    """`scripts/front_cost.py` runs the service's own interceptor chain: every row a cost,
    and the whole chain, with or without its access line, costs more than the handler cache
    alone (some ten times more; the access line's share, a few microseconds, is within what
    a shared machine's noise moves 300 calls, so it is the script's figure to print, not this
    test's to order)."""
    done = subprocess.run(  # noqa: S603 - our own script, our own arguments
        [sys.executable, str(ROOT / "scripts" / "front_cost.py"), "--calls", "300"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = dict(
        (line[:32].strip(), float(line[32:].split()[0])) for line in done.stdout.splitlines()
    )
    assert list(rows) == [
        "handler cache alone",
        "Metrics",
        "AccessLog",
        "Auth",
        "Auth + Limits",
        "all",
        "all, access line filtered out",
    ]
    assert all(us > 0 for us in rows.values())
    assert rows["all"] > rows["handler cache alone"]
    assert rows["all, access line filtered out"] > rows["handler cache alone"]


async def test_submit_batch_cost_prints_postgres_cost_per_batch_for_each_mode(
    own_database: str,
) -> None:
    """`scripts/submit_batch_cost.py` runs the migrated `submit_batch` both ways, for a batch
    of 1 and of 8, and leaves the function as migrated."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "scripts" / "submit_batch_cost.py"), "--batches", "100"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": own_database},
    )
    lines = done.stdout.splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.split()[:2] == ["batch", "submit_batch"]
    )
    rows = [line.split() for line in lines[header + 1 :]]
    assert [(r[0], " ".join(r[1:-4])) for r in rows] == [
        ("1", "planned at every run"),
        ("1", "kept plans (as migrated)"),
        ("8", "planned at every run"),
        ("8", "kept plans (as migrated)"),
    ]
    assert all(float(r[-4]) > 0 and r[-3] == "us" and float(r[-2]) > 0 for r in rows)
    conn = await asyncpg.connect(own_database)
    try:
        config = await conn.fetchval("SELECT proconfig FROM pg_proc WHERE proname = 'submit_batch'")
    finally:
        await conn.close()
    assert config == ["plan_cache_mode=force_generic_plan"]


async def test_flame_graphs_one_with_native_frames_one_at_the_loads_own_rate(
    bench: ModuleType, tmp_path: Path
) -> None:
    """Two flame graphs per scenario: py-spy pauses the process at every sample to read its
    native frames, so the one with them runs below the load's rate (the echo server at about
    half; the service far lower); the Python-only one is sampled without pausing, and each
    records the rate it ran at."""
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("py-spy is not installed")
    runner = bench.Bench(tmp_path, 1.0)
    echo = runner.start_echo()
    try:
        await runner.flame("echo", echo, "echo")
    finally:
        runner.stop(echo)
    if "flame_echo" not in runner.figures:
        pytest.skip("py-spy could not attach (no ptrace here)")
    assert (tmp_path / "flame-echo.svg").stat().st_size > 0
    assert (tmp_path / "flame-echo-python.svg").stat().st_size > 0
    native, python = runner.figures["flame_echo_qps"], runner.figures["flame_echo_python_qps"]
    assert python > native > 0
