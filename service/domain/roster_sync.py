"""Roster sync from Clever or ClassLink through the one upsert path, and the schedule that
runs it.

Full sync reads everything and deactivates whoever the roster no longer lists; incremental
sync reads Clever's user events or ClassLink's records modified since the cursor. A Clever
district whose Events turn out to be off (see ``clever_events``) is read in full instead, on
the ``FULL_SYNC_INTERVAL`` schedule. After each sync, students still lacking a STUDENTS.ID
are looked up in batches, so the morning's first check-in never waits on PowerSchool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import structlog

from service import logs
from service.domain.clever_events import EventsVerdict, judge_full_read
from service.domain.districts import DistrictService
from service.domain.students import StudentResolver
from service.errors import DomainError, FailedPrecondition, Unavailable
from service.models import District, ImportCounts, RosterSource, RosterStudent, SyncResult
from service.roster import (
    EventFeedSource,
    ModifiedSinceSource,
    RosterAuthError,
    RosterCursorExpired,
    RosterError,
    RosterSources,
    RosterUnavailable,
)
from service.store import DistrictStore, StudentStore, SyncState, SyncStateStore

log = structlog.get_logger("roster_sync")
INTERRUPTED = "the sync was interrupted: the service process stopped before it finished"

T = TypeVar("T")
# Clever keeps 30 days of events; start over a little before they are gone.
_CLEVER_CURSOR_MAX_AGE = timedelta(days=29)
# ClassLink deltas overlap by this much: record clocks and our cursor are not in lockstep.
_CLASSLINK_OVERLAP = timedelta(minutes=5)
# Hard deletes only show up as absences, so ClassLink districts are re-read in full this often.
_CLASSLINK_FULL_EVERY = timedelta(hours=24)


class SyncProgress(Protocol):
    """Where a sync reports how far it got (the job running it keeps this)."""

    async def page_done(self, students: int) -> None:
        """One more roster page, with this many students, was written."""

    async def prefetching(self) -> None:
        """The roster is read; STUDENTS.ID lookups start."""


class Syncer(Protocol):
    """What the schedule runs: one district's sync, to its end."""

    async def sync(self, district_id: str, *, full: bool = False) -> object:
        """Sync the district's roster; raises the sync's error."""


# Every read path writes through _write; the running sync's progress rides along with the task
# instead of being threaded through each path.
_progress: ContextVar[SyncProgress | None] = ContextVar("roster_sync_progress", default=None)


async def _pipelined(
    pages: AsyncIterator[T], consume: Callable[[T], Awaitable[None]], depth: int = 2
) -> None:
    """Fetch the next pages while the current one is written, holding at most ``depth``.

    A fetch failure is raised here; a write failure stops the fetching and closes the
    source, so no task or connection outlives the sync.
    """
    queue: asyncio.Queue[T | BaseException | None] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for page in pages:
                await queue.put(page)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which is still reading
            await queue.put(exc)
            return
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            await consume(item)
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        close = getattr(pages, "aclose", None)
        if close is not None:
            await close()


class RosterSync:
    """Syncs one district at a time per district (a Postgres advisory lock guards it)."""

    def __init__(
        self,
        districts: DistrictService,
        students: StudentStore,
        state: SyncStateStore,
        resolver: StudentResolver,
        rosters: RosterSources,
    ) -> None:
        self._districts = districts
        self._students = students
        self._state = state
        self._resolver = resolver
        self._rosters = rosters

    async def import_students(
        self, district_id: str, students: list[RosterStudent]
    ) -> ImportCounts:
        """Upsert roster records handed over directly (ImportStudents): the same path a
        sync writes through."""
        await self._districts.get(district_id)
        return await self._write(district_id, students)

    async def sync(
        self, district_id: str, *, full: bool = False, progress: SyncProgress | None = None
    ) -> SyncResult:
        """Sync the district's roster now; ``full`` re-reads everything (so does any sync of
        a Clever district whose Events were found off: reading them would find nothing). The
        caller holds the district's sync lock (:class:`SyncJobs` does). Any failure, an
        interruption included, is recorded as the district's ``last_sync_error`` before it
        is raised."""
        district = await self._districts.get(district_id)
        started = time.perf_counter()
        reporting = _progress.set(progress)
        try:
            counts, ran_full = await self._run(district, full=full)
        except RosterAuthError as exc:
            await self._state.finish(district_id, full=False, error=str(exc))
            raise FailedPrecondition(str(exc), reason="ROSTER_AUTH_FAILED") from exc
        except RosterUnavailable as exc:
            await self._state.finish(district_id, full=False, error=str(exc))
            raise Unavailable(
                str(exc), reason="ROSTER_UNAVAILABLE", retry_after=exc.retry_after or 30.0
            ) from exc
        except RosterError as exc:
            await self._state.finish(district_id, full=False, error=str(exc))
            raise FailedPrecondition(str(exc), reason="ROSTER_REFUSED") from exc
        except DomainError as exc:  # e.g. no roster connection configured
            await self._state.finish(district_id, full=False, error=exc.message)
            raise
        except asyncio.CancelledError:
            await self._state.finish(district_id, full=False, error=INTERRUPTED)
            raise
        except Exception:
            # Still recorded, so the schedule moves on to other districts.
            await self._state.finish(district_id, full=False, error="internal error")
            raise
        finally:
            _progress.reset(reporting)
        await self._state.finish(district_id, full=ran_full)
        if progress is not None:
            await progress.prefetching()
        prefetched, unresolved = await self._resolver.prefetch(district)
        result = SyncResult(
            counts=counts,
            full=ran_full,
            duration=time.perf_counter() - started,
            prefetched=prefetched,
            unresolved=unresolved,
        )
        log.info(
            "roster_synced",
            full=ran_full,
            created=counts.created,
            updated=counts.updated,
            deactivated=counts.deactivated,
            unchanged=counts.unchanged,
            prefetched=prefetched,
            unresolved=unresolved,
            duration_s=round(result.duration, 2),
        )
        return result

    async def _run(self, district: District, *, full: bool) -> tuple[ImportCounts, bool]:
        state = await self._state.get(district.district_id)
        if district.roster_source is RosterSource.CLEVER:
            if not district.clever.configured:
                raise _not_configured(district, "clever")
            clever = self._rosters.clever(district.clever)
            fresh = _clever_cursor_fresh(state)
            if full or not fresh or state.clever_events_off_at:
                return await self._clever_full(district, clever, state.cursor, fresh), True
            try:
                return await self._clever_events(district, clever, state.cursor), False
            except RosterCursorExpired:
                log.info("roster_cursor_expired")
                return await self._clever_full(district, clever, state.cursor, False), True
        if not district.classlink.configured:
            raise _not_configured(district, "classlink")
        classlink = self._rosters.classlink(district.classlink)
        if full or not _classlink_delta_ok(state):
            return await self._classlink_read(district, classlink, ""), True
        return await self._classlink_read(district, classlink, state.cursor), False

    async def _write(self, district_id: str, page: list[RosterStudent]) -> ImportCounts:
        # A roster can name a record twice in one page (events); the last word wins.
        latest = {s.roster_id: s for s in page if s.roster_id}
        counts = await self._students.upsert(district_id, list(latest.values()))
        if (progress := _progress.get()) is not None:
            await progress.page_done(len(page))
        return counts

    async def _clever_full(
        self, district: District, clever: EventFeedSource, previous_cursor: str, comparable: bool
    ) -> ImportCounts:
        """Read everything; ``comparable``: Clever still keeps every event since
        ``previous_cursor``, so changes the read finds without one mean Events are off."""
        did = district.district_id
        # Take the cursor first: whatever changes during the read is replayed afterwards.
        cursor = await clever.latest_event_id()
        seen: list[str] = []
        total = ImportCounts()

        async def write(page: list[RosterStudent]) -> None:
            nonlocal total
            total += await self._write(did, page)
            seen.extend(s.roster_id for s in page)

        await _pipelined(clever.students(), write)
        total += ImportCounts(deactivated=await self._students.deactivate_missing(did, seen))
        await self._state.save_cursor(did, cursor)
        changes = total.created + total.updated + total.deactivated
        verdict = judge_full_read(
            previous_cursor, cursor, await clever.latest_event_id(), changes, comparable=comparable
        )
        if verdict is EventsVerdict.SEEN:
            await self._state.clever_event_seen(did)
        elif verdict is EventsVerdict.MISSED:
            log.warning("clever_events_off", missed=changes)
            await self._state.clever_events_missed(did, changes)
        return total

    async def _clever_events(
        self, district: District, clever: EventFeedSource, cursor: str
    ) -> ImportCounts:
        did = district.district_id
        total = ImportCounts()
        seen = False
        async for events in clever.events(cursor):
            seen = True
            students = [e.student for e in events if e.student is not None]
            total += await self._write(did, students)
            # A user who lost the student role: switch off whatever we had for them.
            dropped = [e.roster_id for e in events if e.student is None]
            total += ImportCounts(deactivated=await self._students.deactivate(did, dropped))
            await self._state.save_cursor(did, events[-1].id)
        if seen:
            await self._state.clever_event_seen(did)
        return total

    async def _classlink_read(
        self, district: District, classlink: ModifiedSinceSource, cursor: str
    ) -> ImportCounts:
        did = district.district_id
        since = ""
        if cursor:
            since = (
                datetime.fromisoformat(cursor.replace("Z", "+00:00")) - _CLASSLINK_OVERLAP
            ).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        seen: list[str] = []
        newest = cursor
        total = ImportCounts()
        async for page in classlink.students(modified_after=since):
            total += await self._write(did, page.students)
            seen.extend(s.roster_id for s in page.students)
            newest = max(newest, page.newest_modified)
        if not since:
            total += ImportCounts(deactivated=await self._students.deactivate_missing(did, seen))
        await self._state.save_cursor(did, newest)
        return total


def _not_configured(district: District, source: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"district {district.district_id!r} reads its roster from {source} but has no "
        f"{source} connection configured",
        reason="ROSTER_NOT_CONFIGURED",
    )


def _clever_cursor_fresh(state: SyncState) -> bool:
    return bool(
        state.last_full_at
        and state.last_sync_at
        and datetime.now(UTC) - state.last_sync_at < _CLEVER_CURSOR_MAX_AGE
    )


def _classlink_delta_ok(state: SyncState) -> bool:
    return bool(
        state.cursor
        and state.last_full_at
        and datetime.now(UTC) - state.last_full_at < _CLASSLINK_FULL_EVERY
    )


class SyncScheduler:
    """Runs due syncs in the background; every service process may run one, the advisory
    lock keeps a district to one sync at a time."""

    def __init__(
        self,
        sync: Syncer,
        districts: DistrictStore,
        *,
        poll: float,
        full_sync_interval: float,
    ) -> None:
        self._sync = sync
        self._districts = districts
        self._poll = poll
        self._full_every = full_sync_interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling for due districts."""
        self._task = asyncio.create_task(self._loop(), name="roster-sync-scheduler")

    async def stop(self) -> None:
        """Stop polling (a sync in progress is cancelled and resumes from its cursor)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                due = await self._districts.due_for_sync(self._full_every)
            except Unavailable as exc:
                log.warning("sync_scheduler_paused", error=exc.message)
                due = []
            for district_id, full in due:
                # One district's trouble never stops the others' syncs.
                logs.bind(district_id=district_id)
                try:
                    await self._sync.sync(district_id, full=full)
                except asyncio.CancelledError:
                    raise
                except DomainError as exc:
                    log.warning("scheduled_sync_failed", error=exc.message)
                except Exception:
                    log.exception("scheduled_sync_crashed")
                finally:
                    logs.unbind("district_id")
            await asyncio.sleep(self._poll)
