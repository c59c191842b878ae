"""When a group commit's batch goes: a call queued behind a batch being written goes as soon as
that batch is written, or once it has waited ``wait`` if the batch is still being written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from service.store._group_commit import GroupCommit


class Writes:
    """A ``write`` that records its batches; the first stays open until :meth:`release`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self._first_done = asyncio.Event()

    async def __call__(self, items: list[int]) -> Sequence[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            await self._first_done.wait()
        return items

    def release(self) -> None:
        self._first_done.set()


async def test_calls_queued_behind_a_batch_go_together_once_it_is_written() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_rows=100, wait=60.0)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.01)  # the first call found no batch being written: it went alone
    queued = [asyncio.create_task(commit.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0.05)
    assert writes.batches == [[1]]
    started = time.monotonic()
    writes.release()
    assert await asyncio.gather(first, *queued) == [1, 2, 3]
    # Well before the 60 s wait: the queued calls went when the first batch was written.
    assert time.monotonic() - started < 5
    assert writes.batches == [[1], [2, 3]]


async def test_a_call_waits_no_longer_than_wait_behind_a_batch_still_being_written() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_rows=100, wait=0.05)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.01)
    try:
        # The first batch is still being written throughout.
        assert await asyncio.wait_for(commit.submit(2), 5) == 2
        assert writes.batches == [[1], [2]]
        assert not first.done()
    finally:
        writes.release()
        await first
