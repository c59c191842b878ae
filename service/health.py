"""grpc.health.v1 answers that follow what the service can actually do: SERVING only while
Postgres answers and the delivery worker's claim loop goes round; NOT_SERVING from the
moment shutdown starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from grpc_health.v1 import health, health_pb2

log = structlog.get_logger("service")

# A probe every second with a one-second timeout: a load balancer polling every few seconds
# sees an outage within its next poll, and the probe costs one trivial query a second.
PROBE_EVERY = 1.0
PROBE_TIMEOUT = 1.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthWatch:
    """Keeps the overall health ("") and each of ``services`` at SERVING or NOT_SERVING,
    re-judged every :data:`PROBE_EVERY` seconds from ``database`` (does Postgres answer
    within the timeout) and ``delivery`` (is the worker's loop alive)."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: list[str],
        *,
        database: Callable[[float], Awaitable[bool]],
        delivery: Callable[[], bool],
    ) -> None:
        self._servicer = servicer
        self._names = ["", *services]
        self._database = database
        self._delivery = delivery
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Judge once now, then keep judging in the background."""
        await self._judge()
        self._task = asyncio.create_task(self._run(), name="health-watch")

    async def draining(self) -> None:
        """Shutdown has begun: NOT_SERVING for good, whatever the probes say."""
        await self.stop()
        await self._servicer.enter_graceful_shutdown()
        log.info("health_not_serving", reason="shutting down")

    async def stop(self) -> None:
        """Stop judging."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY)
            await self._judge()

    async def _judge(self) -> None:
        database = await self._database(PROBE_TIMEOUT)
        delivery = self._delivery()
        serving = database and delivery
        if serving == self._serving:
            return
        for name in self._names:
            await self._servicer.set(name, _SERVING if serving else _NOT_SERVING)
        if serving:
            if self._serving is not None:
                log.info("health_serving")
        else:
            log.warning("health_not_serving", database_reachable=database, delivery_alive=delivery)
        self._serving = serving
