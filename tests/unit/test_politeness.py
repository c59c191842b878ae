"""Circuit breaker, Retry-After holds and per-district limits, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from service.domain.politeness import (
    BreakerState,
    CircuitBreaker,
    HeldBack,
    InFlightLimit,
    Politeness,
)
from service.domain.rules import Classified, Verdict

HOST = "https://ps.example.org"
DOWN = Classified(Verdict.RETRY, server_down=True)
BUSY = Classified(Verdict.RETRY, server_down=False, retry_after=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestBreaker:
    def test_opens_after_threshold_then_one_probe_after_cooldown(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(threshold=3, cooldown=2, max_cooldown=8, clock=clock)
        assert not breaker.failure()
        assert not breaker.failure()
        assert breaker.failure()
        assert breaker.state is BreakerState.OPEN
        assert breaker.wait() == 2
        assert not breaker.start_probe()
        clock.now += 2
        assert breaker.state is BreakerState.HALF_OPEN
        assert breaker.start_probe()
        assert not breaker.start_probe()  # one probe at a time

    def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(threshold=1, cooldown=2, max_cooldown=5, clock=clock)
        breaker.failure()
        waits = []
        for _ in range(4):
            clock.now += breaker.wait()
            assert breaker.start_probe()
            breaker.failure()
            waits.append(breaker.wait())
        assert waits == [4, 5, 5, 5]

    def test_a_success_closes_it_and_says_so_once(self) -> None:
        breaker = CircuitBreaker(threshold=1, clock=Clock())
        breaker.failure()
        assert breaker.success()
        assert breaker.state is BreakerState.CLOSED
        assert not breaker.success()

    def test_a_probe_that_ended_without_an_answer_frees_the_probe(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(threshold=1, cooldown=1, clock=clock)
        breaker.failure()
        clock.now += 1
        assert breaker.start_probe()
        breaker.end_probe()
        assert breaker.can_probe()


class TestPoliteness:
    def test_busy_answers_hold_the_host_but_do_not_open_the_breaker(self) -> None:
        clock = Clock()
        polite = Politeness(breaker_threshold=1, clock=clock)
        assert not polite.failed(HOST, BUSY)
        assert polite.view(HOST) == (BreakerState.CLOSED, 30)
        assert polite.paused(HOST)
        clock.now += 30
        assert not polite.paused(HOST)

    def test_down_answers_open_the_breaker_and_an_answer_closes_it(self) -> None:
        clock = Clock()
        polite = Politeness(breaker_threshold=2, breaker_cooldown=3, clock=clock)
        assert not polite.failed(HOST, DOWN)
        assert polite.failed(HOST, DOWN)
        assert polite.view(HOST) == (BreakerState.OPEN, 3)
        assert polite.wait(HOST) == 3
        clock.now += 3
        assert polite.can_probe(HOST)
        assert polite.start_probe(HOST)
        assert polite.answered(HOST)
        assert polite.view(HOST) == (BreakerState.CLOSED, 0)

    def test_the_observer_hears_each_breaker_change_once(self) -> None:
        """Open, half-open when the cooldown has passed (seen at the next look), open again
        after a failed probe, closed after an answer: each reported once, in order."""
        heard: list[tuple[str, str]] = []

        class Recorder:
            def breaker_changed(self, base_url: str, state: str) -> None:
                heard.append((base_url, state))

            def delivery_attempt(self, district_id: str, outcome: str) -> None:
                raise AssertionError("politeness reports no attempts")

        clock = Clock()
        polite = Politeness(
            breaker_threshold=2, breaker_cooldown=3, clock=clock, observer=Recorder()
        )
        polite.failed(HOST, DOWN)
        polite.failed(HOST, BUSY)
        assert heard == []
        polite.failed(HOST, DOWN)
        polite.paused(HOST)
        clock.now += 3
        assert polite.can_probe(HOST)
        polite.paused(HOST)
        polite.start_probe(HOST)
        polite.failed(HOST, DOWN)
        clock.now += 6
        polite.can_probe(HOST)
        polite.start_probe(HOST)
        polite.answered(HOST)
        polite.answered(HOST)
        states = ["open", "half_open", "open", "half_open", "closed"]
        assert heard == [(HOST, state) for state in states]

    def test_limits_are_split_between_processes(self) -> None:
        polite = Politeness()
        assert polite.slots(8) == 8
        polite.set_share(3)
        assert polite.slots(8) == 3
        assert polite.slots(0) == 2  # the default of 4, shared
        polite.set_share(10)
        assert polite.slots(4) == 1

    async def test_a_retry_after_hold_sends_the_job_back_instead_of_sleeping(self) -> None:
        clock = Clock()
        polite = Politeness(clock=clock)
        polite.failed(HOST, BUSY)
        with pytest.raises(HeldBack) as held:
            async with polite.call("d-1", HOST, in_flight=4, rate=100):
                pass
        assert held.value.seconds == 30

    async def test_changing_a_districts_limit_never_lets_more_than_the_cap_through(self) -> None:
        polite = Politeness()
        inside = peak = 0
        release = asyncio.Event()

        async def call(limit: int) -> None:
            nonlocal inside, peak
            async with polite.call("d-1", HOST, in_flight=limit, rate=10_000):
                inside += 1
                peak = max(peak, inside)
                await release.wait()
                inside -= 1

        first = [asyncio.create_task(call(4)) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert inside == 4
        # The admin lowers the limit to 2 while 4 calls are in flight: new calls wait until
        # fewer than 2 are in flight, instead of getting a fresh semaphore of 2.
        second = [asyncio.create_task(call(2)) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert inside == 4
        release.set()
        await asyncio.gather(*first, *second)
        assert peak == 4


async def test_in_flight_limit_resizes_under_load() -> None:
    limit = InFlightLimit(1)
    entered = asyncio.Event()
    gate = asyncio.Event()

    async def hold() -> None:
        async with limit.hold():
            entered.set()
            await gate.wait()

    holders = [asyncio.create_task(hold()) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert limit.active == 1
    await limit.resize(3)
    await asyncio.sleep(0.02)
    assert limit.active == 3
    gate.set()
    await asyncio.gather(*holders)
    assert limit.active == 0
