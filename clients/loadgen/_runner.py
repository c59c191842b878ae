"""Running a load: one process's open or closed loop (:func:`measure`), and several client
processes started together whose histograms and counts are merged (:func:`run`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from hdrh.histogram import HdrHistogram
from writeback.v1 import writeback_pb2 as pb

from clients._errors import WritebackError
from clients.loadgen._report import HIGHEST_US, Counts, Result, new_histogram
from clients.loadgen._scenarios import METHODS, Call, Kind, Options, Stream

# The open loop wakes this early for a send: timers fire late by up to a millisecond (epoll's
# resolution) and that lateness would count as latency. A call sent early is measured from
# its actual send instead.
_LEAD = 0.001
# An open loop that has fallen behind sends at most this many overdue calls before it lets
# the event loop run them.
_BURST = 64
# How long the target has to answer the first call before it counts as unreachable.
_CONNECT_TIMEOUT = 5.0
# Processes start at this wall-clock margin after the last one is ready (same start for all).
_START_MARGIN = 0.2
_OK = grpc.StatusCode.OK


class Unreachable(Exception):
    """The target did not answer (exit status 1)."""


def channel(options: Options) -> grpc.aio.Channel:
    """A channel to the target with a connection of its own (not shared with the process's
    other channels, so ``--channels`` means connections)."""
    args = [("grpc.use_local_subchannel_pool", 1)]
    if options.tls is None:
        return grpc.aio.insecure_channel(options.target, options=args)
    creds = grpc.ssl_channel_credentials(options.tls.ca, options.tls.key, options.tls.cert)
    return grpc.aio.secure_channel(options.target, creds, options=args)


def _metadata(options: Options) -> tuple[tuple[str, str], ...]:
    # Built once: every call sends the same tuple (the echo scenario sends none).
    if options.scenario == "echo" or not options.token:
        return ()
    return (("authorization", f"Bearer {options.token}"),)


async def preflight(options: Options) -> str:
    """Check that the target answers (the district exists and the token may read it, unless
    echo) and return the district's time zone ("UTC" for echo). Raises :class:`Unreachable`,
    or :class:`~clients.WritebackError` for an answer that is an error."""
    async with channel(options) as ch:
        try:
            if options.scenario == "echo":
                check = ch.unary_unary(
                    METHODS[0],
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                await check(health_pb2.HealthCheckRequest(), timeout=_CONNECT_TIMEOUT)
                return "UTC"
            get = ch.unary_unary(
                "/writeback.v1.WritebackService/GetDistrict",
                request_serializer=pb.GetDistrictRequest.SerializeToString,
                response_deserializer=pb.GetDistrictResponse.FromString,
            )
            answer = await get(
                pb.GetDistrictRequest(district_id=options.district),
                timeout=_CONNECT_TIMEOUT,
                metadata=_metadata(options),
            )
            return str(answer.district.timezone) or "UTC"
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unreachable(f"cannot reach {options.target}: {err.details()}") from None
            raise WritebackError.from_rpc_error(err) from None


@dataclass
class _Tally:
    """One process's outcomes of the calls that count (intended in the measured window)."""

    histogram: HdrHistogram = field(default_factory=new_histogram)
    counts: Counts = field(default_factory=Counts)
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    accepted: list[bytes] = field(default_factory=list)


class _Process:
    """One process's share of the load: its calls, channels and tallies."""

    def __init__(self, options: Options, index: int, timezone: str, run_id: str) -> None:
        self.o = options
        self.stream = Stream(options, index, timezone=timezone, run_id=run_id)
        self.channels = [channel(options) for _ in range(options.channels)]
        # One multicallable per method and channel, bytes in and out: requests are already
        # serialized, and only a replay's answer is ever parsed.
        self.callables: list[list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]] = [
            [ch.unary_unary(m) for m in METHODS] for ch in self.channels
        ]
        self.metadata = _metadata(options)
        self.tally = _Tally()
        self.keep_accepted = options.replay_share > 0
        self.window = (0.0, 0.0)

    async def ready(self) -> None:
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                for ch in self.channels:
                    await ch.channel_ready()
        except TimeoutError:
            raise Unreachable(f"cannot reach {self.o.target}") from None

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()

    def next_call(self, i: int) -> Call:
        call = self.stream.call(i)
        if call.kind == Kind.SUBMIT and self.keep_accepted:
            return self.stream.replay(self.tally.accepted) or call
        return call

    async def one(self, i: int, call: Call, intended: float, slot: float | None = None) -> None:
        """Make one call; count it if it was meant for the measured window (at ``slot``, its
        place in the schedule, when that is not ``intended``, the time it could be sent)."""
        send = self.callables[i % len(self.callables)][call.method]
        sent = time.perf_counter()
        try:
            answer = await send(call.payload, timeout=self.o.timeout, metadata=self.metadata)
            code = _OK
        except grpc.aio.AioRpcError as err:
            answer, code = b"", err.code()
        done = time.perf_counter()
        start, end = self.window
        if not start <= (intended if slot is None else slot) < end:
            return
        # From the intended send time: a stall in this client or in the server shows up in
        # every call it delayed (no coordinated omission); from the actual send if earlier.
        micros = round((done - min(sent, intended)) * 1e6)
        self.tally.histogram.record_value(min(max(1, micros), HIGHEST_US))
        self._count(call, code, answer)

    def _count(self, call: Call, code: grpc.StatusCode, answer: bytes) -> None:
        t, c = self.tally, self.tally.counts
        c.completed += 1
        if call.kind == Kind.REPLAY:
            c.replays_sent += 1
        if code == _OK:
            c.ok += 1
            if call.kind == Kind.REPLAY:
                c.replays += pb.SubmitAttendanceResponse.FromString(answer).replayed
            elif call.kind == Kind.SUBMIT and self.keep_accepted:
                t.accepted.append(call.payload)
            return
        t.errors[code.name] += 1
        if call.kind == Kind.MISS and code == grpc.StatusCode.NOT_FOUND:
            c.misses += 1
        else:
            t.unexpected[code.name] += 1

    async def _work(self, i: int, intended: float, then: float | None) -> None:
        """Call ``i``; for the rush (``then`` given), the check-in ``i + 1`` after it, as a
        front desk checks a student in once the lookup answered: at ``then`` (its place in the
        schedule, which decides whether it is counted) or when the answer came, whichever is
        later (its latency is counted from then: a slow lookup is the lookup's latency)."""
        await self.one(i, self.next_call(i), intended)
        if then is None:
            return
        if (wait := then - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        await self.one(i + 1, self.next_call(i + 1), max(then, time.perf_counter()), then)

    async def open_loop(self, t0: float, index: int) -> None:
        o = self.o
        assert o.rate is not None
        interval = o.processes / o.rate
        first = t0 + index / o.rate  # the processes' schedules interleave
        stop = t0 + o.warmup + o.duration
        start, end = self.window
        pending: set[asyncio.Task[None]] = set()
        pairs = o.scenario == "rush"
        i = burst = 0
        while (now := time.perf_counter()) < stop:
            intended = first + i * interval
            if intended >= stop:
                break
            if intended > now + _LEAD:
                burst = 0
                await asyncio.sleep(intended - now - _LEAD)
                continue
            if burst == _BURST:
                burst = 0
                await asyncio.sleep(0)
            then = intended + interval if pairs else None
            task = asyncio.create_task(self._work(i, intended, then))
            pending.add(task)
            task.add_done_callback(pending.discard)
            for slot in (intended,) if then is None else (intended, then):
                if start <= slot < end:
                    self.tally.counts.sent += 1
            i += 2 if pairs else 1
            burst += 1
        # The calls it was meant to send in the window, sent or not (a client that could not
        # keep up shows as a ratio below 1).
        first_counted = max(0, math.ceil((start - first) / interval))
        self.tally.counts.intended = max(0, math.ceil((end - first) / interval) - first_counted)
        if pending:
            await asyncio.wait(pending)

    async def closed_loop(self, t0: float, workers: int) -> None:
        end = self.window[1]
        counter = iter(range(1 << 62))
        step = 2 if self.o.scenario == "rush" else 1

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                i = next(counter) * step
                await self._work(i, now, now if step == 2 else None)

        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        await asyncio.gather(*(worker() for _ in range(workers)))


async def _cpu_during(window: tuple[float, float]) -> float:
    """CPU seconds (user+sys, all threads) this process uses during the window."""
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    before = time.process_time()
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    return time.process_time() - before


async def _nothing() -> float:
    return 0.0


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


async def _measure_share(
    options: Options,
    index: int,
    timezone: str,
    run_id: str,
    start: Callable[[], float],
    *,
    count_cpu: bool = True,
) -> dict[str, Any]:
    """Process ``index``'s share of the run; ``start`` returns the perf_counter time the
    clock starts at (after the channels are connected)."""
    share = _Process(options, index, timezone, run_id)
    try:
        await share.ready()
        t0 = start()
        share.window = (t0 + options.warmup, t0 + options.warmup + options.duration)
        cpu = asyncio.create_task(_cpu_during(share.window) if count_cpu else _nothing())
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        if options.rate is not None:
            await share.open_loop(t0, index)
        else:
            await share.closed_loop(t0, _share(options.in_flight, options.processes, index))
        t = share.tally
        return {
            "histogram": t.histogram.encode(),
            "counts": t.counts,
            "errors": dict(t.errors),
            "unexpected": dict(t.unexpected),
            "cpu": await cpu,
        }
    finally:
        await share.close()


def _merge(options: Options, parts: list[dict[str, Any]], started: float) -> Result:
    histogram = new_histogram()
    counts = Counts()
    errors: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    for part in parts:
        histogram.add(HdrHistogram.decode(part["histogram"]))
        counts.add(part["counts"])
        errors.update(part["errors"])
        unexpected.update(part["unexpected"])
    return Result(
        options,
        histogram,
        counts,
        dict(errors),
        dict(unexpected),
        client_cpu_s=sum(p["cpu"] for p in parts),
        started_at=datetime.fromtimestamp(started, UTC),
        per_process_completed=[p["counts"].completed for p in parts],
    )


async def measure(options: Options) -> Result:
    """Run the load from this process's event loop (all of ``options.processes``' shares
    in it, no other process): for embedding in an asyncio program or a test."""
    timezone = await preflight(options)
    run_id = secrets.token_hex(4)
    started = time.time() + _START_MARGIN
    t0 = time.perf_counter() + _START_MARGIN
    parts = await asyncio.gather(
        *(
            _measure_share(options, k, timezone, run_id, lambda: t0, count_cpu=k == 0)
            for k in range(options.processes)
        )
    )
    return _merge(options, list(parts), started)


def _worker(conn: Connection, options: Options, index: int, timezone: str, run_id: str) -> None:
    """A client process: connect, say ready, wait for the start time, run, send the tally."""
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 (optional: a cheaper event loop when installed)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    def start() -> float:
        conn.send(("ready", None))
        wall: float = conn.recv()
        return time.perf_counter() + (wall - time.time())

    try:
        part = asyncio.run(_measure_share(options, index, timezone, run_id, start))
    except Unreachable as err:
        conn.send(("unreachable", str(err)))
    except Exception as err:  # reported by the parent, which exits 1
        conn.send(("error", f"{type(err).__name__}: {err}"))
    else:
        conn.send(("done", part))
    finally:
        conn.close()


def run(options: Options) -> Result:
    """Run the load from ``options.processes`` client processes started together, each
    with its own event loop and channels, and merge their histograms and counts."""
    timezone = asyncio.run(preflight(options))
    run_id = secrets.token_hex(4)
    context = multiprocessing.get_context("spawn")
    links: list[Connection] = []
    workers = []
    for k in range(options.processes):
        mine, theirs = context.Pipe()
        proc = context.Process(
            target=_worker, args=(theirs, options, k, timezone, run_id), daemon=True
        )
        proc.start()
        theirs.close()
        links.append(mine)
        workers.append(proc)
    try:
        for link in links:
            _expect(options, link, "ready", 60.0)
        started = time.time() + _START_MARGIN
        for link in links:
            link.send(started)
        patience = options.warmup + options.duration + options.timeout + 60.0
        parts = [_expect(options, link, "done", patience) for link in links]
    finally:
        for proc in workers:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.kill()
    return _merge(options, parts, started)


def _expect(options: Options, link: Connection, what: str, patience: float) -> Any:
    if not link.poll(patience):
        raise RuntimeError(f"a client process sent nothing for {patience:.0f} s")
    try:
        kind, body = link.recv()
    except EOFError:
        raise RuntimeError("a client process ended without a result") from None
    if kind == "unreachable":
        raise Unreachable(body)
    if kind != what:
        raise RuntimeError(f"a client process failed: {body}")
    return body
