"""The Clever and ClassLink adapters (production client code) against the simulators over
real HTTP: paging edge cases, rate limits and retries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from service.classlink import ClassLinkClient
from service.clever import CleverClient
from service.models import ClassLinkConnection, CleverConnection
from service.roster import RetryPolicy, RosterUnavailable
from simulators.classlink import ClassLinkSimulator
from simulators.clever import CleverSimulator
from simulators.powerschool import demo_dataset
from simulators.roster import RosterPerson, roster_from_powerschool

QUICK = RetryPolicy(attempts=5, timeout=30, wait_initial=0.05, wait_max=0.5, wait_jitter=0.05)


def people(source: str, per_school: int) -> list[RosterPerson]:
    return roster_from_powerschool(demo_dataset(students_per_school=per_school), source)  # type: ignore[arg-type]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def clever_ids(http: aiohttp.ClientSession, sim: CleverSimulator, page: int) -> list[str]:
    client = CleverClient(
        http,
        CleverConnection(
            base_url=sim.base_url,
            client_id=sim.client_id,
            client_secret=sim.client_secret,
            clever_district_id=sim.district_id,
        ),
        page_size=page,
        retry=QUICK,
    )
    return [s.roster_id async for batch in client.students() for s in batch]


class TestCleverPaging:
    @pytest.mark.parametrize(
        ("students", "page", "spurious", "bare_next"),
        [
            (12, 4, False, False),  # exact multiple: the last full page's next link is empty
            (11, 4, False, False),  # short last page
            (11, 4, True, False),  # spurious prev links, and a next link after the short page
            (12, 5, False, True),  # next links without role and limit
            (0, 4, False, False),  # empty district
        ],
    )
    async def test_reads_every_student_exactly_once(
        self,
        http: aiohttp.ClientSession,
        students: int,
        page: int,
        spurious: bool,
        bare_next: bool,
    ) -> None:
        roster = people("clever", students // 2)
        sim = CleverSimulator(roster, spurious_links=spurious, next_link_keeps_params=not bare_next)
        await sim.start()
        try:
            ids = await clever_ids(http, sim, page)
        finally:
            await sim.stop()
        assert sorted(ids) == sorted(p.roster_id for p in roster)
        assert len(ids) == len(set(ids))
        user_calls = [c for c in sim.calls if c.path == "/v3.0/users"]
        assert all(c.query.get("role") == "student" for c in user_calls)

    async def test_waits_out_the_rate_limit(self, http: aiohttp.ClientSession) -> None:
        """Three requests a second: reading 7 pages must wait for the window to reset, on
        the X-Ratelimit headers rather than by hammering 429s."""
        roster = people("clever", 10)
        sim = CleverSimulator(roster, rate_limit=3, rate_window=1.0)
        await sim.start()
        try:
            started = time.monotonic()
            ids = await clever_ids(http, sim, 3)
            elapsed = time.monotonic() - started
        finally:
            await sim.stop()
        assert len(ids) == 20
        assert elapsed >= 1.0
        assert sum(1 for c in sim.calls if c.status == 429) <= 1

    async def test_retries_server_errors_and_html_pages(self, http: aiohttp.ClientSession) -> None:
        roster = people("clever", 3)
        # A queued 429 says "wait for the window to reset": keep the window short.
        sim = CleverSimulator(roster, rate_window=1.0)
        sim.faults.queue.extend([(503, True), (500, False), (429, False)])
        await sim.start()
        try:
            ids = await clever_ids(http, sim, 100)
        finally:
            await sim.stop()
        assert len(ids) == 6

    async def test_gives_up_when_clever_stays_down(self, http: aiohttp.ClientSession) -> None:
        sim = CleverSimulator(people("clever", 1))
        sim.faults.outage = True
        await sim.start()
        try:
            with pytest.raises(RosterUnavailable):
                await clever_ids(http, sim, 100)
        finally:
            await sim.stop()


async def classlink_ids(
    http: aiohttp.ClientSession, sim: ClassLinkSimulator, page: int
) -> list[str]:
    client = ClassLinkClient(
        http,
        ClassLinkConnection(
            endpoint_url=sim.base_url, client_id=sim.client_id, client_secret=sim.client_secret
        ),
        page_size=page,
        retry=QUICK,
    )
    return [s.roster_id async for batch in client.students() for s in batch.students]


class TestClassLinkPaging:
    @pytest.mark.parametrize(("students", "page"), [(12, 4), (11, 4), (0, 4), (7, 100)])
    async def test_reads_every_student_exactly_once(
        self, http: aiohttp.ClientSession, students: int, page: int
    ) -> None:
        roster = people("classlink", students // 2) if students else []
        if students % 2:
            roster = roster[:students]
        sim = ClassLinkSimulator(roster)
        await sim.start()
        try:
            ids = await classlink_ids(http, sim, page)
        finally:
            await sim.stop()
        assert sorted(ids) == sorted(p.roster_id for p in roster)
        assert len(ids) == len(set(ids))
        assert sim.rejected_signatures == 0
        assert all(c.query.get("sort") == "sourcedId" for c in sim.calls)

    async def test_honours_retry_after_on_429(self, http: aiohttp.ClientSession) -> None:
        sim = ClassLinkSimulator(people("classlink", 3))
        sim.faults.queue.append((429, 0.6))
        await sim.start()
        try:
            started = time.monotonic()
            ids = await classlink_ids(http, sim, 100)
            elapsed = time.monotonic() - started
        finally:
            await sim.stop()
        assert len(ids) == 6
        assert elapsed >= 0.6
        # A retried request is signed afresh: its nonce was not refused as a replay.
        assert sim.rejected_signatures == 0
