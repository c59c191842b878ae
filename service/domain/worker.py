"""The delivery worker, a thin loop: claim due jobs, run each attempt under its lease,
record the outcome. What to write is ``rules.py``'s business; how politely, ``politeness.py``'s;
the PowerSchool calls, ``delivery.py``'s.

Jobs are claimed in batches of one district, school and date (up to :data:`BATCH`): when
that pays, one read of the school's daily rows for the date, made after the claim, serves
the whole batch instead of one read per student; the batch's attempts then run at most the
district's share of calls in flight at once, the records of one student one after another.
Jobs are claimed under a lease committed before PowerSchool is called and renewed every
third of the lease while the attempt runs. An attempt whose renewal finds the job gone to
another claim does not send its write, and never records an outcome (outcomes are fenced by
the claim's token in the store too). On shutdown the worker stops claiming, gives attempts in
flight ``grace`` seconds, then hands the unfinished jobs back (due now) so another process
takes them at once; their next attempt's read-before-write finds whatever was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import structlog

from service import logs, tracing
from service.domain import rules
from service.domain.delivery import DAY_READ_FRESH, DayRows, Deliverer, LeaseLost, Outcome
from service.domain.districts import DistrictService
from service.domain.observe import NoObserver, Observer
from service.domain.politeness import BreakerState, HeldBack, Politeness
from service.errors import DomainError, Unavailable
from service.models import (
    AttemptOutcome,
    AttendanceMode,
    AttendanceRecord,
    AttendanceState,
    DeliveryAttempt,
    DeliveryJob,
    District,
)
from service.store import AttendanceStore, WorkerRegistry

log = structlog.get_logger("delivery")
_HEARTBEAT = 2.0
# How often a wait for a delivery's outcome reads the record when no local worker signals.
_OUTCOME_POLL = 0.25
BATCH = 100
"""Most jobs claimed together: one page of a school's day per batch when the day is quiet."""
# Outcomes that only PowerSchool answering can produce.
_ANSWERED = frozenset({AttendanceState.WRITTEN, AttendanceState.CANCELLED})


@dataclass(frozen=True)
class WorkerSettings:
    """Tuning of one process's delivery worker."""

    concurrency: int = 32
    lease: float = 60.0
    poll: float = 1.0
    max_age: float = 24 * 3600.0
    backoff: rules.Backoff = field(default_factory=rules.Backoff)
    grace: float = 10.0
    """Seconds attempts in flight get to finish on shutdown before being handed over."""


@dataclass
class _Lease:
    """One claim's lease as this process knows it."""

    token: str
    until: float  # monotonic
    lost: bool = False

    def held(self) -> bool:
        return not self.lost and time.monotonic() < self.until


@dataclass
class _Turn:
    """One student's day: its attempts in this process go one at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class DeliveryWorker:
    """Runs in every service process; see the module docstring. Also the attendance
    service's view of the queue (``wake``, ``wait_for``, ``breaker``)."""

    def __init__(
        self,
        *,
        records: AttendanceStore,
        workers: WorkerRegistry,
        districts: DistrictService,
        deliverer: Deliverer,
        politeness: Politeness,
        settings: WorkerSettings | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._observer = observer or NoObserver()
        self._records = records
        self._workers = workers
        self._districts = districts
        self._deliverer = deliverer
        self._politeness = politeness
        self.settings = settings or WorkerSettings()
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._next_heartbeat = 0.0
        self._loop_beat: float | None = None  # monotonic; when the claim loop last went round
        self._tasks: dict[asyncio.Task[None], list[DeliveryJob]] = {}
        self._leases: dict[str, _Lease] = {}  # by token
        self._loops: list[asyncio.Task[None]] = []
        # The districts this worker has delivered for, to know which to pause with a host.
        self._known: dict[str, District] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._active: Counter[str] = Counter()  # tasks (a batch or a job) per district
        self._claimed: Counter[str] = Counter()  # unfinished jobs per district
        # Per student and day: one attempt at a time in this process, and when the last one
        # ended, so a shared day read that began before that is not trusted for the student.
        self._student_turns: dict[tuple[str, str, date], _Turn] = {}
        self._student_done: dict[tuple[str, str, date], float] = {}

    def start(self) -> None:
        """Start claiming jobs and renewing leases."""
        self._loop_beat = time.monotonic()  # starting counts: the loop gets its first round
        self._loops = [
            asyncio.create_task(self._run_loop(), name="delivery-worker"),
            asyncio.create_task(self._renew_loop(), name="delivery-leases"),
        ]

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; give attempts in flight ``grace`` seconds (the setting by
        default), then cancel the rest and hand their jobs back, due now."""
        claim_loop = self._loops[:1]
        for task in claim_loop:
            task.cancel()
        await asyncio.gather(*claim_loop, return_exceptions=True)
        grace = self.settings.grace if grace is None else grace
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        unfinished = list(self._tasks.items())
        for task, _jobs in unfinished:
            task.cancel()
        await asyncio.gather(*(task for task, _ in unfinished), return_exceptions=True)
        for task in self._loops[1:]:
            task.cancel()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)
        self._loops = []
        with contextlib.suppress(Unavailable):
            if unfinished:
                # Jobs of a batch that already ended are no longer under these tokens.
                handed = await self._records.hand_over([j for _, jobs in unfinished for j in jobs])
                log.info("deliveries_handed_over", jobs=handed)
            await self._workers.leave(self.owner)

    def loop_alive(self, stale_after: float) -> bool:
        """True while the claim loop runs and went round within the last ``stale_after``
        seconds (it goes round at least every ``poll`` seconds unless it is stuck)."""
        running = bool(self._loops) and not self._loops[0].done()
        beat = self._loop_beat
        return running and beat is not None and time.monotonic() - beat <= stale_after

    def wake(self, district_id: str = "") -> None:
        """Look for due jobs now; for ``district_id`` only if it has a free slot here. A
        busy district's jobs are left out of every claim, and finding that out reads past
        all of its due jobs: under a morning's backlog that read came once per accepted
        batch. Its next free slot (an attempt ending) or the poll looks again."""
        if district_id in self._known and not self._has_slot(district_id):
            return
        self._wake.set()

    def breaker(self, base_url: str) -> tuple[BreakerState, float]:
        """This process's view of a PowerSchool host: breaker state, seconds held back."""
        return self._politeness.view(base_url)

    async def wait_for(self, record_id: str, district_id: str, seconds: float) -> None:
        """Return when the record leaves PENDING (in any process) or ``seconds`` pass."""
        event = self._waiters.setdefault(record_id, asyncio.Event())
        try:
            await _until_not_pending(self._records, district_id, record_id, seconds, event)
        finally:
            self._waiters.pop(record_id, None)

    # -- claiming ---------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Every few seconds: say we are alive and learn how many workers share the limits."""
        if time.monotonic() < self._next_heartbeat:
            return
        self._next_heartbeat = time.monotonic() + _HEARTBEAT
        self._politeness.set_share(
            await self._workers.heartbeat(self.owner, alive_within=_HEARTBEAT * 3)
        )

    async def _run_loop(self) -> None:
        async with self._records.listening(self.wake):
            while True:
                self._loop_beat = time.monotonic()
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
                    async with asyncio.timeout(self.settings.poll):
                        await self._wake.wait()
                self._wake.clear()

    def _exclusions(self) -> tuple[list[str], list[str]]:
        """Districts not to claim for now (host paused, or this worker's share of calls in
        flight in use), and districts whose host is ready for one probe."""
        excluded, probes = [], []
        for district_id in self._known.keys() | self._active.keys():
            district = self._known.get(district_id)
            if district is not None and self._politeness.can_probe(district.powerschool.base_url):
                probes.append(district_id)
            elif not self._has_slot(district_id) or (
                district is not None and self._politeness.paused(district.powerschool.base_url)
            ):
                excluded.append(district_id)
        return excluded, probes

    def _has_slot(self, district_id: str) -> bool:
        # A district not seen yet gets the default share until its settings are known.
        # Under a backlog about two batches are claimed at once: one's shared read overlaps
        # the other's writes, and neither waits long enough for its read to go stale.
        district = self._known.get(district_id)
        in_flight = district.max_in_flight if district is not None else 0
        return (
            self._active[district_id] < self._politeness.slots(in_flight)
            and self._claimed[district_id] < BATCH
        )

    async def _dispatch(self) -> None:
        while len(self._tasks) < self.settings.concurrency:
            excluded, probes = self._exclusions()
            asked = time.monotonic()
            jobs = await self._records.claim_batch(
                self.owner, BATCH, lease=self.settings.lease, exclude=excluded + probes
            )
            if not jobs:
                break
            if not self._has_slot(jobs[0].district_id):
                # Claimed past the district's free slots: waiting here would hold the
                # leases and a worker slot while other districts wait. Back they go.
                for job in jobs:
                    await self._records.release(job)
                continue
            self._start(jobs, asked, probe=None)
        for district_id in probes:
            if len(self._tasks) >= self.settings.concurrency:
                return
            base_url = self._known[district_id].powerschool.base_url
            probe = await self._records.claim(
                self.owner, 1, lease=self.settings.lease, exclude=[], only=district_id
            )
            if probe and self._politeness.start_probe(base_url):
                self._start(probe, time.monotonic(), probe=base_url)
            elif probe:
                await self._records.release(probe[0])

    def _start(self, jobs: list[DeliveryJob], asked: float, *, probe: str | None) -> None:
        """Run claimed jobs of one district, school and date; ``asked`` is when the claim
        was asked for, so the local deadline is never later than the lease the database
        granted."""
        self._active[jobs[0].district_id] += 1
        self._claimed[jobs[0].district_id] += len(jobs)
        leases = {}
        for job in jobs:
            leases[job.lease_token] = self._leases[job.lease_token] = _Lease(
                job.lease_token, asked + self.settings.lease
            )
        task = asyncio.create_task(self._deliver_batch(jobs, leases, probe))
        self._tasks[task] = jobs
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A freed slot may have due work waiting (a backlog, or a retry now due).
        jobs = self._tasks.pop(task)
        district_id = jobs[0].district_id
        self._active[district_id] -= 1
        for job in jobs:
            if self._leases.pop(job.lease_token, None) is not None:  # did not finish
                self._claimed[district_id] -= 1
        if not self._active[district_id]:
            del self._active[district_id], self._claimed[district_id]
        self._wake.set()

    # -- leases -----------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        every = self.settings.lease / 3
        while True:
            await asyncio.sleep(every)
            leases = [lease for lease in self._leases.values() if not lease.lost]
            if not leases:
                continue
            asked = time.monotonic()
            try:
                held = await self._records.renew(
                    self.owner, [lease.token for lease in leases], lease=self.settings.lease
                )
            except Unavailable as exc:
                # Unknown: the local deadline stands, and attempts stop before writing
                # once it passes.
                log.warning("lease_renewal_failed", error=exc.message)
                continue
            for lease in leases:
                if lease.token in held:
                    lease.until = asked + self.settings.lease
                elif lease.token in self._leases:
                    lease.lost = True
                    log.warning("delivery_lease_lost", lease_token=lease.token)

    # -- one delivery -----------------------------------------------------------------

    async def _district(self, district_id: str) -> District:
        district = await self._districts.get(district_id)
        self._known[district_id] = district
        return district

    async def _deliver_batch(
        self, jobs: list[DeliveryJob], leases: dict[str, _Lease], probe: str | None
    ) -> None:
        """A batch's attempts: the shared day read if it pays, then the students' lanes, at
        most the district's share of calls in flight at once."""
        day, lanes, share = await self._prepare(jobs)
        slots = asyncio.Semaphore(share)

        async def one(job: DeliveryJob, record: AttendanceRecord | None) -> None:
            if record is None:  # our database was away: the attempt finds out for itself
                async with slots:
                    await self._deliver(job, leases[job.lease_token], probe)
                return
            key = (job.district_id, record.roster_id, record.att_date)
            turn = self._student_turns.setdefault(key, _Turn())
            turn.users += 1
            try:
                async with turn.lock, slots:
                    # An attempt for the student that ended after the shared read began
                    # (another batch's, or a job alone) may have written what it cannot show.
                    last = self._student_done.get(key)
                    fresh = day if day and rules.day_read_answers(day.read_at, last) else None
                    try:
                        await self._deliver(job, leases[job.lease_token], probe, fresh)
                    finally:
                        self._student_done[key] = time.monotonic()
            finally:
                turn.users -= 1
                if not turn.users:
                    del self._student_turns[key]

        async def lane(pairs: list[tuple[DeliveryJob, AttendanceRecord | None]]) -> None:
            for job, record in pairs:
                await one(job, record)
                # Done: nothing left to renew (a later claim of the job has a new token).
                if self._leases.pop(job.lease_token, None) is not None:
                    self._claimed[job.district_id] -= 1
                    self._wake.set()

        await asyncio.gather(*(lane(pairs) for pairs in lanes))

    async def _prepare(
        self, jobs: list[DeliveryJob]
    ) -> tuple[DayRows | None, list[list[tuple[DeliveryJob, AttendanceRecord | None]]], int]:
        """The batch's shared read of its school's day (None: not worth it, or it failed),
        its jobs with their records in lanes of one student each, and how many may run at
        once. Best effort: if our database is away, each attempt finds out for itself."""
        # Attempts that ended longer ago than a shared read stays fresh cannot make one stale.
        horizon = time.monotonic() - DAY_READ_FRESH
        for key in [k for k, at in self._student_done.items() if at < horizon]:
            del self._student_done[key]
        try:
            district = await self._district(jobs[0].district_id)
            records = [await self._records.get(j.district_id, j.record_id) for j in jobs]
        except (DomainError, Unavailable):
            return None, [[(job, None)] for job in jobs], 1
        share = self._politeness.slots(district.max_in_flight)
        lanes = rules.lanes(
            list(zip(jobs, records, strict=True)),
            key=lambda pair: pair[1].roster_id if pair[1] else pair[0].record_id,
        )
        first = next((r for r in records if r is not None), None)
        school = district.school_by_number(first.school_number) if first else None
        if (
            first is None
            or school is None
            or not self._deliverer.calls_powerschool(jobs[0].kind, first, district)
            or school.attendance_mode is not AttendanceMode.DAILY
            or not self._deliverer.day_read_pays(
                district.district_id, first.school_number, first.att_date, len(lanes)
            )
        ):
            return None, lanes, share
        try:
            day = await self._deliverer.read_day(
                district,
                first.school_number,
                first.att_date,
                pace=lambda: self._politeness.call(
                    district.district_id,
                    district.powerschool.base_url,
                    in_flight=district.max_in_flight,
                    rate=district.max_requests_per_second,
                    calls=1,
                ),
            )
        except HeldBack:
            day = None  # each attempt is held back, and goes back to the queue, on its own
        return day, lanes, share

    async def _deliver(
        self, job: DeliveryJob, lease: _Lease, probe: str | None, day: DayRows | None = None
    ) -> None:
        # A child of the span of the RPC that queued the job, however much later it runs.
        with tracing.continued(
            "attendance_delivery",
            job.traceparent,
            {
                "writeback.district_id": job.district_id,
                "writeback.record_id": job.record_id,
                "writeback.job": job.kind.value,
                "writeback.attempt": job.attempts,
            },
        ):
            await self._run_attempt(job, lease, probe, day)

    async def _run_attempt(
        self, job: DeliveryJob, lease: _Lease, probe: str | None, day: DayRows | None
    ) -> None:
        logs.bind(
            district_id=job.district_id,
            record_id=job.record_id,
            job=job.kind.value,
            attempt=job.attempts,
            request_id=job.request_id,
        )
        try:
            record = await self._records.get(job.district_id, job.record_id)
            if record is None:  # pragma: no cover  (jobs cascade with their records)
                return
            try:
                district = await self._district(job.district_id)
            except DomainError as exc:  # the district is gone
                await self._record(job, record, None, Outcome(AttendanceState.FAILED, exc.message))
                return
            pace = (
                self._politeness.call(
                    district.district_id,
                    district.powerschool.base_url,
                    in_flight=district.max_in_flight,
                    rate=district.max_requests_per_second,
                    # With a shared read, most attempts only write (a student's second record
                    # reads again: the cap is a little generous for it, never the in-flight
                    # one).
                    calls=1 if day is not None else 2,
                )
                if self._deliverer.calls_powerschool(job.kind, record, district)
                else contextlib.nullcontext()
            )
            async with pace:
                outcome = await self._deliverer.attempt(job.kind, record, district, lease, day)
            if lease.lost:
                # Another attempt owns the job: its outcome is the one that counts.
                log.warning("delivery_superseded", attempt=job.attempts)
                return
            await self._record(job, record, district, outcome)
        except HeldBack as held:
            await self._records.release(
                job, run_at=datetime.now(UTC) + timedelta(seconds=held.seconds)
            )
        except LeaseLost:
            log.warning("delivery_superseded", attempt=job.attempts)
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
                    _attempt(job, AttemptOutcome.RETRY, Outcome(None, "internal error")),
                )
        finally:
            if probe is not None:
                self._politeness.end_probe(probe)
            waiter = self._waiters.get(job.record_id)
            if waiter is not None:
                waiter.set()

    async def _record(
        self,
        job: DeliveryJob,
        record: AttendanceRecord,
        district: District | None,
        outcome: Outcome,
    ) -> None:
        base_url = district.powerschool.base_url if district else None
        if outcome.state is not None:
            contacted = outcome.reached or outcome.state in _ANSWERED
            if base_url is not None and contacted and self._politeness.answered(base_url):
                await self._reopen_host(base_url)
            saved = await self._records.finish(
                job,
                outcome.state,
                attempt=_attempt(job, AttemptOutcome(outcome.state.value), outcome),
                powerschool_attendance_id=outcome.attendance_id,
                code=outcome.code or None,
            )
            if saved is not None:  # counted once, by the attempt whose outcome stands
                self._observer.delivery_attempt(job.district_id, outcome.state.value)
            failed = outcome.state is AttendanceState.FAILED
            log.info(
                "attendance_delivery",
                state=outcome.state.value,
                attempt=job.attempts,
                error=outcome.message if failed else None,
                detail=None if failed else outcome.message or None,
                lease_lost=saved is None,
            )
            return
        assert outcome.failure is not None
        if base_url is not None and self._politeness.failed(base_url, outcome.failure):
            log.warning("powerschool_breaker_opened", base_url=base_url)
        age = (datetime.now(UTC) - (job.first_attempt_at or job.created_at)).total_seconds()
        if rules.gives_up(age, self.settings.max_age):
            message = rules.give_up_message(job.attempts, age, outcome.message)
            if await self._records.finish(
                job,
                AttendanceState.FAILED,
                attempt=_attempt(job, AttemptOutcome.FAILED, outcome, message),
            ):
                self._observer.delivery_attempt(job.district_id, AttemptOutcome.FAILED.value)
            log.error("attendance_delivery_gave_up", attempts=job.attempts)
            return
        delay = self.settings.backoff.delay(
            job.attempts,
            random.random(),  # noqa: S311  (full jitter, not crypto)
            failure=outcome.failure,
            breaker_wait=self._politeness.wait(base_url) if base_url else 0.0,
        )
        if await self._records.reschedule(
            job,
            datetime.now(UTC) + timedelta(seconds=delay),
            _attempt(job, AttemptOutcome.RETRY, outcome),
        ):
            self._observer.delivery_attempt(job.district_id, AttemptOutcome.RETRY.value)
        log.warning(
            "attendance_delivery_retry",
            attempt=job.attempts,
            delay_s=round(delay, 2),
            error=outcome.message,
        )

    async def _reopen_host(self, base_url: str) -> None:
        """The host answered again: its districts' backed-off jobs can go now."""
        for district_id, district in list(self._known.items()):
            if district.powerschool.base_url == base_url:
                await self._records.release_district(district_id)
        log.warning("powerschool_back", base_url=base_url)


class DeliveryElsewhere:
    """The attendance service's view of a queue whose workers run in other processes
    (ROLE=api): storing a job already NOTIFYs them, outcomes are read from the record's row,
    and this process has no breaker view."""

    def __init__(self, records: AttendanceStore) -> None:
        self._records = records

    def wake(self, _district_id: str = "") -> None:
        """Nothing to do: the store's NOTIFY on queueing wakes the workers."""

    def breaker(self, _base_url: str) -> tuple[BreakerState, float]:
        """Unknown: breakers live in the processes that deliver."""
        return BreakerState.UNKNOWN, 0.0

    async def wait_for(self, record_id: str, district_id: str, seconds: float) -> None:
        """Return when the record leaves PENDING or ``seconds`` pass."""
        await _until_not_pending(self._records, district_id, record_id, seconds, None)


async def _until_not_pending(
    records: AttendanceStore,
    district_id: str,
    record_id: str,
    seconds: float,
    signal: asyncio.Event | None,
) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        # Our own worker signals at once; another process's only via the row.
        if signal is None:
            await asyncio.sleep(min(left, _OUTCOME_POLL))
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, _OUTCOME_POLL)):
                    await signal.wait()
        record = await records.get(district_id, record_id)
        if record is None or record.state is not AttendanceState.PENDING:
            return


def _attempt(
    job: DeliveryJob, outcome: AttemptOutcome, result: Outcome, error: str | None = None
) -> DeliveryAttempt:
    return DeliveryAttempt(
        at=datetime.now(UTC),
        kind=job.kind,
        outcome=outcome,
        powerschool_status=result.status,
        attendance_code=result.code,
        yearid=result.yearid,
        error=result.message if error is None else error,
    )
