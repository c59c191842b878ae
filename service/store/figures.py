"""Operational figures per district, read for the metrics endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.store._database import connection
from service.store._queries import load

_Q = load("figures")


@dataclass(frozen=True)
class DistrictFigures:
    """A district's delivery queue and roster sync schedule as Postgres holds them now."""

    district_id: str
    queue_depth: int
    oldest_pending_seconds: float
    """Age of the oldest queued job (0 when none)."""
    sync_interval_seconds: float
    last_sync_success: float | None
    """Unix time the last successful roster sync finished (None: never)."""
    last_sync_duration: float | None


class FiguresStore:
    """Reads every district's figures in one query."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def districts(self) -> list[DistrictFigures]:
        """Every district's figures (callers bound the wait; a cancelled read cancels the
        query)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["district_figures"])
        return [DistrictFigures(**dict(row)) for row in rows]
