"""`python -m service.healthcheck`, the container image's HEALTHCHECK: exit 0 only when the
local service's grpc.health.v1 Check answers SERVING."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service import Server

WRITEBACK = "writeback.v1.WritebackService"


async def healthcheck(port: int, *args: str) -> tuple[int, str]:
    """Run the probe as the image does, against ``port``; (exit status, stderr)."""
    env = {**os.environ, "GRPC_HOST": "[::]", "GRPC_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.healthcheck",
        *args,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


@pytest.fixture
async def not_serving() -> AsyncIterator[int]:
    """A Health service on a free port whose writeback service is NOT_SERVING (what the
    service reports while draining or without its database)."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("[::]:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set(WRITEBACK, health_pb2.HealthCheckResponse.NOT_SERVING)
    yield port
    await server.stop(None)


async def test_a_serving_service_passes(server: Server) -> None:
    assert server.port is not None
    assert await healthcheck(server.port) == (0, "")
    assert await healthcheck(server.port, "--service", "") == (0, "")


async def test_not_serving_fails_naming_the_status(not_serving: int) -> None:
    status, stderr = await healthcheck(not_serving)
    assert status == 1
    assert f"'{WRITEBACK}' NOT_SERVING" in stderr
    # Liveness asks about the process as a whole, which is still up.
    assert await healthcheck(not_serving, "--service", "") == (0, "")


async def test_an_unknown_service_name_fails(server: Server) -> None:
    assert server.port is not None
    status, stderr = await healthcheck(server.port, "--service", "no.such.Service")
    assert status == 1
    assert "NOT_FOUND" in stderr


async def test_nothing_listening_fails_within_the_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, stderr = await healthcheck(port, "--timeout", "1")
    assert status == 1
    assert "UNAVAILABLE" in stderr or "DEADLINE_EXCEEDED" in stderr
