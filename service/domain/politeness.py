"""Politeness toward each PowerSchool server, and self-protection from it: a circuit breaker
per host that pauses its districts while it is down, a "not before" time per host set by
429 Retry-After answers, and per-district caps on calls in flight and calls per second,
split between the live delivery processes.

Everything is behind :class:`Politeness`'s methods; nothing outside mutates its state.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from service.domain.observe import NoObserver, Observer
from service.domain.rules import Classified

# Defaults for a district that sets no limits. PowerSchool documents no rate limit; public
# clients keep to about 3 concurrent reads. Deliveries claimed together cost about 1.05
# calls per record (one write each, plus a shared page of the school's day), so a morning's
# backlog of 1,000 check-ins against a PowerSchool answering in 100 ms needs about 1,050
# calls: 6 in flight allow 60 calls/s and the rate cap of 50/s binds, about 21 s (measured
# 20.7 s); 4 in flight (40 calls/s, about 26 s at best) measured 29.5 s on a quiet machine
# and 48.6 s on a busy one. Calls are single-row writes and one-page reads; the trickle of
# a normal morning (a few check-ins per school per minute) stays far below either cap.
DEFAULT_IN_FLIGHT = 6
DEFAULT_RATE = 50
# PowerSchool calls per delivery alone: the read-before-write and the write. A delivery
# whose row came from a shared read of its school's day makes one (and each page of that
# read is one).
CALLS = 2

Clock = Callable[[], float]


class HeldBack(Exception):
    """The host asked us to wait (Retry-After) this many seconds before calling again."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"held back {seconds:.1f} s by Retry-After")
        self.seconds = seconds


class BreakerState(enum.StrEnum):
    """Closed: calls flow. Open: paused until the cooldown ends. Half-open: one probe."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    UNKNOWN = "unknown"
    """Not a breaker's state: a process that delivers nothing (ROLE=api) has no view."""


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures that say the server is down; after the
    cooldown one probe may go; a failed probe doubles the cooldown (up to ``max_cooldown``),
    any success closes it."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 2.0,
        max_cooldown: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._current = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The state now."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() >= self._opened_at + self._current:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def wait(self) -> float:
        """Seconds until a probe may go (0 if closed or due)."""
        if self._opened_at is None:
            return 0.0
        return max(self._opened_at + self._current - self._clock(), 0.0)

    def can_probe(self) -> bool:
        """Half-open with no probe under way."""
        return self.state is BreakerState.HALF_OPEN and not self._probing

    def start_probe(self) -> bool:
        """Take the one probe; False if it is not due or already taken."""
        if not self.can_probe():
            return False
        self._probing = True
        return True

    def end_probe(self) -> None:
        """However the probe ended, the breaker must not wait for it forever."""
        self._probing = False

    def success(self) -> bool:
        """The server answered; True if this closed an open breaker."""
        was_open = self._opened_at is not None
        self._failures, self._opened_at, self._probing, self._current = 0, None, False, 0.0
        return was_open

    def failure(self) -> bool:
        """A failure that says the server is down; True if this opened the breaker."""
        self._failures += 1
        if self._opened_at is not None:  # a failed probe: wait longer
            self._current = min(self._current * 2, self._max_cooldown)
            self._opened_at, self._probing = self._clock(), False
            return False
        if self._failures >= self._threshold:
            self._opened_at, self._current = self._clock(), self._cooldown
            return True
        return False


class InFlightLimit:
    """A counting limit whose capacity can change while calls hold it: the count carries
    over, so lowering or raising the cap never lets more than the cap through."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(capacity, 1)
        self._active = 0
        self._changed = asyncio.Condition()

    @property
    def active(self) -> int:
        """Calls holding the limit now."""
        return self._active

    @property
    def capacity(self) -> int:
        """The cap now."""
        return self._capacity

    async def resize(self, capacity: int) -> None:
        """Change the cap; waiters are re-checked against it."""
        async with self._changed:
            self._capacity = max(capacity, 1)
            self._changed.notify_all()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Wait for room under the cap, hold it for the block."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._active < self._capacity)
            self._active += 1
        try:
            yield
        finally:
            async with self._changed:
                self._active -= 1
                self._changed.notify_all()


@dataclass
class _District:
    in_flight: InFlightLimit
    limiter: AsyncLimiter
    settings: tuple[int, int, int]


@dataclass
class _Host:
    breaker: CircuitBreaker
    not_before: float = 0.0  # monotonic; set from Retry-After
    reported: BreakerState = BreakerState.CLOSED  # the state the observer last heard of


class Politeness:
    """Circuit breakers and Retry-After holds per PowerSchool host, and this process's
    share of each district's limits."""

    def __init__(
        self,
        *,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 2.0,
        breaker_max_cooldown: float = 30.0,
        clock: Clock = time.monotonic,
        observer: Observer | None = None,
    ) -> None:
        self._breaker = (breaker_threshold, breaker_cooldown, breaker_max_cooldown)
        self._clock = clock
        self._observer = observer or NoObserver()
        self._hosts: dict[str, _Host] = {}
        self._districts: dict[str, _District] = {}
        self._share = 1

    def _host(self, base_url: str) -> _Host:
        host = self._hosts.get(base_url)
        if host is None:
            host = self._hosts[base_url] = _Host(CircuitBreaker(*self._breaker, clock=self._clock))
        return host

    def _report(self, base_url: str, host: _Host) -> None:
        # Open turns half-open as time passes, not on a call: the next look at the host
        # (the worker looks at every known host each dispatch) reports it.
        state = host.breaker.state
        if state is not host.reported:
            host.reported = state
            self._observer.breaker_changed(base_url, state.value)

    def set_share(self, workers: int) -> None:
        """How many live delivery processes split each district's limits (this one too)."""
        self._share = max(workers, 1)

    def slots(self, in_flight: int) -> int:
        """This process's share of a district's calls in flight."""
        return max(math.ceil((in_flight or DEFAULT_IN_FLIGHT) / self._share), 1)

    def paused(self, base_url: str) -> bool:
        """No call to this host now: its breaker is open or probing, or Retry-After holds."""
        host = self._host(base_url)
        self._report(base_url, host)
        return host.breaker.state is not BreakerState.CLOSED or host.not_before > self._clock()

    def can_probe(self, base_url: str) -> bool:
        """The host's breaker is half-open and its one probe is free."""
        host = self._host(base_url)
        self._report(base_url, host)
        return host.breaker.can_probe()

    def start_probe(self, base_url: str) -> bool:
        """Take the host's one probe."""
        return self._host(base_url).breaker.start_probe()

    def end_probe(self, base_url: str) -> None:
        """The probe ended, however it ended."""
        self._host(base_url).breaker.end_probe()

    def answered(self, base_url: str) -> bool:
        """PowerSchool answered (whatever it said); True if that closed an open breaker."""
        host = self._host(base_url)
        closed = host.breaker.success()
        self._report(base_url, host)
        return closed

    def failed(self, base_url: str, failure: Classified) -> bool:
        """A transient failure; True if it opened the breaker."""
        host = self._host(base_url)
        if failure.retry_after:
            host.not_before = max(host.not_before, self._clock() + failure.retry_after)
        if failure.server_down:
            opened = host.breaker.failure()
            self._report(base_url, host)
            return opened
        host.breaker.end_probe()
        return False

    def wait(self, base_url: str) -> float:
        """Seconds before the host may be called again (breaker cooldown, Retry-After)."""
        host = self._host(base_url)
        return max(host.breaker.wait(), host.not_before - self._clock(), 0.0)

    def view(self, base_url: str) -> tuple[BreakerState, float]:
        """A host's breaker state and how many seconds its calls are held back (0 if none)."""
        host = self._hosts.get(base_url)
        if host is None:
            return BreakerState.CLOSED, 0.0
        held = max(host.not_before - self._clock(), 0.0)
        if host.breaker.state is BreakerState.OPEN:
            held = max(held, host.breaker.wait())
        return host.breaker.state, held

    async def _limits(self, district_id: str, in_flight: int, rate: int) -> _District:
        wanted = (in_flight or DEFAULT_IN_FLIGHT, rate or DEFAULT_RATE, self._share)
        limits = self._districts.get(district_id)
        if limits is None:
            limits = self._districts[district_id] = _District(
                InFlightLimit(self.slots(in_flight)), _limiter(wanted[1], self._share), wanted
            )
        elif limits.settings != wanted:
            await limits.in_flight.resize(self.slots(in_flight))
            limits.limiter = _limiter(wanted[1], self._share)
            limits.settings = wanted
        return limits

    @asynccontextmanager
    async def call(
        self, district_id: str, base_url: str, *, in_flight: int, rate: int, calls: int = CALLS
    ) -> AsyncIterator[None]:
        """Hold one of the district's call slots and wait for its rate limit to allow
        ``calls`` calls (at most :data:`CALLS`), then call. Raises :class:`HeldBack` instead
        of sleeping out a Retry-After (the job goes back to the queue, where its lease
        cannot run out)."""
        limits = await self._limits(district_id, in_flight, rate)
        async with limits.in_flight.hold():
            await limits.limiter.acquire(min(max(calls, 1), CALLS))
            wait = self._host(base_url).not_before - self._clock()
            if wait > 0:
                raise HeldBack(wait)
            yield


def _limiter(rate: int, share: int) -> AsyncLimiter:
    per_second = rate / share
    # Room for one delivery's CALLS calls at once, at the same average rate.
    burst = max(per_second, CALLS)
    return AsyncLimiter(burst, burst / per_second)
