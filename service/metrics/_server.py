"""The ``/metrics`` endpoint: an aiohttp server in the service's event loop.

Figures that live in Postgres (each district's delivery queue, its roster sync schedule and
last success) are read when Prometheus scrapes, at most once per ``cache_seconds`` and within
``timeout`` seconds, so every process reports the same truth and a slow database never hangs a
scrape. With ``PROMETHEUS_MULTIPROC_DIR`` set, the processes of one host share the port
(SO_REUSEPORT) and whichever answers reports all of them, from the files they write there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from service.metrics._metrics import pool_in_use

log = structlog.get_logger("metrics")
_POOL_SAMPLE_SECONDS = 5.0
_ANY_HOST = frozenset({"", "[::]", "::", "0.0.0.0"})  # noqa: S104  (the operator's choice)


def multiprocess_dir() -> str:
    """The directory prometheus-client shares between processes, or "" (single process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


class DistrictRow(Protocol):
    """One district's figures as Postgres holds them at scrape time."""

    @property
    def district_id(self) -> str: ...
    @property
    def queue_depth(self) -> int: ...
    @property
    def oldest_pending_seconds(self) -> float: ...
    @property
    def sync_interval_seconds(self) -> float: ...
    @property
    def last_sync_success(self) -> float | None:
        """Unix time the last successful roster sync finished (None: never)."""

    @property
    def last_sync_duration(self) -> float | None: ...


Snapshot = Callable[[], Awaitable[Sequence[DistrictRow]]]
PoolView = Callable[[], tuple[int, int, int]]
"""The database pool now: (connections open, idle, maximum)."""


class _DistrictCollector:
    """Yields the last snapshot read from Postgres as gauges per district."""

    def __init__(self) -> None:
        self.rows: Sequence[DistrictRow] = []
        self.ok = False

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "writeback_stats_up",
            "1 if the scrape-time read of queue and sync figures from Postgres succeeded.",
            value=1 if self.ok else 0,
        )
        families = {
            name: GaugeMetricFamily(name, text, labels=["district"])
            for name, text in (
                ("writeback_delivery_queue_depth", "Delivery jobs queued (due or waiting)."),
                (
                    "writeback_delivery_oldest_pending_seconds",
                    "Age of the oldest queued delivery job (0 when none).",
                ),
                (
                    "writeback_roster_sync_interval_seconds",
                    "The district's roster sync schedule (0: not scheduled).",
                ),
                (
                    "writeback_roster_sync_last_success_timestamp_seconds",
                    "When the last successful roster sync finished (0: never).",
                ),
                (
                    "writeback_roster_sync_last_duration_seconds",
                    "How long the last successful roster sync took.",
                ),
            )
        }
        for row in self.rows:
            values = {
                "writeback_delivery_queue_depth": row.queue_depth,
                "writeback_delivery_oldest_pending_seconds": row.oldest_pending_seconds,
                "writeback_roster_sync_interval_seconds": row.sync_interval_seconds,
                "writeback_roster_sync_last_success_timestamp_seconds": row.last_sync_success
                or 0.0,
            }
            if row.last_sync_duration is not None:
                values["writeback_roster_sync_last_duration_seconds"] = row.last_sync_duration
            for name, value in values.items():
                families[name].add_metric([row.district_id], value)
        yield up
        yield from families.values()


class _ThisProcess:
    """The process-wide default registry, seen through a registry of the server's own."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class MetricsServer:
    """Serves ``GET /metrics`` on ``host:port`` until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        snapshot: Snapshot,
        pool: PoolView,
        cache_seconds: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self._host = None if host in _ANY_HOST else host.strip("[]")
        self._port = port
        self._snapshot = snapshot
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._districts = _DistrictCollector()
        self._read_at = -float("inf")
        self._reading = asyncio.Lock()
        self._shared = multiprocess_dir()
        self._registry = CollectorRegistry(auto_describe=False)
        if self._shared:
            multiprocess.MultiProcessCollector(self._registry, path=self._shared)  # type: ignore[no-untyped-call]
        else:
            self._registry.register(_ThisProcess())
        self._registry.register(self._districts)
        self._expose = make_aiohttp_handler(self._registry)
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve. Raises SystemExit naming the port when it cannot be bound."""
        if self._shared and not os.access(self._shared, os.W_OK):
            raise SystemExit(
                f"PROMETHEUS_MULTIPROC_DIR={self._shared!r} is not a writable directory"
            )
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self._host, self._port, reuse_port=bool(self._shared) or None
        )
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise SystemExit(
                f"cannot bind METRICS_PORT {self._port}: {reason}; choose a free port, "
                "0 for no metrics, or set PROMETHEUS_MULTIPROC_DIR so processes share it"
            ) from exc
        self._sampler = asyncio.create_task(self._sample_pool(), name="metrics-pool")
        log.info("metrics_serving", port=self._port, multiprocess=bool(self._shared))

    async def stop(self) -> None:
        """Stop serving; in multi-process mode this process's live gauges leave the sum."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._shared:
            multiprocess.mark_process_dead(os.getpid(), self._shared)  # type: ignore[no-untyped-call]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.record_pool()
        await self._read_districts()
        return await self._expose(request)

    def record_pool(self) -> None:
        """Record the database pool's use now (also done every few seconds)."""
        size, idle, max_size = self._pool()
        pool_in_use(size, idle, max_size)

    async def _sample_pool(self) -> None:
        # Every process records its own pool, since in multi-process mode any one may answer.
        while True:
            self.record_pool()
            await asyncio.sleep(_POOL_SAMPLE_SECONDS)

    async def _read_districts(self) -> None:
        async with self._reading:
            if time.monotonic() - self._read_at < self._cache_seconds:
                return
            try:
                async with asyncio.timeout(self._timeout):
                    self._districts.rows = await self._snapshot()
                self._districts.ok = True
            except Exception as exc:  # a scrape reports it as writeback_stats_up 0, never fails
                self._districts.rows, self._districts.ok = [], False
                log.warning("metrics_snapshot_failed", error=type(exc).__name__)
            self._read_at = time.monotonic()
