"""LISTEN on a dedicated connection that is watched and re-established when it is lost.

A LISTEN connection that dies (a Postgres restart, a failover, a dropped socket) would
otherwise leave delivery on its polling fallback for good, silently. Here the connection is
watched (asyncpg's termination callback, plus a periodic round trip for a socket that hangs
without closing); while it is down one warning says so and reconnection is retried with
capped backoff. Notifications sent while nobody listened are lost, so once it is back the
listener is called once with an empty payload: look at everything now. ``on_state`` hears
when the connection is lost (False) and when it listens again (True), for whoever must not
trust what it kept while notifications may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog

log = structlog.get_logger("notifications")

_CHECK_EVERY = 5.0
_CONNECT_TIMEOUT = 5.0
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 2.0


class _Supervisor:
    """Keeps one LISTEN connection alive for as long as ``run`` runs."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        name: str,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._name = name
        self._on_state = on_state or (lambda _up: None)
        self._down_since: float | None = None
        self.tried = asyncio.Event()  # set once a first LISTEN has succeeded or failed

    def _callback(self, *args: object) -> None:
        self._on_notify(str(args[-1]))

    async def run(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            try:
                why = await self._session()
            except Exception as exc:  # whatever broke it, the answer is to reconnect
                # The class only: a driver's message may carry connection details.
                why = type(exc).__name__
            finally:
                self.tried.set()
            self._on_state(False)
            if self._down_since is None:
                self._down_since = time.monotonic()
                backoff = _FIRST_BACKOFF
                log.warning(f"{self._name}_notifications_lost", error=why)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _session(self) -> str:
        """Connect and LISTEN until the connection is lost; returns why it was."""
        conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
        try:
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _conn: closed.set())
            await conn.add_listener(self._channel, self._callback)
            self.tried.set()
            self._on_state(True)
            if self._down_since is not None:
                log.info(
                    f"{self._name}_notifications_restored",
                    down_s=round(time.monotonic() - self._down_since, 1),
                )
                self._down_since = None
                self._on_notify("")
            while not conn.is_closed():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_CHECK_EVERY):
                        await closed.wait()
                if closed.is_set():
                    break
                # A socket can hang without closing; a round trip finds out.
                await conn.execute("SELECT 1", timeout=_CHECK_EVERY)
            return "connection closed"
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)


@asynccontextmanager
async def listening(
    dsn: str,
    channel: str,
    on_notify: Callable[[str], None],
    *,
    name: str = "delivery",
    on_state: Callable[[bool], None] | None = None,
) -> AsyncIterator[None]:
    """While the block runs, call ``on_notify(payload)`` for every NOTIFY on ``channel``,
    and ``on_notify("")`` once whenever a lost LISTEN connection is back; ``on_state(up)``
    whenever the connection listens (True) or is lost (False). Outages are logged as
    ``<name>_notifications_lost`` / ``_restored``. The block starts after the first attempt
    to connect, whether or not it succeeded."""
    supervisor = _Supervisor(dsn, channel, on_notify, name=name, on_state=on_state)
    task = asyncio.create_task(supervisor.run(), name=f"{name}-notifications")
    try:
        await supervisor.tried.wait()
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
