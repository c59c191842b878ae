"""Composition root: builds the pool, adapters, domain and gRPC server, and runs them."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from writeback.v1 import writeback_pb2, writeback_pb2_grpc

from service.api import (
    AccessLogInterceptor,
    LimitsInterceptor,
    MetricsInterceptor,
    WritebackServicer,
)
from service.config import Settings
from service.domain import (
    AttendanceService,
    Backoff,
    ConnectionChecker,
    Deliverer,
    DeliveryWorker,
    DistrictService,
    MappingDoctor,
    Politeness,
    RosterSync,
    StudentResolver,
    SyncJobs,
    SyncScheduler,
    WorkerSettings,
)
from service.logs import configure
from service.metrics import DomainMetrics, MetricsServer
from service.powerschool import PowerSchoolPool, load_plugin
from service.roster_pool import RosterPool
from service.store import (
    AttendanceStore,
    DistrictFigures,
    DistrictStore,
    EmbeddedPostgres,
    FiguresStore,
    StudentStore,
    SyncJobStore,
    SyncStateStore,
    WorkerRegistry,
    open_pool,
)

log = structlog.get_logger("service")
SERVICE_NAME = writeback_pb2.DESCRIPTOR.services_by_name["WritebackService"].full_name
# A scrape waits at most this long for Postgres' figures (queue, roster schedule).
_METRICS_QUERY_TIMEOUT = 2.0


class Server:
    """The whole service in one object: ``await start()``, then ``await stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port: int | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._pool: asyncpg.Pool | None = None
        self._powerschool = PowerSchoolPool(
            timeout=settings.powerschool_timeout,
            limit=settings.powerschool_connections,
            limit_per_host=settings.powerschool_connections_per_host,
        )
        self._grpc: grpc.aio.Server | None = None
        self._rosters = RosterPool(page_size=settings.roster_page_size)
        self._scheduler: SyncScheduler | None = None
        self._sync_jobs: SyncJobs | None = None
        self.worker: DeliveryWorker | None = None
        self._health = health.aio.HealthServicer()
        self._metrics: MetricsServer | None = None

    async def start(self) -> int:
        """Open the database (embedded if no URL), migrate, and serve; returns the port."""
        if self.settings.metrics_port:
            # First, so a taken port stops the start before a database is opened.
            await self._serve_metrics()
        dsn = self.settings.database_url
        if not dsn:
            self._embedded = EmbeddedPostgres(self.settings.data_dir / "postgres")
            dsn = await asyncio.to_thread(self._embedded.start)
        self._pool = await open_pool(dsn, size=self.settings.db_pool_size)
        if self._metrics is not None:
            self._metrics.record_pool()

        district_store = DistrictStore(self._pool)
        student_store = StudentStore(self._pool)
        record_store = AttendanceStore(self._pool, dsn)
        districts = DistrictService(district_store)
        resolver = StudentResolver(student_store, self._powerschool)
        deliverer = Deliverer(resolver, self._powerschool, record_store)
        settings = self.settings
        observer = DomainMetrics()
        self.worker = DeliveryWorker(
            records=record_store,
            workers=WorkerRegistry(self._pool),
            districts=districts,
            deliverer=deliverer,
            politeness=Politeness(
                breaker_threshold=settings.breaker_threshold,
                breaker_cooldown=settings.breaker_cooldown,
                breaker_max_cooldown=settings.breaker_max_cooldown,
                observer=observer,
            ),
            observer=observer,
            settings=WorkerSettings(
                concurrency=settings.worker_concurrency,
                lease=settings.delivery_lease_seconds,
                poll=settings.delivery_poll_seconds,
                max_age=settings.delivery_max_age_hours * 3600,
                backoff=Backoff(
                    settings.delivery_backoff_base,
                    settings.delivery_backoff_cap,
                    settle=settings.powerschool_timeout,
                ),
                grace=settings.shutdown_grace,
            ),
        )
        attendance = AttendanceService(districts, resolver, record_store, self.worker)
        sync_state = SyncStateStore(self._pool)
        roster_sync = RosterSync(districts, student_store, sync_state, resolver, self._rosters)
        self._sync_jobs = SyncJobs(roster_sync, districts, SyncJobStore(self._pool), sync_state)
        doctor = MappingDoctor(districts, student_store, self._powerschool, sync_state)
        checker = ConnectionChecker(
            districts, self._powerschool, self._rosters, load_plugin(), sync_state
        )

        limits = LimitsInterceptor(
            max_receive_bytes=settings.grpc_max_receive_bytes,
            rate=settings.caller_rate_limit,
            default_deadline=settings.rpc_default_deadline,
            max_deadline=settings.rpc_max_deadline,
        )
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(), AccessLogInterceptor(), limits],
            options=[("grpc.max_receive_message_length", settings.grpc_max_receive_bytes)],
        )
        writeback_pb2_grpc.add_WritebackServiceServicer_to_server(
            WritebackServicer(
                districts=districts,
                resolver=resolver,
                attendance=attendance,
                roster_sync=roster_sync,
                sync_jobs=self._sync_jobs,
                doctor=doctor,
                checker=checker,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        self.port = server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        if not self.port:
            raise SystemExit(f"cannot bind gRPC port {self.settings.grpc_port}")
        await server.start()
        self._grpc = server
        self.worker.start()
        if self.settings.run_scheduler:
            self._scheduler = SyncScheduler(
                self._sync_jobs,
                district_store,
                poll=self.settings.sync_poll_seconds,
                full_sync_interval=self.settings.full_sync_interval,
            )
            self._scheduler.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("service_started", port=self.port, embedded_postgres=self._embedded is not None)
        return self.port

    async def _serve_metrics(self) -> None:
        async def figures() -> list[DistrictFigures]:
            if self._pool is None:
                raise RuntimeError("the database is not open yet")
            return await FiguresStore(self._pool).districts()

        def pool() -> tuple[int, int, int]:
            if self._pool is None:
                return 0, 0, 0
            return self._pool.get_size(), self._pool.get_idle_size(), self._pool.get_max_size()

        self._metrics = MetricsServer(
            self.settings.grpc_host,
            self.settings.metrics_port,
            snapshot=figures,
            pool=pool,
            timeout=_METRICS_QUERY_TIMEOUT,
        )
        await self._metrics.start()

    async def wait(self) -> None:
        """Block until the gRPC server stops."""
        if self._grpc is not None:
            await self._grpc.wait_for_termination()

    async def stop(self) -> None:
        """Report NOT_SERVING; let in-flight RPCs and deliveries finish within the shutdown
        grace, hand unfinished deliveries to the other processes; then close everything."""
        if self._grpc is not None:
            await self._health.enter_graceful_shutdown()
        stopping = []
        if self._grpc is not None:
            stopping.append(self._grpc.stop(self.settings.shutdown_grace))
        if self.worker is not None:
            stopping.append(self.worker.stop())
        await asyncio.gather(*stopping)
        self._grpc, self.worker = None, None
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        if self._sync_jobs is not None:
            await self._sync_jobs.stop()
            self._sync_jobs = None
        await self._rosters.close()
        await self._powerschool.close()
        if self._metrics is not None:
            await self._metrics.stop()
            self._metrics = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None
        log.info("service_stopped")


async def serve(settings: Settings | None = None) -> None:
    """Run the service until SIGINT or SIGTERM."""
    settings = settings or Settings.from_env()
    configure(settings.log_level, settings.log_format)
    server = Server(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
