"""Group commit: concurrent callers share one database transaction.

An item that finds no batch being written goes out at the end of the current event-loop turn,
with whatever else arrived in that turn: a lone caller does not wait for company. While a batch
is being written, an item waits for others to join it until that batch is written, at most
``wait`` seconds (then a second batch goes while the first is still being written), or until
``max_rows`` items are queued. A batch is written by one call of ``write``, and each caller gets
its own outcome only once that call has returned, that is after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Two batches in flight: one commits while the next is built and sent. More would only
# split the waiting callers into smaller batches, each paying its own commit.
_BATCHES_IN_FLIGHT = 2


class GroupCommit(Generic[T, R]):
    """Collects items into batches for ``write``, which returns one outcome per item (a
    result, or the exception that item's caller gets); if ``write`` raises, every caller in
    the batch gets that exception. A caller cancelled before its batch is taken is left out
    of it; one cancelled later is still written."""

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_rows: int,
        wait: float,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._write = write
        self._max_rows = max_rows
        self._wait = wait
        self._on_batch = on_batch
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.Handle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """``item``'s outcome, once the batch holding it is written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queued.append((item, future))
        if len(self._queued) >= self._max_rows:
            self._flush()
        elif self._timer is None:
            self._timer = (
                loop.call_later(self._wait, self._flush)
                if self._running
                else loop.call_soon(self._flush)
            )
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queued and len(self._running) < _BATCHES_IN_FLIGHT:
            taken = [q for q in self._queued[: self._max_rows] if not q[1].done()]
            del self._queued[: self._max_rows]
            if taken:
                task = asyncio.create_task(self._run(taken))
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        # Whoever queued meanwhile has waited long enough already.
        if self._queued:
            self._flush()

    async def _run(self, taken: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._on_batch(len(taken))
        try:
            outcomes = await self._write([item for item, _ in taken])
        except asyncio.CancelledError:
            for _, future in taken:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(taken, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
