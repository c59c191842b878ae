"""Composition root: builds the pool, adapters, domain and gRPC server, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from writeback.v1 import writeback_pb2, writeback_pb2_grpc

from service import tracing
from service.api import WritebackServicer, generic_only, interceptors, reflection
from service.config import Settings, parse_allowlist
from service.domain import (
    AttendanceService,
    Audit,
    Backoff,
    Callers,
    ConnectionChecker,
    Deliverer,
    DeliveryElsewhere,
    DeliveryWorker,
    DistrictService,
    MappingDoctor,
    Politeness,
    RosterSync,
    StudentCache,
    StudentResolver,
    SyncJobs,
    SyncScheduler,
    WorkerSettings,
)
from service.health import HealthWatch
from service.logs import configure
from service.metrics import DomainMetrics, MetricsServer, submit_batch
from service.models import Caller, CallerRole
from service.outbound import OutboundPolicy
from service.powerschool import PowerSchoolPool, load_plugin
from service.roster_pool import RosterPool
from service.store import (
    AttendanceStore,
    AuditStore,
    CallerStore,
    DatabaseProbe,
    DistrictFigures,
    DistrictStore,
    EmbeddedPostgres,
    FiguresStore,
    Sealer,
    SealError,
    StudentChanges,
    StudentStore,
    SyncJobStore,
    SyncStateStore,
    WorkerRegistry,
    load_keys,
    open_pool,
    reseal,
)

log = structlog.get_logger("service")
SERVICE_NAME = writeback_pb2.DESCRIPTOR.services_by_name["WritebackService"].full_name
# A scrape waits at most this long for Postgres' figures (queue, roster schedule).
_METRICS_QUERY_TIMEOUT = 2.0
# The claim loop goes round every DELIVERY_POLL_SECONDS at most; one that has not for this
# long (or three polls, if longer) is stuck, and this process delivers nothing.
_LOOP_STALE_AFTER = 10.0


def cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (say, the port is in use), or None. Asked
    before gRPC binds, whose own failure is an unstructured line on stderr."""
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    for family, kind, proto, _, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC does: a connection of an earlier run in TIME_WAIT does not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                in_use = exc.errno == errno.EADDRINUSE
                return "the port is in use" if in_use else exc.strerror or "bind refused"
    return None


class StartupError(Exception):
    """The service cannot start (database unreachable, port taken); the message says why
    and never carries the database URL."""


# The file `make run` leaves in the data directory for the CLI and the demo.
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105  (a file name)
# The author of what the service does by itself, in the audit trail.
_SERVICE_ACTOR = Caller(caller_id="", name="service", role=CallerRole.ADMIN, all_districts=True)


class Server:
    """The whole service in one object: ``await start()``, then ``await stop()``."""

    def __init__(self, settings: Settings, *, embedded_url: str | None = None) -> None:
        """``embedded_url``: the embedded Postgres (``DATABASE_URL`` unset) is already
        running there, started by a supervising process; this one neither starts nor stops
        it."""
        self.settings = settings
        self.port: int | None = None
        self._embedded_url = embedded_url
        self._embedded: EmbeddedPostgres | None = None
        self._pool: asyncpg.Pool | None = None
        self._policy = OutboundPolicy(
            allow_insecure=settings.allow_insecure_upstreams,
            allowlist=parse_allowlist(settings.upstream_allowlist),
        )
        self._powerschool = PowerSchoolPool(
            policy=self._policy,
            timeout=settings.powerschool_timeout,
            limit=settings.powerschool_connections,
            limit_per_host=settings.powerschool_connections_per_host,
        )
        self._grpc: grpc.aio.Server | None = None
        self._rosters = RosterPool(policy=self._policy, page_size=settings.roster_page_size)
        self._scheduler: SyncScheduler | None = None
        self._sync_jobs: SyncJobs | None = None
        self.worker: DeliveryWorker | None = None
        self._health = health.aio.HealthServicer()
        self._metrics: MetricsServer | None = None
        self._probe: DatabaseProbe | None = None
        self._watch: HealthWatch | None = None
        self._changes: StudentChanges | None = None

    async def start(self) -> int:
        """Open the database (embedded if no URL), migrate, and serve; returns the port.
        Raises :class:`StartupError` (having closed whatever it opened) if the secret key,
        the metrics port, the database or the gRPC port is not usable."""
        try:
            return await self._start()
        except BaseException:
            await self._close()
            raise

    async def _start(self) -> int:
        sealer = _sealer(self.settings)
        if self.settings.metrics_port:
            # First, so a taken port stops the start before a database is opened.
            await self._serve_metrics()
        dsn = self.settings.database_url or self._embedded_url
        if not dsn:
            self._embedded = EmbeddedPostgres(self.settings.data_dir / "postgres")
            dsn = await asyncio.to_thread(self._embedded.start)
        self._pool = await _open(dsn, self.settings.db_pool_size, sealer)
        if self._metrics is not None:
            self._metrics.record_pool()

        self._changes = changes = StudentChanges(dsn)
        district_store = DistrictStore(self._pool, sealer, changes)
        student_store = StudentStore(self._pool, changes)
        record_store = AttendanceStore(
            self._pool,
            dsn,
            batch_rows=self.settings.submit_batch_max_rows,
            batch_wait=self.settings.submit_batch_wait_ms / 1000,
            on_batch=submit_batch,
        )
        districts = DistrictService(district_store, self._policy)
        student_cache = StudentCache(self.settings.student_cache_size)
        resolver = StudentResolver(student_store, self._powerschool, student_cache)
        await changes.start(districts, student_cache)
        deliverer = Deliverer(resolver, self._powerschool, record_store)
        settings = self.settings
        observer = DomainMetrics()
        worker = DeliveryWorker(
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
        # ROLE=api: this process only queues; the workers of other processes deliver.
        delivers = settings.role != "api"
        queue = worker if delivers else DeliveryElsewhere(record_store)
        attendance = AttendanceService(districts, resolver, record_store, queue)
        sync_state = SyncStateStore(self._pool)
        roster_sync = RosterSync(districts, student_store, sync_state, resolver, self._rosters)
        self._sync_jobs = SyncJobs(roster_sync, districts, SyncJobStore(self._pool), sync_state)
        doctor = MappingDoctor(districts, student_store, self._powerschool, sync_state)
        checker = ConnectionChecker(
            districts, self._powerschool, self._rosters, load_plugin(), sync_state
        )

        audit = Audit(AuditStore(self._pool))
        callers = Callers(
            CallerStore(self._pool), bootstrap_token=self.settings.bootstrap_admin_token
        )
        if self.settings.auth == "off":
            log.warning(
                "auth_off",
                message="AUTH=off: every caller is an admin on every district; not for production",
            )
        elif not self.settings.database_url:
            await _local_admin_token(callers, audit, self.settings.data_dir / ADMIN_TOKEN_FILE)

        servicer = WritebackServicer(
            districts=districts,
            resolver=resolver,
            attendance=attendance,
            roster_sync=roster_sync,
            sync_jobs=self._sync_jobs,
            doctor=doctor,
            checker=checker,
            callers=callers,
            audit=audit,
        )
        bound = await self._serve_grpc(
            servicer if settings.role != "worker" else None,
            callers=None if self.settings.auth == "off" else callers,
        )
        if delivers:
            self.worker = worker
            worker.start()
        if self.settings.run_scheduler and delivers:
            self._scheduler = SyncScheduler(
                self._sync_jobs,
                district_store,
                poll=self.settings.sync_poll_seconds,
                full_sync_interval=self.settings.full_sync_interval,
            )
            self._scheduler.start()
        self._probe = DatabaseProbe(dsn)
        stale = max(_LOOP_STALE_AFTER, 3 * settings.delivery_poll_seconds)
        self._watch = HealthWatch(
            self._health,
            [SERVICE_NAME] if settings.role != "worker" else [],
            database=self._probe.reachable,
            delivery=(lambda: worker.loop_alive(stale)) if delivers else (lambda: True),
        )
        await self._watch.start()
        log.info(
            "service_started",
            role=settings.role,
            delivery=delivers,
            scheduler=self._scheduler is not None,
            port=bound,
            embedded_postgres=not self.settings.database_url,
            tls=bool(self.settings.tls_cert),
            client_certificates=bool(self.settings.tls_client_ca),
            auth=self.settings.auth,
            # "uvloop" or "asyncio": which loop serves (UVLOOP).
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        return bound

    async def _serve_grpc(
        self, servicer: WritebackServicer | None, *, callers: Callers | None
    ) -> int:
        """Serve the API (unless ``servicer`` is None: ROLE=worker), health and reflection;
        returns the bound port, or :class:`StartupError` when the port cannot be listened
        on."""
        settings = self.settings
        server = grpc.aio.server(
            interceptors=server_interceptors(settings, callers),
            options=[
                ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
                # grpcio turns SO_REUSEPORT on by default: a second process on the same
                # port would start silently and take half the connections.
                ("grpc.so_reuseport", int(settings.grpc_reuse_port)),
            ],
        )
        names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        adding = generic_only(server)
        if servicer is not None:
            writeback_pb2_grpc.add_WritebackServiceServicer_to_server(servicer, adding)
            names.insert(0, SERVICE_NAME)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, adding)
        reflection.enable(names, adding)
        host, port = self.settings.grpc_host, self.settings.grpc_port
        address = f"{host}:{port}"
        problem = None if self.settings.grpc_reuse_port else cannot_listen(host, port)
        bound = 0
        if problem is None:
            with contextlib.suppress(RuntimeError):  # grpcio raises, or returns 0
                bound = _bind(server, self.settings)
            problem = None if bound else "gRPC could not bind it"
        if problem is not None:
            raise StartupError(
                f"cannot listen on {address}: {problem} (GRPC_REUSE_PORT=true lets several"
                " processes share a port)"
            )
        self.port = bound
        await server.start()
        self._grpc = server
        return bound

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
        try:
            await self._metrics.start()
        except SystemExit as exc:  # the port is taken: said in the one startup_failed line
            raise StartupError(str(exc.code)) from None

    async def wait(self) -> None:
        """Block until the gRPC server stops."""
        if self._grpc is not None:
            await self._grpc.wait_for_termination()

    async def stop(self, *, drain: float = 0.0) -> None:
        """Report NOT_SERVING at once and keep serving for ``drain`` seconds, so load
        balancers see the health change and stop sending; then stop accepting, let in-flight
        RPCs and deliveries finish within the shutdown grace, hand unfinished deliveries to
        the other processes, and close everything."""
        if self._watch is not None:
            await self._watch.draining()
        if self._grpc is not None and drain > 0:
            log.info("service_draining", drain_s=drain)
            await asyncio.sleep(drain)
        await self._close()
        log.info("service_stopped")

    async def _close(self) -> None:
        """Stop and close whatever has been started, in dependency order."""
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        stopping = []
        if self._grpc is not None:
            stopping.append(self._grpc.stop(self.settings.shutdown_grace))
        if self.worker is not None:
            stopping.append(self.worker.stop())
        await asyncio.gather(*stopping)
        self._grpc, self.worker = None, None
        if self._changes is not None:
            await self._changes.stop()
            self._changes = None
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
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._pool is not None:
            try:
                # close() waits for every connection to be released; one still held (a
                # task that ignored cancellation) must not keep the process from exiting.
                async with asyncio.timeout(max(self.settings.shutdown_grace, 1.0)):
                    await self._pool.close()
            except TimeoutError:
                log.warning("database_pool_terminated")
                self._pool.terminate()
            self._pool = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None


async def _open(dsn: str, size: int, sealer: Sealer) -> asyncpg.Pool:
    """The migrated pool, or :class:`StartupError` saying why not (never the URL)."""
    try:
        return await open_pool(dsn, size=size, sealer=sealer)
    except SealError as exc:
        raise StartupError(exc.message) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The class only: a driver's message may carry connection details.
        raise StartupError(f"cannot reach the database ({type(exc).__name__})") from None


async def prepare(settings: Settings, embedded_url: str | None = None) -> None:
    """What must happen once before several processes start on one database: migrate
    (and seal plaintext secrets), and on the embedded database keep the local admin token
    file working. Raises :class:`StartupError` like :meth:`Server.start`."""
    sealer = _sealer(settings)
    pool = await _open(settings.database_url or embedded_url or "", 2, sealer)
    try:
        if settings.auth != "off" and not settings.database_url:
            audit = Audit(AuditStore(pool))
            callers = Callers(CallerStore(pool), bootstrap_token=settings.bootstrap_admin_token)
            await _local_admin_token(callers, audit, settings.data_dir / ADMIN_TOKEN_FILE)
    finally:
        await pool.close()


def _sealer(settings: Settings) -> Sealer:
    """The sealer for district secrets, or :class:`StartupError` saying which key to
    configure."""
    embedded = None if settings.database_url else settings.data_dir
    try:
        return Sealer(load_keys(settings.secret_key, settings.secret_key_file, embedded))
    except ValueError as exc:
        raise StartupError(str(exc)) from None


async def rekey(settings: Settings) -> int:
    """Re-seal every district secret with the first configured key (plaintext ones too);
    returns how many values were rewritten. Safe while services run on the same database."""
    sealer = _sealer(settings)
    embedded = None
    dsn = settings.database_url
    if not dsn:
        embedded = EmbeddedPostgres(settings.data_dir / "postgres")
        dsn = await asyncio.to_thread(embedded.start)
    try:
        # Migrates first, so a database from before sealed secrets can be rekeyed too.
        pool = await open_pool(dsn, size=1)
        try:
            async with pool.acquire() as conn:
                return await reseal(conn, sealer, rekey=True)
        except SealError as exc:
            raise SystemExit(f"writeback rekey: {exc.message}") from None
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if not (settings.tls_cert and settings.tls_key):
        return server.add_insecure_port(address)
    ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    credentials = grpc.ssl_server_credentials(
        [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
        root_certificates=ca,
        # With a client CA, a client without a certificate it signed fails the handshake.
        require_client_auth=ca is not None,
    )
    return server.add_secure_port(address, credentials)


async def _local_admin_token(callers: Callers, audit: Audit, path: Path) -> None:
    """Keep a working admin token in ``path`` (mode 0600) for the CLI and the demo on the
    embedded database: made at the first start, and again if the file is lost or its caller
    was revoked or the database was reset."""
    # Small local file reads at start, before the port opens: nothing else waits on the loop.
    if path.is_file() and await callers.verifies(path.read_text().strip()):  # noqa: ASYNC240
        return
    caller, token = await callers.create(
        name=f"local-admin-{os.urandom(4).hex()}",
        role=CallerRole.ADMIN,
        district_ids=(),
        all_districts=True,
        created_by=_SERVICE_ACTOR.name,
    )
    await audit.caller_created(_SERVICE_ACTOR, caller)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".new")
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(scratch, path)
    log.info("local_admin_token_written", path=str(path), caller=caller.name)


def server_interceptors(
    settings: Settings, callers: Callers | None
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors every call meets (:func:`service.api.interceptors`), set from
    ``settings``; ``callers`` None means AUTH=off."""
    return interceptors(
        callers,
        max_receive_bytes=settings.grpc_max_receive_bytes,
        rate=settings.caller_rate_limit,
        default_deadline=settings.rpc_default_deadline,
        max_deadline=settings.rpc_max_deadline,
    )


def configure_logging(settings: Settings) -> None:
    """Logs as a service process writes them: ``LOG_LEVEL``, ``LOG_FORMAT``, ``LOG_FLUSH_MS``."""
    configure(
        settings.log_level,
        settings.log_format,
        cache=True,
        flush_interval=settings.log_flush_ms / 1000,
    )


def event_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None (asyncio's own) with ``UVLOOP=false``. The loop must exist
    before grpc.aio creates anything: it binds to the loop."""
    return uvloop.new_event_loop if settings.uvloop else None


def _freeze_startup_objects() -> None:
    """Leave what the start built (modules, clients, the server: most of the process's
    objects, and they live as long as it does) out of the garbage collector's full passes.
    Each full pass stopped the event loop for all of them: 50-75 ms on the bench's machine
    every 10-90 s under load, a burst of slow answers in an open loop's p99; 3-5 ms
    frozen."""
    gc.collect()  # the start's own garbage goes first, or it would stay for good
    gc.freeze()
    log.info("startup_objects_frozen", objects=gc.get_freeze_count())


def run(settings: Settings, embedded_url: str | None = None) -> None:
    """One service process in an event loop of its own, until SIGTERM or SIGINT (see
    :func:`serve`): ``python -m service``, and each process of ``GRPC_PROCESSES``."""
    with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
        runner.run(serve(settings, embedded_url=embedded_url))


async def serve(settings: Settings | None = None, *, embedded_url: str | None = None) -> None:
    """Run the service until SIGINT or SIGTERM, then drain and stop (see
    :meth:`Server.stop`). A start that fails is one ``startup_failed`` log line and
    ``SystemExit(1)``. ``embedded_url``: as for :class:`Server`."""
    settings = settings or Settings.from_env()
    configure_logging(settings)
    tracing.configure(settings.otlp_endpoint)
    server = Server(settings, embedded_url=embedded_url)
    try:
        await server.start()
    except StartupError as exc:
        # What is wrong, in one line: a traceback would only bury it.
        log.error("startup_failed", error=str(exc))  # noqa: TRY400
        raise SystemExit(1) from None
    except Exception:
        log.exception("startup_failed", error="unexpected error")
        raise SystemExit(1) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # After the handlers: a SIGTERM sent once the port answers must still drain and stop.
    _freeze_startup_objects()
    await stop.wait()
    await server.stop(drain=settings.shutdown_drain)
    tracing.shutdown()
