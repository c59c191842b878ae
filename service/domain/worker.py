"""The delivery worker: claims due jobs, delivers them politely, records the outcome.

Jobs are claimed under a lease committed before PowerSchool is called, so several service
processes on one database share the work, and a job whose worker died is taken back when
its lease expires. Woken by LISTEN/NOTIFY, with a polling fallback. Transient failures are
retried with exponential backoff and full jitter (at least Retry-After); a circuit breaker
per PowerSchool host pauses its districts while it is down instead of burning attempts;
retryable failures give up after ``max_age``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from service.domain._guards import BreakerState, Guards, HeldBack, HostGuard
from service.domain.delivery import Deliverer, Outcome
from service.domain.districts import DistrictService
from service.domain.students import StudentResolver
from service.errors import DomainError, Unavailable
from service.models import (
    AttemptOutcome,
    AttendanceRecord,
    AttendanceState,
    DeliveryAttempt,
    DeliveryJob,
    District,
    JobKind,
    KeyKind,
    StudentKey,
)
from service.store import AttendanceStore, WorkerRegistry

log = structlog.get_logger("delivery")
_HEARTBEAT = 2.0
# Outcomes that only PowerSchool answering can produce.
_ANSWERED = frozenset({AttendanceState.WRITTEN, AttendanceState.CANCELLED})


@dataclass(frozen=True)
class WorkerSettings:
    """Tuning of one process's delivery worker."""

    concurrency: int = 32
    lease: float = 60.0
    poll: float = 1.0
    max_age: float = 24 * 3600.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0


class DeliveryWorker:
    """Runs in every service process; see the module docstring."""

    def __init__(
        self,
        *,
        records: AttendanceStore,
        workers: WorkerRegistry,
        districts: DistrictService,
        resolver: StudentResolver,
        deliverer: Deliverer,
        guards: Guards,
        settings: WorkerSettings | None = None,
    ) -> None:
        self._records = records
        self._workers = workers
        self._next_heartbeat = 0.0
        self._districts = districts
        self._resolver = resolver
        self._deliverer = deliverer
        self.guards = guards
        self.settings = settings or WorkerSettings()
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # The districts this worker has delivered for, to know which to pause with a host.
        self._known: dict[str, District] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._active: Counter[str] = Counter()
        self._running: set[str] = set()  # lease tokens of deliveries in flight

    def start(self) -> None:
        """Start claiming jobs."""
        self._loop_task = asyncio.create_task(self._run_loop(), name="delivery-worker")

    async def stop(self) -> None:
        """Stop claiming; in-flight deliveries are cancelled and their leases expire."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._workers.leave(self.owner)

    def wake(self, _district_id: str = "") -> None:
        """Look for due jobs now."""
        self._wake.set()

    async def wait_for(self, record_id: str, district_id: str, seconds: float) -> None:
        """Return when the record leaves PENDING (in any process) or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        event = self._waiters.setdefault(record_id, asyncio.Event())
        try:
            while (left := deadline - time.monotonic()) > 0:
                # Our own worker signals at once; another process's only via the row.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(left, 0.25))
                record = await self._records.get(district_id, record_id)
                if record is None or record.state is not AttendanceState.PENDING:
                    return
        finally:
            self._waiters.pop(record_id, None)

    async def _heartbeat(self) -> None:
        """Every few seconds: say we are alive and learn how many workers share the limits."""
        if time.monotonic() < self._next_heartbeat:
            return
        self._next_heartbeat = time.monotonic() + _HEARTBEAT
        self.guards.share = await self._workers.heartbeat(self.owner, alive_within=_HEARTBEAT * 3)

    async def _run_loop(self) -> None:
        async with self._records.listening(self.wake):
            while True:
                try:
                    await self._heartbeat()
                    await self._dispatch()
                except asyncio.CancelledError:
                    raise
                except Unavailable as exc:  # the database is away; the lease model copes
                    log.warning("delivery_paused", error=exc.message)
                except Exception:
                    log.exception("delivery_dispatch_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll)
                self._wake.clear()

    def _paused(self) -> tuple[list[str], list[str]]:
        """Districts not to claim for, and districts whose host is ready for one probe."""
        paused, probes = [], []
        now = time.monotonic()
        for district_id, district in self._known.items():
            host = self.guards.host(district.powerschool.base_url)
            state = host.breaker.state
            if state is BreakerState.HALF_OPEN and not host.breaker.probing:
                probes.append(district_id)
            elif state is not BreakerState.CLOSED or host.not_before > now:
                paused.append(district_id)
        return paused, probes

    def _full(self) -> list[str]:
        """Districts whose share of calls in flight this worker is already using."""
        return [
            district_id
            for district_id, district in self._known.items()
            if self._active[district_id] >= self.guards.slots(district.max_in_flight)
        ]

    async def _dispatch(self) -> None:
        while (free := self.settings.concurrency - len(self._tasks)) > 0:
            paused, probes = self._paused()
            jobs = await self._records.claim(
                self.owner,
                free,
                lease=self.settings.lease,
                exclude=paused + probes + self._full(),
            )
            started = 0
            for job in jobs:
                district = self._known.get(job.district_id)
                if district is not None and self._active[job.district_id] >= self.guards.slots(
                    district.max_in_flight
                ):
                    # Claimed past the district's free slots: waiting here would hold the
                    # lease and a worker slot while other districts wait. Back it goes.
                    await self._records.release(job)
                    continue
                self._start(job, probe=False)
                started += 1
            for district_id in probes[: max(free - started, 0)]:
                probe = await self._records.claim(
                    self.owner, 1, lease=self.settings.lease, exclude=[], only=district_id
                )
                if probe:
                    self._host_of(district_id).breaker.probing = True
                    self._start(probe[0], probe=True)
            if len(jobs) < free:
                return

    def _start(self, job: DeliveryJob, *, probe: bool) -> None:
        self._active[job.district_id] += 1
        self._running.add(job.lease_token)
        task = asyncio.create_task(self._deliver(job, probe=probe))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, job))

    def _task_done(self, job: DeliveryJob, task: asyncio.Task[None]) -> None:
        # A freed slot may have due work waiting (a backlog, or a retry now due).
        self._tasks.discard(task)
        self._active[job.district_id] -= 1
        self._running.discard(job.lease_token)
        self._wake.set()

    def _host_of(self, district_id: str) -> HostGuard:
        return self.guards.host(self._known[district_id].powerschool.base_url)

    async def _district(self, district_id: str) -> District:
        district = await self._districts.get(district_id)
        self._known[district_id] = district
        return district

    async def _deliver(self, job: DeliveryJob, *, probe: bool) -> None:
        structlog.contextvars.bind_contextvars(
            district_id=job.district_id, record_id=job.record_id, job=job.kind.value
        )
        try:
            record = await self._records.get(job.district_id, job.record_id)
            if record is None:  # pragma: no cover  (jobs cascade with their records)
                return
            outcome = await self._attempt(job, record)
            await self._apply(job, record, outcome)
        except HeldBack as held:
            await self._records.release(
                job, run_at=datetime.now(UTC) + timedelta(seconds=held.seconds)
            )
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:
            # Our database went away mid-delivery: the lease expires and the job comes back;
            # its read-before-write then finds whatever this attempt managed to write.
            log.warning("delivery_interrupted", error=exc.message)
        except Exception:
            log.exception("delivery_crashed")
            with contextlib.suppress(Unavailable):
                await self._records.reschedule(
                    job,
                    datetime.now(UTC) + timedelta(seconds=30),
                    DeliveryAttempt(
                        datetime.now(UTC), job.kind, AttemptOutcome.RETRY, error="internal error"
                    ),
                )
        finally:
            if probe and job.district_id in self._known:
                # However the probe ended, the breaker must not wait for it forever.
                self._host_of(job.district_id).breaker.probing = False
            waiter = self._waiters.get(job.record_id)
            if waiter is not None:
                waiter.set()

    async def _attempt(self, job: DeliveryJob, record: AttendanceRecord) -> Outcome:
        try:
            district = await self._district(job.district_id)
            student = await self._resolver.find(
                district, StudentKey(KeyKind.ROSTER_ID, record.roster_id)
            )
        except Unavailable:
            raise
        except DomainError as exc:  # the district or student is gone
            return Outcome(AttendanceState.FAILED, exc.message)
        school = district.school_by_number(record.school_number)
        if job.kind is JobKind.WRITE:
            if school is None:
                return Outcome(
                    AttendanceState.FAILED,
                    f"school {record.school_number} is no longer configured for this district",
                )
            if not (district.writeback_enabled and school.writeback_enabled):
                return Outcome(
                    AttendanceState.SKIPPED, "writeback was switched off before delivery"
                )
        host = self.guards.host(district.powerschool.base_url)
        guard = self.guards.district(
            district.district_id, district.max_in_flight, district.max_requests_per_second
        )
        async with self.guards.call(guard, host):
            if job.kind is JobKind.CANCEL:
                return await self._deliverer.cancel(record, district, school, student)
            assert school is not None
            return await self._deliverer.write(
                record,
                district,
                school,
                student,
                functools.partial(self._records.remember_replaced, record.record_id),
            )

    async def _apply(self, job: DeliveryJob, record: AttendanceRecord, outcome: Outcome) -> None:
        district = self._known.get(job.district_id)
        host = self.guards.host(district.powerschool.base_url) if district else None
        contacted = outcome.reached or outcome.state in _ANSWERED
        if outcome.state is not None:
            if host is not None and contacted and host.breaker.success():
                await self._reopen_host(district.powerschool.base_url if district else "")
            saved = await self._records.finish(
                job,
                outcome.state,
                attempt=_attempt(job, record, outcome, AttemptOutcome(outcome.state.value)),
                powerschool_attendance_id=outcome.attendance_id,
                code=outcome.code,
            )
            log.info(
                "attendance_delivery",
                state=outcome.state.value,
                attempt=job.attempts,
                error=outcome.error or None,
                lease_lost=saved is None,
            )
            return
        now = time.monotonic()
        if host is not None:
            if outcome.server_down:
                host.breaker.failure()
            elif host.breaker.probing:
                host.breaker.probing = False
            if outcome.retry_after:
                host.not_before = max(host.not_before, now + outcome.retry_after)
        age = (datetime.now(UTC) - (job.first_attempt_at or job.created_at)).total_seconds()
        if age > self.settings.max_age:
            await self._records.finish(
                job,
                AttendanceState.FAILED,
                attempt=_attempt(
                    job,
                    record,
                    outcome,
                    AttemptOutcome.FAILED,
                    error=f"gave up after {job.attempts} attempts over {age / 3600:.1f} hours; "
                    f"last error: {outcome.error}",
                ),
            )
            log.warning("attendance_delivery_gave_up", attempts=job.attempts)
            return
        ceiling = min(
            self.settings.backoff_cap, self.settings.backoff_base * 2 ** (job.attempts - 1)
        )
        delay = random.uniform(0, ceiling)  # noqa: S311  (full jitter, not crypto)
        delay = max(delay, outcome.retry_after or 0.0)
        if host is not None and host.breaker.state is not BreakerState.CLOSED:
            delay = max(delay, host.breaker.retry_at() - now)
        await self._records.reschedule(
            job,
            datetime.now(UTC) + timedelta(seconds=delay),
            _attempt(job, record, outcome, AttemptOutcome.RETRY),
        )
        log.info(
            "attendance_delivery_retry",
            attempt=job.attempts,
            delay_s=round(delay, 2),
            error=outcome.error,
        )

    async def _reopen_host(self, base_url: str) -> None:
        """The host answered again: its districts' backed-off jobs can go now."""
        for district_id, district in list(self._known.items()):
            if district.powerschool.base_url == base_url:
                await self._records.release_district(district_id)
        log.info("powerschool_back")


def _attempt(
    job: DeliveryJob,
    record: AttendanceRecord,
    outcome: Outcome,
    ended: AttemptOutcome,
    *,
    error: str | None = None,
) -> DeliveryAttempt:
    """The history entry of this attempt (``error`` defaults to the outcome's)."""
    return DeliveryAttempt(
        at=datetime.now(UTC),
        kind=job.kind,
        outcome=ended,
        powerschool_status=outcome.status,
        attendance_code=outcome.code or record.attendance_code,
        error=outcome.error if error is None else error,
    )
