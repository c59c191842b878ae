"""Whether the database answers, for the service's health."""

from __future__ import annotations

import asyncpg

from service.store._queries import load

_Q = load("health")


class DatabaseProbe:
    """Asks the database for one trivial answer over a connection of its own, so a pool busy
    with real work never looks like a database that is down (and a down database is seen
    even while the pool's connections sit idle)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def reachable(self, seconds: float) -> bool:
        """True if the database answered within ``seconds`` (reconnecting first if
        the last probe lost its connection)."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, timeout=seconds)
            await self._conn.fetchval(_Q["ping"], timeout=seconds)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.close()
            return False
        return True

    def close(self) -> None:
        """Drop the probe's connection (no round trip: the server may be gone)."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
