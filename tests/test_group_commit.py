"""Group commit: concurrent SubmitAttendance calls share a transaction, and each is answered
only after it is committed; replays, key reuse and corrections inside one batch behave as
they do across batches."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import World, authed_channel, failure, fast_settings, fresh_database, local

# Long enough that calls sent together on a loaded test machine still meet in one batch.
WAIT_MS = 500.0
HOLD = "hold the committer"


@pytest.fixture(scope="module")
async def batch_db(database_url: str) -> AsyncIterator[str]:
    """A database of this module's own: nothing else's worker or lock gets in the way."""
    async with fresh_database(database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def batch_stub(batch_db: str) -> AsyncIterator[writeback_pb2_grpc.WritebackServiceStub]:
    server = Server(fast_settings(batch_db, submit_batch_wait_ms=WAIT_MS))
    await server.start()
    try:
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            yield writeback_pb2_grpc.WritebackServiceStub(channel)
    finally:
        await server.stop()


@pytest.fixture
async def world(
    batch_stub: writeback_pb2_grpc.WritebackServiceStub, sim: PowerSchoolSimulator
) -> World:
    built = World(batch_stub, sim)
    await built.setup()
    # Delivery is not what these tests are about: PowerSchool stays out of the way.
    sim.faults.outage = True
    return built


@pytest.fixture
async def db(batch_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(batch_db)
    yield conn
    await conn.close()


def batches() -> tuple[float, float]:
    """Commits and rows so far, as the service's metric counts them."""
    count = REGISTRY.get_sample_value("writeback_submit_batch_rows_count") or 0.0
    rows = REGISTRY.get_sample_value("writeback_submit_batch_rows_sum") or 0.0
    return count, rows


async def submit(world: World, i: int, **extra: Any) -> pb.SubmitAttendanceResponse:
    fields: dict[str, Any] = {"idempotency_key": uuid.uuid4().hex, "wait_for_writeback": False}
    fields.update(extra)
    # The simulator has a few students: each pass over them is another school day.
    n = len(world.students)
    day = world.school_day(back=1 + i // n)
    return await world.submit(world.students[i % n], local(day, 8, 30), **fields)


async def stored_ids(db: asyncpg.Connection, world: World) -> set[str]:
    rows = await db.fetch(
        "SELECT record_id FROM attendance_records WHERE district_id = $1", world.district_id
    )
    return {str(r["record_id"]) for r in rows}


@asynccontextmanager
async def inserts_of(db: asyncpg.Connection, world: World, body: str) -> AsyncIterator[None]:
    """While the block runs, ``body`` (PL/pgSQL) runs before each insert of a record of this
    world's district (in this module's own database)."""
    await db.execute(
        "CREATE FUNCTION meddle() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.district_id = '{world.district_id}' THEN {body} END IF;"
        " RETURN NEW; END $$"
    )
    await db.execute(
        "CREATE TRIGGER meddle BEFORE INSERT ON attendance_records"
        " FOR EACH ROW EXECUTE FUNCTION meddle()"
    )
    try:
        yield
    finally:
        await db.execute("DROP TRIGGER meddle ON attendance_records")
        await db.execute("DROP FUNCTION meddle()")


@asynccontextmanager
async def committer_busy(
    world: World, db: asyncpg.Connection, also: str = ""
) -> AsyncIterator[None]:
    """While the block runs, a batch is being written (its insert sleeps, then is refused, so
    it stores nothing): calls made in the block wait up to WAIT_MS for each other, as they do
    under load. Without it a call that finds no batch being written goes at once. ``also`` is
    more PL/pgSQL for every insert (see :func:`inserts_of`)."""
    hold = f"IF NEW.comment = '{HOLD}' THEN PERFORM pg_sleep(1.5); RAISE EXCEPTION 'held'; END IF;"
    async with inserts_of(db, world, hold + also):
        # Its own student-day, weeks back: nothing the test sends is a correction of it.
        holder = asyncio.create_task(submit(world, 20 * len(world.students), comment=HOLD))
        for _ in range(200):
            if await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event = 'PgSleep'"
            ):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the holding check-in never reached its insert")
        yield
        with pytest.raises(grpc.aio.AioRpcError):
            await holder


async def test_concurrent_submissions_share_commits(world: World, db: asyncpg.Connection) -> None:
    """50 check-ins of 50 students at once: all accepted, all stored, in fewer commits."""
    before = batches()
    answers = await asyncio.gather(*(submit(world, i) for i in range(50)))
    after = batches()
    assert all(not a.replayed for a in answers)
    assert {a.record.record_id for a in answers} == await stored_ids(db, world)
    assert len({a.record.record_id for a in answers}) == 50
    jobs = await db.fetchval(
        "SELECT count(*) FROM delivery_jobs WHERE district_id = $1", world.district_id
    )
    assert jobs == 50
    assert after[1] - before[1] == 50
    assert after[0] - before[0] < 50


async def test_a_lone_submission_is_committed_alone(world: World) -> None:
    """With nobody else calling, a check-in does not wait for company: one commit, one row,
    answered sooner than the time a call waits for others while a batch is being written."""
    before = batches()
    started = time.monotonic()
    answer = await submit(world, 0)
    took = time.monotonic() - started
    after = batches()
    assert took < WAIT_MS / 1000
    assert answer.record.state == pb.ATTENDANCE_STATE_PENDING
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


async def test_the_same_key_twice_in_one_batch_is_one_record(
    world: World, db: asyncpg.Connection
) -> None:
    async with committer_busy(world, db):
        before = batches()
        answers = await asyncio.gather(
            *(submit(world, 0, idempotency_key="kiosk-1:1") for _ in "ab")
        )
        assert batches()[0] - before[0] == 1
    assert sorted(a.replayed for a in answers) == [False, True]
    assert answers[0].record == answers[1].record
    assert await stored_ids(db, world) == {answers[0].record.record_id}


async def test_a_key_reused_in_one_batch_names_the_fields_that_differ(
    world: World, db: asyncpg.Connection
) -> None:
    async with committer_busy(world, db):
        before = batches()
        answers: list[Any] = await asyncio.gather(
            submit(world, 0, idempotency_key="kiosk-2:1", reason="Dentist"),
            submit(world, 0, idempotency_key="kiosk-2:1", reason="Overslept", comment="Bus"),
            return_exceptions=True,
        )
        assert batches()[0] - before[0] == 1
    [won] = [a for a in answers if isinstance(a, pb.SubmitAttendanceResponse)]
    [lost] = [failure(a) for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert not won.replayed
    assert (lost.code, lost.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert lost.metadata == {"fields": "comment,reason"}
    assert await stored_ids(db, world) == {won.record.record_id}


async def test_two_stations_in_one_batch_make_one_corrected_record(
    world: World, db: asyncpg.Connection
) -> None:
    """Two check-ins of one student for one day with different keys, in one batch: the
    second corrects the first, as it would a record committed earlier."""
    async with committer_busy(world, db):
        before = batches()
        answers = await asyncio.gather(
            submit(world, 0, reason="Dentist"), submit(world, 0, reason="Overslept")
        )
        assert batches()[0] - before[0] == 1
    assert [a.replayed for a in answers] == [False, False]
    assert answers[0].record.record_id == answers[1].record.record_id
    [stored] = await db.fetch(
        "SELECT record_id, reason FROM attendance_records WHERE district_id = $1",
        world.district_id,
    )
    assert str(stored["record_id"]) == answers[0].record.record_id
    assert stored["reason"] in {"Dentist", "Overslept"}


async def test_a_batch_that_loses_its_database_answers_unavailable_and_stores_nothing(
    world: World, db: asyncpg.Connection
) -> None:
    """The database connection dies while a batch is being written: its callers hear
    UNAVAILABLE, none of their keys is kept, every OK answer is a stored record, and a retry
    with the same key stores the record."""
    keys = [f"kiosk-3:{i}" for i in range(10)]
    async with inserts_of(db, world, "PERFORM pg_sleep(30);"):
        calls = [
            asyncio.create_task(submit(world, i, idempotency_key=key)) for i, key in enumerate(keys)
        ]
        stalled: list[int] = []
        for _ in range(200):
            stalled = [
                r["pid"]
                for r in await db.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event = 'PgSleep'"
                )
            ]
            if stalled:
                break
            await asyncio.sleep(0.05)
        assert stalled
        for pid in stalled:
            await db.execute("SELECT pg_terminate_backend($1)", pid)
    answers: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
    ok = {a.record.record_id for a in answers if isinstance(a, pb.SubmitAttendanceResponse)}
    failed = [keys[i] for i, a in enumerate(answers) if isinstance(a, grpc.aio.AioRpcError)]
    assert failed
    assert {failure(a).code for a in answers if isinstance(a, grpc.aio.AioRpcError)} == {
        grpc.StatusCode.UNAVAILABLE
    }
    assert ok <= await stored_ids(db, world)
    kept = await db.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE district_id = $1"
        " AND idempotency_key = ANY($2::text[])",
        world.district_id,
        failed,
    )
    assert kept == 0
    retried = await asyncio.gather(
        *(submit(world, keys.index(key), idempotency_key=key) for key in failed)
    )
    assert all(not r.replayed for r in retried)
    assert len(await stored_ids(db, world)) == len(keys)


async def test_one_refused_row_does_not_fail_the_others(
    world: World, db: asyncpg.Connection
) -> None:
    """The database refuses one check-in of a batch: that caller gets an error, the others
    are stored and answered OK."""
    async with committer_busy(
        world, db, "IF NEW.comment = 'refuse me' THEN RAISE EXCEPTION 'refused'; END IF;"
    ):
        before = batches()
        answers: list[Any] = await asyncio.gather(
            *(submit(world, i, comment="refuse me" if i == 3 else "") for i in range(8)),
            return_exceptions=True,
        )
        assert batches()[0] - before[0] == 1
    assert isinstance(answers[3], grpc.aio.AioRpcError)
    assert answers[3].code() is grpc.StatusCode.INTERNAL
    ok = [a for i, a in enumerate(answers) if i != 3]
    assert all(isinstance(a, pb.SubmitAttendanceResponse) for a in ok)
    assert {a.record.record_id for a in ok} == await stored_ids(db, world)


async def test_a_caller_gone_while_its_batch_commits_finds_its_record_on_retry(
    world: World, db: asyncpg.Connection
) -> None:
    """A check-in whose deadline passes while its batch is being written is committed
    whole: its retry replays the stored record."""
    async with inserts_of(db, world, "PERFORM pg_sleep(1);"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit(world, 0, idempotency_key="kiosk-4:1", deadline=0.5)
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    again = await submit(world, 0, idempotency_key="kiosk-4:1")
    assert again.replayed
    assert await stored_ids(db, world) == {again.record.record_id}


async def test_a_correction_whose_record_is_cancelled_meanwhile_is_a_new_record(
    world: World, db: asyncpg.Connection
) -> None:
    """A second check-in of a student and day is a correction of the first record; if that
    record is cancelled while the batch is being written, the check-in is stored as a new
    record (as it would be had it come after the cancel), and the cancelled one stays so."""
    first = await submit(world, 0)
    slow = "slow insert"
    async with committer_busy(
        world, db, f"IF NEW.comment = '{slow}' THEN PERFORM pg_sleep(1); END IF;"
    ):
        calls = asyncio.gather(
            submit(world, 0, reason="Overslept"),  # corrects the first record
            submit(world, 1, comment=slow),  # new: its insert holds the batch
        )
        for _ in range(200):
            sleeping = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event = 'PgSleep'"
            )
            if sleeping == 2:  # the holder, and this batch inside its insert
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the batch never reached its insert")
        await db.execute(
            "UPDATE attendance_records SET state = 'cancelled' WHERE record_id = $1",
            uuid.UUID(first.record.record_id),
        )
        correction, other = await calls
    assert not correction.replayed
    assert correction.record.record_id != first.record.record_id
    assert correction.record.reason == "Overslept"
    assert other.record.record_id != first.record.record_id
    states = dict(
        await db.fetch(
            "SELECT record_id::text, state FROM attendance_records WHERE district_id = $1",
            world.district_id,
        )
    )
    assert states[first.record.record_id] == "cancelled"
    assert states[correction.record.record_id] != "cancelled"
    assert len(states) == 3
