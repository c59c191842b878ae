"""Which delivery workers are alive, so each process can take its share of a district's
politeness limits (calls in flight, calls per second)."""

from __future__ import annotations

import asyncpg

from service.store._database import connection
from service.store._queries import load

_Q = load("workers")


class WorkerRegistry:
    """Heartbeats of delivery workers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def heartbeat(self, owner: str, *, alive_within: float) -> int:
        """Record that ``owner`` is alive; return how many workers are (at least 1)."""
        async with connection(self._pool) as conn:
            return int(await conn.fetchval(_Q["heartbeat"], owner, alive_within))

    async def leave(self, owner: str) -> None:
        """Forget ``owner`` (a clean stop), and workers gone for an hour."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["leave"], owner)
            await conn.execute(_Q["forget_stale"])
