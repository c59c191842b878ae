"""Per-district roster sync state: the incremental cursor, when the roster was last read,
what was learned about a Clever district's Events API, and a Postgres advisory lock so only
one process syncs a district at a time."""

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
    clever_event_seen_at: datetime | None = None
    """Last time a sync saw a new Clever event (None: never)."""
    clever_events_off_at: datetime | None = None
    """When a full read found changes no Clever event had reported (None: not seen so)."""
    clever_events_missed: int = 0
    """How many changes that full read found."""


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
        return SyncState(
            row["cursor"],
            row["last_full_at"],
            row["last_sync_at"],
            row["clever_event_seen_at"],
            row["clever_events_off_at"],
            row["clever_events_missed"],
        )

    async def save_cursor(self, district_id: str, cursor: str) -> None:
        """Remember how far the sync got (saved after every page)."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["save_cursor"], district_id, cursor)

    async def clever_event_seen(self, district_id: str) -> None:
        """Record that Clever showed a new event: its Events API is on."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["clever_event_seen"], district_id)

    async def clever_events_missed(self, district_id: str, changes: int) -> None:
        """Record that a full read found ``changes`` changes no Clever event reported."""
        async with connection(self._pool) as conn:
            await conn.execute(_Q["clever_events_missed"], district_id, changes)

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
