"""Tells every service process when a district's students or resolution settings change, so
in-process copies of them (students by key, districts) are dropped.

Each write sends a NOTIFY with the district ID in its own transaction (delivered on commit);
each process LISTENs on a supervised connection (see :mod:`service.store.notifications`).
Changes made by this process are also announced here at once, after their commit, without
waiting for Postgres to echo them. While the LISTEN connection is down nothing heard can be
trusted to be complete, which the subscribers are told, and again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.store import notifications
from service.store._queries import load

CHANNEL = "writeback_students"
_Q = load("students")


class ChangeSubscriber(Protocol):
    """Something that keeps copies of districts or their students."""

    def forget(self, district_id: str) -> None:
        """``district_id`` changed (``""``: possibly any district)."""

    def trust(self, heard: bool) -> None:
        """Changes made by other processes are being heard (True) or may be missed (False)."""


class StudentChanges:
    """The change feed: ``start`` listening for subscribers, and the stores' ``announce``
    inside and ``changed`` after each writing transaction."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subscribers: list[ChangeSubscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def announce(self, conn: PoolConnectionProxy[asyncpg.Record], district_id: str) -> None:
        """Queue the notification in ``conn``'s open transaction: sent when it commits."""
        await conn.execute(_Q["notify_change"], district_id)

    def changed(self, district_id: str) -> None:
        """Tell this process's subscribers now (after the commit of a change made here)."""
        for subscriber in self._subscribers:
            subscriber.forget(district_id)

    def _state(self, up: bool) -> None:
        for subscriber in self._subscribers:
            subscriber.trust(up)

    async def start(self, *subscribers: ChangeSubscriber) -> None:
        """Tell ``subscribers`` of every change to a district's students or settings, by any
        process, and whether such changes are being heard, until :meth:`stop`; returns after
        the first attempt to listen."""
        self._subscribers.extend(subscribers)
        ready = asyncio.Event()

        async def run() -> None:
            async with notifications.listening(
                self._dsn, CHANNEL, self.changed, name="cache", on_state=self._state
            ):
                ready.set()
                await self._stop.wait()

        self._task = asyncio.create_task(run(), name="cache-notifications")
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait({self._task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()

    async def stop(self) -> None:
        """Stop listening; subscribers are told nothing more is heard."""
        if self._task is not None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        self._state(False)
