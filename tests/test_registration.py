"""The server takes every service through its generic handler: grpc.aio's server waits on
one pending request per registered method at every call that arrives, so a call's cost
would grow with the size of the API (24 futures per call before)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import Server


async def test_each_arriving_call_waits_on_one_pending_request(
    server: Server, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[int] = []
    real_wait = asyncio.wait

    def counting_wait(fs: Iterable[Awaitable[Any]], **kwargs: Any) -> Any:
        futures = list(fs)
        # grpc's server loop waits on its tasks asking the core for the next call
        # (_request_call, _request_registered_call).
        if any("_request" in repr(f) for f in futures):
            waits.append(len(futures))
        return real_wait(futures, **kwargs)

    monkeypatch.setattr(asyncio, "wait", counting_wait)
    health_stub = health_pb2_grpc.HealthStub(channel)
    # The first call ends the wait that began before the patch; the next ones are seen.
    for _ in range(3):
        await health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert waits, "the server's loop never waited on its pending requests"
    assert max(waits) == 1
