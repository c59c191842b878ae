"""`python -m service` as an operator runs it: health, reflection, JSON logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.store import EmbeddedPostgres
from tests.helpers import authed_channel, failure, fast_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serves_health_and_reflection_and_stops_on_sigterm(database_url: str) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_PORT": str(port), "LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with authed_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "writeback.v1.WritebackService"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = reflection.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            answer = await call.read()
            await call.done_writing()
            names = {s.name for s in answer.list_services_response.service}
            assert {"writeback.v1.WritebackService", "grpc.health.v1.Health"} <= names
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "service_started" in events
    assert events[-1] == "service_stopped"
    # What the start built is left out of the collector's full passes (short GC pauses).
    [frozen] = [line for line in lines if line["event"] == "startup_objects_frozen"]
    assert frozen["objects"] > 10_000


async def test_database_outage_is_unavailable_and_recovers(tmp_path: Path) -> None:
    """Postgres goes away: RPCs answer UNAVAILABLE with RetryInfo (never INTERNAL or
    UNKNOWN); when it is back, the same service carries on."""
    pg = EmbeddedPostgres(tmp_path / "pg")
    srv = Server(fast_settings(pg.start(), run_scheduler=False))
    await srv.start()
    try:
        async with authed_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            request = pb.GetDistrictRequest(district_id="nobody")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetDistrict(request)
            assert err.value.code() is grpc.StatusCode.NOT_FOUND
            await asyncio.to_thread(pg.stop)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetDistrict(request)
            got = failure(err.value)
            assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
            assert got.retry_after
            await asyncio.to_thread(pg.start)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetDistrict(request)
            assert err.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        await srv.stop()
        pg.stop()


async def test_a_stop_is_not_lost_when_the_worker_is_woken_as_it_stops(database_url: str) -> None:
    """Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives just as what it
    waits for finishes (gh-86296): a delivery woken by a NOTIFY as the service stops kept its
    claim loop running and the stop waiting for it for good."""
    srv = Server(fast_settings(database_url, run_scheduler=False, delivery_poll_seconds=30.0))
    await srv.start()
    try:
        worker = srv.worker
        assert worker is not None
        await asyncio.sleep(0.5)  # the claim loop has gone round once and waits to be woken
        worker.wake()
        # The wait ends in this many turns of the loop; the stop arrives between them.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await worker.stop()
    finally:
        async with asyncio.timeout(30):
            await srv.stop()
