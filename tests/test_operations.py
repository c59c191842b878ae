"""What on-call and load balancers rely on: health that follows Postgres and the delivery
loop, a drain on SIGTERM, one port per process unless sharing is asked for, startup failures
as one JSON line, and reflection (v1 and v1alpha) that describes the error details."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.store import EmbeddedPostgres
from simulators.powerschool import PowerSchoolSimulator
from tests.conftest import LogCapture
from tests.helpers import TEST_ADMIN_TOKEN, World, authed_channel, fast_settings, local, ts
from tests.test_process import free_port

SERVICE = "writeback.v1.WritebackService"
DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until ``check()`` holds; fails the test after ``seconds``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def statuses(channel: grpc.aio.Channel) -> set[int]:
    """The health of the whole server ("") and of the writeback service."""
    health = health_pb2_grpc.HealthStub(channel)
    return {
        (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)).status
        for name in ("", SERVICE)
    }


def json_lines(stderr: bytes) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be a JSON object."""
    return [json.loads(line) for line in stderr.decode().splitlines()]


async def start_again(pg: EmbeddedPostgres) -> None:
    """Restart the embedded server; pg_ctl's own 10 s wait can run out on a loaded machine
    (the server then comes up anyway, and the next start attaches to it)."""
    for attempt in range(3):
        try:
            await asyncio.to_thread(pg.start)
        except subprocess.TimeoutExpired:
            if attempt == 2:
                raise
        else:
            return


async def test_health_follows_postgres_down_and_back(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    srv = Server(fast_settings(await asyncio.to_thread(pg.start), run_scheduler=False))
    await srv.start()
    try:
        async with authed_channel(f"127.0.0.1:{srv.port}") as channel:
            assert await statuses(channel) == {SERVING}
            await asyncio.to_thread(pg.stop)

            async def not_serving() -> bool:
                return await statuses(channel) == {NOT_SERVING}

            assert await within(5, not_serving) < 5
            await start_again(pg)

            async def serving() -> bool:
                return await statuses(channel) == {SERVING}

            await within(10, serving)
    finally:
        await srv.stop()
        await asyncio.to_thread(pg.stop)


async def test_health_is_not_serving_when_the_delivery_loop_has_stopped(
    own_database: str,
) -> None:
    srv = Server(fast_settings(own_database, run_scheduler=False))
    await srv.start()
    try:
        async with authed_channel(f"127.0.0.1:{srv.port}") as channel:
            assert await statuses(channel) == {SERVING}
            assert srv.worker is not None
            await srv.worker.stop()  # as if the loop had died: this process delivers nothing

            async def not_serving() -> bool:
                return await statuses(channel) == {NOT_SERVING}

            await within(3, not_serving)
    finally:
        await srv.stop()


async def start_service(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        env={**os.environ, "LOG_FORMAT": "json", "GRPC_HOST": "127.0.0.1", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigterm_drains_then_exits_zero(own_database: str) -> None:
    """SIGTERM: health NOT_SERVING at once, RPCs (on open and new connections) still
    answered for SHUTDOWN_DRAIN_SECONDS, then a clean exit."""
    port = free_port()
    drain = 3.0
    proc = await start_service(
        {
            "DATABASE_URL": own_database,
            "GRPC_PORT": str(port),
            "SHUTDOWN_DRAIN_SECONDS": str(drain),
            "SYNC_SCHEDULER": "false",
        }
    )
    target = f"127.0.0.1:{port}"
    try:
        async with authed_channel(target) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            assert await statuses(channel) == {SERVING}
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            async def not_serving() -> bool:
                return await statuses(channel) == {NOT_SERVING}

            assert await within(1, not_serving) < 1
            answered = 0
            while time.monotonic() - signalled < drain - 0.5:
                await stub.ListDistricts(pb.ListDistrictsRequest(), timeout=2)
                async with authed_channel(target) as fresh:
                    await writeback_pb2_grpc.WritebackServiceStub(fresh).ListDistricts(
                        pb.ListDistrictsRequest(), timeout=2
                    )
                answered += 1
                await asyncio.sleep(0.2)
            assert answered >= 5
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        exited = time.monotonic() - signalled
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert exited >= drain
    events = [line["event"] for line in json_lines(stderr) if line["event"] != "rpc"]
    assert events[-3:] == ["health_not_serving", "service_draining", "service_stopped"]
    assert not any("fork" in line.decode() for line in stderr.splitlines())


async def wait_for_start(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """The process's first line that says it started or failed."""
    assert proc.stderr is not None
    while line := await asyncio.wait_for(proc.stderr.readline(), timeout=30):
        event = json.loads(line)
        if event["event"] in ("service_started", "startup_failed"):
            return dict(event)
    raise AssertionError("the process ended without a word")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=30)


async def test_a_second_instance_on_a_port_in_use_fails_clearly(own_database: str) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": own_database,
        "GRPC_PORT": str(port),
        "SYNC_SCHEDULER": "false",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    first = await start_service(env)
    try:
        assert (await wait_for_start(first))["event"] == "service_started"
        second = await start_service(env)
        stdout, stderr = await asyncio.wait_for(second.communicate(), timeout=30)
        assert second.returncode != 0
        lines = json_lines(stderr)
        assert [(line["event"], line["level"]) for line in lines] == [("startup_failed", "error")]
        assert f"127.0.0.1:{port}" in lines[0]["error"]
        assert "the port is in use" in lines[0]["error"]
        assert stdout == b""
    finally:
        await stop(first)


async def test_grpc_reuse_port_lets_two_processes_share_a_port(own_database: str) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": own_database,
        "GRPC_PORT": str(port),
        "SYNC_SCHEDULER": "false",
        "SHUTDOWN_DRAIN_SECONDS": "0",
        "GRPC_REUSE_PORT": "true",
    }
    first = await start_service(env)
    second = None
    try:
        assert (await wait_for_start(first))["event"] == "service_started"
        second = await start_service(env)
        started = await wait_for_start(second)
        assert (started["event"], started["port"]) == ("service_started", port)
    finally:
        await stop(first)
        if second is not None:
            await stop(second)


async def test_an_unreachable_database_is_one_json_line_and_a_failed_exit() -> None:
    port = free_port()
    proc = await start_service(
        {
            "DATABASE_URL": f"postgresql://writeback:S3CRET@127.0.0.1:{free_port()}/wb",
            "GRPC_PORT": str(port),
        }
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode != 0
    lines = json_lines(stderr)
    assert [(line["event"], line["level"]) for line in lines] == [("startup_failed", "error")]
    assert "cannot reach the database" in lines[0]["error"]
    assert b"S3CRET" not in stderr
    assert stdout == b""


class _V1ReflectionStub:
    """grpc.reflection.v1's one method: the same messages as v1alpha under the v1 name."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.ServerReflectionInfo = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )


def decode_not_found_by_reflection(target: str, version: str) -> dict[str, Any]:
    """Ask for an unknown district and decode the error's details using only what the
    server's reflection (``version``) describes: nothing compiled in for google.rpc."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if version == "v1":
            # grpcio-reflection's client speaks v1alpha only; same messages, v1 method name.
            database._stub = _V1ReflectionStub(channel)
        services = set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)

        def message(name: str) -> Any:
            return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))()

        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetDistrict(
                pb.GetDistrictRequest(district_id="nobody"),
                metadata=(("authorization", f"Bearer {TEST_ADMIN_TOKEN}"),),
            )
        trailers = dict(err.value.trailing_metadata())  # type: ignore[attr-defined]
        status = message("google.rpc.Status")
        status.ParseFromString(trailers["grpc-status-details-bin"])
        details = {}
        for detail in status.details:
            decoded = message(detail.type_url.split("/")[-1])
            decoded.ParseFromString(detail.value)
            details[decoded.DESCRIPTOR.full_name] = decoded
        for name in ("google.rpc.BadRequest", "google.rpc.RetryInfo"):
            pool.FindMessageTypeByName(name)
        return {"services": services, "code": status.code, "details": details}


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_alone_decodes_error_details(server: Server, version: str) -> None:
    got = await asyncio.to_thread(
        decode_not_found_by_reflection, f"127.0.0.1:{server.port}", version
    )
    assert {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= got["services"]
    assert got["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    info = got["details"]["google.rpc.ErrorInfo"]
    assert info.reason
    assert info.domain


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_a_check_in_is_followed_by_its_request_id_from_rpc_to_outcome(
    world: World, logs: LogCapture
) -> None:
    await world.setup()
    student = world.student()
    await world.resolve(sis_id=str(student.dcid))
    request_id = f"front-desk-{uuid.uuid4().hex[:8]}"
    mark = logs.tell()
    world.sim.faults.queue.append((503, None))  # the first delivery call fails: one retry
    call = world.stub.SubmitAttendance(
        pb.SubmitAttendanceRequest(
            district_id=world.district_id,
            idempotency_key=uuid.uuid4().hex,
            student=pb.StudentKey(sis_id=str(student.dcid)),
            event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
            occurred_at=ts(local(world.school_day(), 8, 20)),
            reason="Bus late",
            wait_for_writeback=True,
        ),
        metadata=(("x-request-id", request_id),),
        timeout=20,
    )
    response = await call
    assert dict(await call.trailing_metadata())["x-request-id"] == request_id
    assert response.record.state == pb.ATTENDANCE_STATE_WRITTEN
    record_id = response.record.record_id

    ours = [line for line in lines_of(logs.since(mark)) if line.get("request_id") == request_id]
    instance = f"{socket.gethostname()}:{os.getpid()}"
    assert all(line["instance"] == instance for line in ours)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for line in ours:
        by_event.setdefault(line["event"], []).append(line)
    [rpc] = by_event["rpc"]
    assert (rpc["rpc"], rpc["level"]) == ("/writeback.v1.WritebackService/SubmitAttendance", "info")
    [retry] = by_event["attendance_delivery_retry"]
    [outcome] = by_event["attendance_delivery"]
    for line, level, attempt in ((retry, "warning", 1), (outcome, "info", 2)):
        assert line["level"] == level
        assert (line["record_id"], line["district_id"], line["attempt"]) == (
            record_id,
            world.district_id,
            attempt,
        )
    assert outcome["state"] == "written"
    delivery_calls = [c for c in by_event["powerschool_call"] if c.get("record_id") == record_id]
    assert delivery_calls
    assert {c["level"] for c in delivery_calls} == {"debug"}


async def test_a_request_without_an_id_gets_one_back(
    stub: writeback_pb2_grpc.WritebackServiceStub, logs: LogCapture
) -> None:
    mark = logs.tell()
    call = stub.ListDistricts(pb.ListDistrictsRequest())
    await call
    request_id = dict(await call.trailing_metadata())["x-request-id"]
    assert len(request_id) == 32
    int(request_id, 16)
    # Each call its own.
    others = [stub.ListDistricts(pb.ListDistrictsRequest()) for _ in range(20)]
    await asyncio.gather(*others)
    ids = {dict(await c.trailing_metadata())["x-request-id"] for c in others}
    assert len(ids | {request_id}) == 21
    rpc_lines = [line for line in lines_of(logs.since(mark)) if line["event"] == "rpc"]
    [line] = [line for line in rpc_lines if line.get("request_id") == request_id]
    assert line["rpc"].endswith("/ListDistricts")
    # Lines of calls answered together are rendered together, each with its own call's id.
    assert sorted(line["request_id"] for line in rpc_lines) == sorted(ids | {request_id})


async def answered_and_rendered(
    server: Server, logs: LogCapture, method: str, request: Any
) -> tuple[float, float, dict[str, Any]]:
    """Call ``method`` from another thread while the call's access line takes a second to
    render (holding the event loop, letting go of the GIL): when the caller had its answer,
    when the line was done, and the line."""
    rendered: list[float] = []
    request_id = uuid.uuid4().hex

    def slow_render(_logger: object, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") == "rpc" and event.get("request_id") == request_id:
            time.sleep(1.0)
            rendered.append(time.monotonic())
        return event

    def call() -> float:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            metadata = (
                ("authorization", f"Bearer {TEST_ADMIN_TOKEN}"),
                ("x-request-id", request_id),
            )
            with contextlib.suppress(grpc.RpcError):
                getattr(stub, method)(request, metadata=metadata, timeout=30)
            return time.monotonic()

    mark = logs.tell()
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[*processors[:-1], slow_render, processors[-1]])
    try:
        answered = await asyncio.to_thread(call)
    finally:
        structlog.configure(processors=processors)
    [line] = [
        line
        for line in lines_of(logs.since(mark))
        if line["event"] == "rpc" and line.get("request_id") == request_id
    ]
    assert line["rpc"] == f"/writeback.v1.WritebackService/{method}"
    [done] = rendered
    return answered, done, line


async def test_the_access_line_is_rendered_after_the_answer_is_on_its_way(
    server: Server, logs: LogCapture
) -> None:
    """A caller does not wait for its call's log line."""
    answered, rendered, line = await answered_and_rendered(
        server, logs, "ListDistricts", pb.ListDistrictsRequest()
    )
    assert answered < rendered
    assert line["grpc_code"] == "OK"


async def test_a_failed_calls_line_is_written_before_its_error_is_sent(
    server: Server, logs: LogCapture
) -> None:
    """The service sends an error from inside the call: its line goes first, so a caller (or a
    test) holding the error finds the line."""
    answered, rendered, line = await answered_and_rendered(
        server, logs, "GetDistrict", pb.GetDistrictRequest(district_id="nowhere-at-all")
    )
    assert rendered < answered
    assert line["grpc_code"] == "NOT_FOUND"


async def test_a_failed_call_carries_its_request_id_with_the_error_details(
    stub: writeback_pb2_grpc.WritebackServiceStub,
) -> None:
    call = stub.GetDistrict(
        pb.GetDistrictRequest(district_id=f"nowhere-{uuid.uuid4().hex[:6]}"),
        metadata=(("x-request-id", "desk-7"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    trailers = dict(failed.value.trailing_metadata() or ())
    assert trailers["x-request-id"] == "desk-7"
    # The rich details travel beside it, not replaced by it.
    details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert details.details[0].Unpack(info)
    assert info.reason == "DISTRICT_NOT_FOUND"


async def test_make_demo_honours_log_level_and_format(own_database: str) -> None:
    """The demo's own default is warnings only, for humans; LOG_LEVEL and LOG_FORMAT win."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEMO),
        env={
            **os.environ,
            "DATABASE_URL": own_database,
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "json",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"ATTENDANCE_STATE_WRITTEN" in stdout
    lines = json_lines(stderr)  # every line JSON: no console lines, no gRPC warnings
    levels = {line["level"] for line in lines}
    assert {"debug", "info"} <= levels
    assert any(line["event"] == "attendance_delivery" for line in lines)


def check_in(world: World, minute: int) -> pb.SubmitAttendanceRequest:
    return pb.SubmitAttendanceRequest(
        district_id=world.district_id,
        idempotency_key=uuid.uuid4().hex,
        student=pb.StudentKey(sis_id=str(world.student(index=minute % 5).dcid)),
        event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
        occurred_at=ts(local(world.school_day(), 8, minute)),
        reason="Bus late",
        wait_for_writeback=True,
    )


async def test_a_callers_trace_id_reaches_every_line_of_the_delivery(
    world: World, logs: LogCapture
) -> None:
    """No collector configured: nothing is recorded, but the caller's trace context is kept
    with the job and its trace_id is on the RPC's and the delivery's lines."""
    await world.setup()
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    mark = logs.tell()
    response = await world.stub.SubmitAttendance(
        check_in(world, 25),
        metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),),
        timeout=20,
    )
    assert response.record.state == pb.ATTENDANCE_STATE_WRITTEN
    ours = [
        line
        for line in lines_of(logs.since(mark))
        if line.get("record_id") == response.record.record_id or line["event"] == "rpc"
    ]
    events = {line["event"]: line for line in ours if line.get("trace_id") == trace_id}
    assert {"rpc", "attendance_delivery", "powerschool_call"} <= set(events)


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802  (the proto names it)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_traces_are_exported_when_a_collector_is_configured(
    own_database: str, sim: PowerSchoolSimulator
) -> None:
    collector = _Collector()
    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    otlp_port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    port = free_port()
    proc = await start_service(
        {
            "DATABASE_URL": own_database,
            "GRPC_PORT": str(port),
            "SYNC_SCHEDULER": "false",
            "SHUTDOWN_DRAIN_SECONDS": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        }
    )
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    try:
        async with authed_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup()
            response = await world.stub.SubmitAttendance(
                check_in(world, 30),
                metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),),
                timeout=20,
            )
            assert response.record.state == pb.ATTENDANCE_STATE_WRITTEN
        proc.send_signal(signal.SIGTERM)  # spans still buffered are sent on the way out
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await receiver.stop(None)
    assert proc.returncode == 0
    ours = [s for s in collector.spans if s.trace_id.hex() == trace_id]
    by_name = {s.name: s for s in ours}
    rpc = by_name["writeback.v1.WritebackService/SubmitAttendance"]
    delivery = by_name["attendance_delivery"]
    assert rpc.parent_span_id.hex() == parent
    assert delivery.parent_span_id == rpc.span_id
    writes = [
        s for s in ours if s.name.startswith("PowerSchool") and s.parent_span_id == delivery.span_id
    ]
    assert writes, [s.name for s in ours]
    delivered = [
        line
        for line in json_lines(stderr)
        if line["event"] == "attendance_delivery" and line.get("trace_id") == trace_id
    ]
    assert len(delivered) == 1


def test_a_forked_child_logs_under_its_own_pid() -> None:
    script = (
        "import os, sys, structlog\n"
        "from service.logs import configure\n"
        "configure('INFO', 'json', sys.stdout)\n"
        "log = structlog.get_logger('t')\n"
        "log.info('parent_before')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    log.info('child', pid=os.getpid()); sys.stdout.flush(); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "log.info('parent_after', pid=os.getpid())\n"
    )
    run = subprocess.run(  # noqa: S603  (our own interpreter and code)
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    lines = {line["event"]: line for line in lines_of(run.stdout)}
    host = socket.gethostname()
    assert lines["child"]["instance"] == f"{host}:{lines['child']['pid']}"
    assert lines["parent_after"]["instance"] == f"{host}:{lines['parent_after']['pid']}"
    assert lines["parent_before"]["instance"] == lines["parent_after"]["instance"]
    assert lines["child"]["pid"] != lines["parent_after"]["pid"]
