"""Roster syncs as jobs: a sync belongs to the service, not to the call that asked for it.

A caller's deadline or hang-up never stops a sync; the job's phase, progress and outcome are
kept in Postgres, so any process can show them. The district's advisory lock still keeps one
sync per district at a time across processes; asking again while one runs joins it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from service import logs
from service.domain.districts import DistrictService
from service.domain.roster_sync import INTERRUPTED, RosterSync
from service.errors import (
    DomainError,
    FailedPrecondition,
    NotFound,
    StillRunning,
    Unavailable,
)
from service.models import SyncJob, SyncPhase, SyncResult
from service.store import SyncJobStore, SyncStateStore

log = structlog.get_logger("roster_sync")

# How long a second request looks for the job of a lock holder that is just starting (between
# taking the lock and storing its job); after that it is a process without jobs.
_JOIN_TRIES = 50
_JOIN_PAUSE = 0.05


@dataclass
class _Progress:
    """Writes a job's progress as pages complete."""

    store: SyncJobStore
    sync_id: str

    async def page_done(self, students: int) -> None:
        await self.store.page_done(self.sync_id, students)

    async def prefetching(self) -> None:
        await self.store.set_phase(self.sync_id, SyncPhase.PREFETCHING)


def _failure(exc: BaseException) -> tuple[str, str]:
    """The job's error and reason: a caller-safe message, never a record or a secret."""
    if isinstance(exc, DomainError):
        return exc.message, exc.reason
    if isinstance(exc, asyncio.CancelledError):
        return INTERRUPTED, "SYNC_INTERRUPTED"
    return "internal error", "INTERNAL"


def _error_of(job: SyncJob) -> DomainError:
    """A failed job's error as a waiting caller gets it when the job ran elsewhere."""
    if job.error_reason.endswith("_UNAVAILABLE"):
        return Unavailable(job.error, reason=job.error_reason, retry_after=30.0)
    return FailedPrecondition(job.error, reason=job.error_reason or "SYNC_FAILED")


class SyncJobs:
    """Starts, joins, waits for and reports roster sync jobs; holds the running ones until
    they end or :meth:`stop` interrupts them."""

    def __init__(
        self,
        sync: RosterSync,
        districts: DistrictService,
        jobs: SyncJobStore,
        state: SyncStateStore,
        *,
        poll: float = 0.25,
    ) -> None:
        self._sync = sync
        self._districts = districts
        self._jobs = jobs
        self._state = state
        self._poll = poll
        self._running: dict[str, asyncio.Task[SyncResult | None]] = {}
        self._all: set[asyncio.Task[SyncResult | None]] = set()

    async def start(self, district_id: str, *, full: bool = False) -> str:
        """Start a sync of the district, or join the one already running in any process;
        returns the job's sync_id at once."""
        await self._districts.get(district_id)
        for _ in range(_JOIN_TRIES):
            begun: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(
                self._run(district_id, full, begun), name=f"roster-sync:{district_id}"
            )
            self._all.add(task)
            task.add_done_callback(self._forget)
            # Shielded: a caller giving up here must not cancel the job it just started.
            sync_id = await asyncio.shield(begun)
            if sync_id is not None:
                if not task.done():
                    self._running[sync_id] = task
                return sync_id
            running = await self._jobs.running(district_id)
            if running is not None:
                return running.sync_id
            await asyncio.sleep(_JOIN_PAUSE)
        raise FailedPrecondition(
            f"a roster sync of district {district_id!r} is already running",
            reason="SYNC_IN_PROGRESS",
        )

    async def wait(self, district_id: str, sync_id: str, *, within: float | None) -> SyncJob:
        """The job once it is done; raises its error if it failed, or :class:`StillRunning`
        when ``within`` seconds pass first (None: no limit) (the job goes on)."""
        loop = asyncio.get_running_loop()
        until = None if within is None else loop.time() + within
        task = self._running.get(sync_id)
        if task is not None:
            # asyncio.wait never cancels the job, even when this caller is cancelled.
            await asyncio.wait({task}, timeout=within)
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        while True:
            job = await self.status(district_id, sync_id)
            if job.phase is SyncPhase.DONE:
                return job
            if job.phase is SyncPhase.FAILED:
                raise _error_of(job)
            if until is not None and loop.time() >= until:
                raise StillRunning(
                    f"the roster sync {sync_id} is still running; GetSyncStatus shows its progress",
                    reason="SYNC_STILL_RUNNING",
                    metadata={"sync_id": sync_id},
                )
            pause = self._poll if until is None else min(self._poll, until - loop.time())
            await asyncio.sleep(max(pause, 0.0))

    async def sync(self, district_id: str, *, full: bool = False) -> SyncJob:
        """Run a sync (or join the running one) to its end; raises its error."""
        sync_id = await self.start(district_id, full=full)
        return await self.wait(district_id, sync_id, within=None)

    async def status(self, district_id: str, sync_id: str = "") -> SyncJob:
        """One of the district's jobs, its latest when ``sync_id`` is empty; NotFound if none."""
        await self._districts.get(district_id)
        job = await self._jobs.get(district_id, sync_id)
        if job is None:
            which = f"sync {sync_id!r}" if sync_id else "any roster sync"
            raise NotFound(f"district {district_id!r} has no {which}", reason="SYNC_NOT_FOUND")
        return job

    async def stop(self) -> None:
        """Interrupt the running jobs; each is recorded as failed (interrupted), and the
        next sync resumes from the saved cursor."""
        for task in list(self._all):
            task.cancel()
        await asyncio.gather(*self._all, return_exceptions=True)

    def _forget(self, task: asyncio.Task[SyncResult | None]) -> None:
        self._all.discard(task)
        for sync_id, running in list(self._running.items()):
            if running is task:
                del self._running[sync_id]
        if not task.cancelled():
            task.exception()  # the job's error is stored; waiters read it from the store

    async def _run(
        self, district_id: str, full: bool, begun: asyncio.Future[str | None]
    ) -> SyncResult | None:
        try:
            async with self._state.lock(district_id) as got:
                if not got:
                    begun.set_result(None)
                    return None
                job = await self._jobs.create(district_id)
                logs.bind(district_id=district_id, sync_id=job.sync_id)
                begun.set_result(job.sync_id)
                try:
                    result = await self._sync.sync(
                        district_id, full=full, progress=_Progress(self._jobs, job.sync_id)
                    )
                except BaseException as exc:
                    error, reason = _failure(exc)
                    await self._jobs.finish(job.sync_id, None, error=error, error_reason=reason)
                    raise
                await self._jobs.finish(job.sync_id, result)
                return result
        except BaseException as exc:
            if begun.done():
                raise
            # Failed before the job existed: the starter hears why.
            if isinstance(exc, asyncio.CancelledError):
                begun.cancel()
            else:
                begun.set_exception(exc)
            raise
