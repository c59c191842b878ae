"""Politeness and self-protection toward each PowerSchool server: a circuit breaker per
host that pauses its districts' queues while it is down, a "not before" time set by 429
Retry-After answers, and per-district caps on calls in flight and calls per second."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

DEFAULT_IN_FLIGHT = 4
DEFAULT_RATE = 20
# PowerSchool calls per delivery: the read-before-write and the write.
CALLS = 2


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


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; the cooldown doubles on each failed
    probe up to ``max_cooldown``; one success closes it."""

    threshold: int = 5
    cooldown: float = 2.0
    max_cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    current_cooldown: float = 0.0
    probing: bool = False

    @property
    def state(self) -> BreakerState:
        """The state now."""
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.probing or time.monotonic() >= self.opened_at + self.current_cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_at(self) -> float:
        """Monotonic time of the next probe (now if closed)."""
        if self.opened_at is None:
            return time.monotonic()
        return self.opened_at + self.current_cooldown

    def success(self) -> bool:
        """Record a success; True if this closed an open breaker."""
        was_open = self.opened_at is not None
        self.failures, self.opened_at, self.probing = 0, None, False
        self.current_cooldown = 0.0
        return was_open

    def failure(self) -> None:
        """Record a failure that says the server is down."""
        self.failures += 1
        if self.opened_at is not None:  # a failed probe: wait longer
            self.current_cooldown = min(self.current_cooldown * 2, self.max_cooldown)
            self.opened_at, self.probing = time.monotonic(), False
        elif self.failures >= self.threshold:
            self.opened_at, self.current_cooldown = time.monotonic(), self.cooldown


@dataclass
class HostGuard:
    """Everything known about one PowerSchool host."""

    breaker: CircuitBreaker
    not_before: float = 0.0  # monotonic; set from Retry-After


@dataclass
class DistrictGuard:
    """Per-district caps."""

    in_flight: asyncio.Semaphore
    limiter: AsyncLimiter
    settings: tuple[int, int, int] = (0, 0, 1)


@dataclass
class Guards:
    """Guards by host and by district, created on first use."""

    breaker_threshold: int = 5
    breaker_cooldown: float = 2.0
    breaker_max_cooldown: float = 30.0
    hosts: dict[str, HostGuard] = field(default_factory=dict)
    districts: dict[str, DistrictGuard] = field(default_factory=dict)
    share: int = 1
    """How many delivery workers split each district's limits (this one included)."""

    def host(self, base_url: str) -> HostGuard:
        """The guard of a PowerSchool host."""
        guard = self.hosts.get(base_url)
        if guard is None:
            guard = HostGuard(
                CircuitBreaker(
                    self.breaker_threshold, self.breaker_cooldown, self.breaker_max_cooldown
                )
            )
            self.hosts[base_url] = guard
        return guard

    def district(self, district_id: str, in_flight: int, rate: int) -> DistrictGuard:
        """The guard of a district: this worker's share of its limits, rebuilt when the
        limits or the number of workers change."""
        share = max(self.share, 1)
        wanted = (in_flight or DEFAULT_IN_FLIGHT, rate or DEFAULT_RATE, share)
        guard = self.districts.get(district_id)
        if guard is None or guard.settings != wanted:
            slots = self.slots(in_flight)
            per_second = wanted[1] / share
            # Room for one delivery's CALLS calls at once, at the same average rate.
            burst = max(per_second, CALLS)
            guard = DistrictGuard(
                asyncio.Semaphore(slots), AsyncLimiter(burst, burst / per_second), wanted
            )
            self.districts[district_id] = guard
        return guard

    def view(self, base_url: str) -> tuple[BreakerState, float]:
        """A host's breaker state and how many seconds its calls are held back (0 if none)."""
        host = self.hosts.get(base_url)
        if host is None:
            return BreakerState.CLOSED, 0.0
        now = time.monotonic()
        held = host.not_before - now
        if host.breaker.state is BreakerState.OPEN:
            held = max(held, host.breaker.retry_at() - now)
        return host.breaker.state, max(held, 0.0)

    def slots(self, in_flight: int) -> int:
        """This worker's share of a district's calls in flight."""
        return max(math.ceil((in_flight or DEFAULT_IN_FLIGHT) / max(self.share, 1)), 1)

    @asynccontextmanager
    async def call(self, district: DistrictGuard, host: HostGuard) -> AsyncIterator[None]:
        """Hold an in-flight slot and wait for the rate limit, then call. Raises
        :class:`HeldBack` instead of sleeping out a Retry-After (the job goes back to the
        queue, where its lease cannot run out)."""
        async with district.in_flight:
            await district.limiter.acquire(CALLS)
            wait = host.not_before - time.monotonic()
            if wait > 0:
                raise HeldBack(wait)
            yield
