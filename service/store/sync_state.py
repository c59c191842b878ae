"""Per-district roster sync state: the incremental cursor, when the roster was last read,
and a Postgres advisory lock so only one process syncs a district at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.store._database import connection
from service.store._queries import load

_Q = load("sync_state")


@dataclass(frozen=True)
class SyncState:
    """Where the last sync of a district left off."""

    cursor: str = ""
    last_full_at: datetime | None = None
    last_sync_at: datetime | None = None


class SyncStateStore:
    """Reads and writes roster sync state."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, district_id: str) -> SyncState:
        """The district's state (empty before the first sync)."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["get_state"], district_id)
        if row is None:
            return SyncState()
        return SyncState(row["cursor"], row["last_full_at"], row["last_sync_at"])

    async def save_cursor(self, district_id: str, cursor: str) -> None:
        """Remember how far the sync got (saved after every page)."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["save_cursor"], district_id, cursor)

    async def finish(self, district_id: str, *, full: bool, error: str = "") -> None:
        """Record that a sync ended, and how."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["finish"], district_id, error, full)

    @asynccontextmanager
    async def lock(self, district_id: str) -> AsyncIterator[bool]:
        """Hold the district's sync lock for the block; yields False if another holds it."""
        async with connection(self._pool) as conn:
            got = bool(await conn.fetchval(_Q["try_lock"], district_id))
            try:
                yield got
            finally:
                if got:
                    await conn.fetchval(_Q["unlock"], district_id)
