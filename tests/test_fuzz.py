"""Every RPC of ``writeback.v1.WritebackService`` fuzzed with hypothesis: at least 10,000
generated requests (typed messages built from the service descriptor, so a new RPC is
covered without touching this file, and raw bytes) through an authenticated channel and
through a second channel without credentials. No answer may be UNKNOWN or INTERNAL; afterwards the
service is SERVING, its memory has not grown past a bound, and every query PowerSchool
received is one of the service's own fixed shapes with digits in it.

The service runs in this process (a server of this module's own, on a database of its own),
so the memory measured is this process's resident set, service and test together."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from simulators.clever import CleverSimulator
from tests.conftest import LogCapture
from tests.helpers import World, authed_channel, fast_settings, local
from tests.test_roster_sync import clever_district

pytestmark = pytest.mark.fuzz

SERVICE = pb.DESCRIPTOR.services_by_name["WritebackService"]
METHODS = list(SERVICE.methods)
REQUESTS = 10_000  # measured, after WARM_UP more
WARM_UP = 1_000
# Per hypothesis example, sent at once: a slow RPC in a batch overlaps the others.
TYPED, UNAUTHENTICATED, RAW = 36, 4, 2
PER_EXAMPLE = TYPED + UNAUTHENTICATED + 2 * RAW
CALL_TIMEOUT = 3.0
# Measured here: after the warm-up the resident set wanders between about 120 and 200 MiB
# (allocator arenas of the grpc, hypothesis and worker threads) without trending up; a leak
# of a few KiB per request, or of any 1 MB value, passes this.
RSS_GROWTH_BOUND = 150 * 1024 * 1024
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

# What the service itself puts in a PowerSchool ``q=`` filter: field==digits (and dates,
# and attendance modes), joined by ';'. Anything else got there from a request.
_N = r"\d+"
SAFE_QUERIES = [
    re.compile(p)
    for p in (
        rf"(dcid|id)=={_N}",
        rf"schoolid=={_N};isyearrec==1",
        rf"schoolid=={_N};yearid=={_N}",
        rf"schoolid=={_N};yearid=={_N};att_mode_code==ATT_Mode(Daily|Meeting|Time)",
        rf"studentid=={_N};att_date==\d{{4}}-\d\d-\d\d;att_mode_code==ATT_Mode(Daily|Meeting)",
        rf"schoolid=={_N};att_date==\d{{4}}-\d\d-\d\d;att_mode_code==ATT_ModeDaily;id=gt={_N}",
    )
]
SAFE_PATH = re.compile(r"/[A-Za-z0-9_./-]+")

META = [
    ";",
    "==",
    "'",
    "--",
    ",",
    "1;id==2",
    "1,2,3",
    "dcid=ge=0",
    "' OR '1'='1",
    "1' OR 1=1 --",
    "1); DROP TABLE students; --",
    "x'; SELECT pg_sleep(10); --",
    '"',
    "\\",
    "%",
    "*",
    "$1",
    "(",
    "1e999",
    "0x10",
    "-0",
    " 1",
    "\uff11\uff12\uff13",  # fullwidth digits: isdigit() says yes
    "\u00b2",  # superscript two: isdigit() says yes, int() says no
]
HUGE = ["x" * 1_000_000, "é" * 500_000, "1" * 65_600, "\x00" * 70_000]
INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 2**32]
RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


class Seeds:
    """Values that reach past validation, by field name: the fuzz world's districts,
    students, records and sync jobs, so fuzzed requests also exercise the deep paths."""

    def __init__(self, world: World, loopback_urls: list[str]) -> None:
        students = world.students[:4]
        self.urls = loopback_urls
        self.messages: dict[tuple[str, int], st.SearchStrategy[Message]] = {}
        self.strings: dict[str, list[str]] = {
            "district_id": [world.district_id, world.district_id, "fuzz-other", "fuzz-upsert"],
            "sis_id": [str(s.dcid) for s in students] + [str(s.id) for s in students],
            "student_number": [s.student_number for s in students],
            "roster_id": [],
            "roster_school_id": ["sch-100", "sch-200"],
            "idempotency_key": ["fuzz-key-1", "fuzz-key-2"],
            "record_id": [str(uuid.uuid4())],
            "sync_id": [str(uuid.uuid4())],
            "date_from": [],
            "date_to": [],
            "timezone": ["America/Chicago", "UTC", "Mars/Olympus"],
            "late_check_in_code": ["T"],
            "early_check_out_code": ["ED"],
            "client_id": [world.sim.client_id],
            "client_secret": [world.sim.client_secret],
            "name": ["Fuzz"],
        }
        day = world.school_day()
        self.strings["date_from"] = [day.isoformat(), "2026-02-30", "0001-01-01"]
        self.strings["date_to"] = [day.isoformat(), "9999-12-31"]
        self.day = day
        self.ints: dict[str, list[int]] = {
            "school_number": [100, 200, 300],
            "powerschool_id": [s.id for s in students],
            "page_size": [1, 100, 500, 501],
            "sample_size": [1, 50],
            "seconds": [
                int(local(day, 9, 30).timestamp()),
                int(datetime.now(UTC).timestamp()),
                int((datetime.now(UTC) + timedelta(days=2)).timestamp()),
                253402300800,  # year 10000
            ],
        }


def strings(seeds: Seeds, name: str) -> st.SearchStrategy[str]:
    own = seeds.strings.get(name) or ["1"]
    # Weighted towards values that pass validation, so most requests reach the domain;
    # huge values are rare (one draw in 20): most requests should get past the size caps.
    kinds = ["seed"] * 10 + ["plain"] * 4 + ["meta"] * 3 + ["text"] * 2 + ["nul", "huge"]
    return st.sampled_from(kinds).flatmap(
        lambda kind: {
            "seed": st.sampled_from(own),
            "plain": st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=12),
            "meta": st.tuples(
                st.sampled_from(own), st.sampled_from(META), st.sampled_from(own)
            ).map("".join),
            "text": st.text(max_size=24),
            "nul": st.text(max_size=8).map(lambda t: f"{t}\x00{t}"),
            "huge": st.sampled_from(HUGE),
        }[kind]
    )


def integers(seeds: Seeds, name: str, low: int, high: int) -> st.SearchStrategy[int]:
    edges = [i for i in INT_EDGES + seeds.ints.get(name, []) if low <= i <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def scalar(seeds: Seeds, field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return strings(seeds, field.name)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # Proto3 enums are open: an unknown number reaches the service as is.
        return st.one_of(st.sampled_from(known * 3), st.integers(-(2**31), 2**31 - 1))
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    low, high = RANGES[field.type]
    return integers(seeds, field.name, low, high)


def message(seeds: Seeds, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of ``descriptor``: each field set or not, at most one per oneof,
    up to three elements per repeated field."""
    key = (descriptor.full_name, depth)
    if key not in seeds.messages:
        seeds.messages[key] = _message(seeds, descriptor, depth)
    return seeds.messages[key]


def _message(seeds: Seeds, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Message:
        msg = GetMessageClass(descriptor)()
        chosen_oneofs = {
            o.name: draw(st.sampled_from([None, *(f.name for f in o.fields)]))
            for o in descriptor.oneofs
        }
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and chosen_oneofs[oneof.name] != field.name:
                continue
            if oneof is None and draw(st.integers(0, 4)) == 0:  # four in five set
                continue
            is_message = field.type == FieldDescriptor.TYPE_MESSAGE
            if is_message and depth >= 3:
                continue
            element = (
                message(seeds, field.message_type, depth + 1)
                if is_message
                else scalar(seeds, field)
            )
            if field.is_repeated:
                values = draw(st.lists(element, max_size=3))
                target = getattr(msg, field.name)
                for value in values:
                    if is_message:
                        target.add().CopyFrom(value)
                    else:
                        target.append(value)
            elif is_message:
                getattr(msg, field.name).CopyFrom(draw(element))
            else:
                setattr(msg, field.name, draw(element))
        return fence(seeds, msg)

    return build()


def fence(seeds: Seeds, msg: Message) -> Message:
    """Keep every upstream a fuzzed district could be given on loopback: an http(s) URL
    that is not one of this test's simulators, or a missing one (the real Clever API is the
    default), becomes a simulator's URL."""
    for field in ("base_url", "endpoint_url"):
        if field in msg.DESCRIPTOR.fields_by_name:
            value = getattr(msg, field)
            # Anything mentioning http could parse as a URL (urlsplit drops leading blanks).
            if value not in seeds.urls and (not value or "http" in value.lower()):
                setattr(msg, field, seeds.urls[0])
    return msg


def raw_bodies(seeds: Seeds, descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Random bytes, and valid messages with bytes spliced in (they get further)."""
    spliced = st.tuples(
        message(seeds, descriptor).map(lambda m: m.SerializeToString()),
        st.integers(0, 64),
        st.binary(min_size=1, max_size=8),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :])
    return st.one_of(st.binary(max_size=256), spliced)


def rss() -> int:
    """This process's resident memory once garbage is collected and the C allocator has
    returned its free pages (what is kept, not what was last in flight)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.fixture
async def server(own_database: str) -> AsyncIterator[Server]:
    """A service of this module's own, on a database of its own (shadowing the session's):
    the districts the fuzzer creates, with schedules and URLs of simulators gone after the
    test, must not reach any other test's service."""
    srv = Server(fast_settings(own_database))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    """The fuzz target, called as the test admin."""
    async with authed_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> writeback_pb2_grpc.WritebackServiceStub:
    return writeback_pb2_grpc.WritebackServiceStub(channel)


@pytest.fixture
async def unauthenticated(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the same server carrying no credentials at all."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def fuzz_world(world: World, clever: CleverSimulator, seeds: Seeds) -> None:
    """A Clever district on the simulators with its synced roster, one delivered record and
    a sync job."""
    await clever_district(world, clever)
    synced = await world.stub.SyncRoster(
        pb.SyncRosterRequest(district_id=world.district_id), timeout=30
    )
    seeds.strings["sync_id"].append(synced.sync_id)
    for s in world.students[:4]:
        seeds.strings["roster_id"].append((await world.resolve(sis_id=str(s.dcid))).roster_id)
    submitted = await world.submit(world.students[0], local(seeds.day, 9, 30))
    seeds.strings["record_id"].append(submitted.record.record_id)


# The in-process service (delivery jitter, the simulators) draws from the global `random`
# while hypothesis generates in its thread; hypothesis takes that for a strategy using it.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_every_rpc_survives_fuzzed_requests(
    world: World,
    clever: CleverSimulator,
    channel: grpc.aio.Channel,
    unauthenticated: grpc.aio.Channel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = Seeds(world, [world.sim.base_url, clever.base_url])
    await fuzz_world(world, clever, seeds)
    loop = asyncio.get_running_loop()
    calls = {
        (which, m.name): ch.unary_unary(
            f"/{SERVICE.full_name}/{m.name}",
            request_serializer=lambda body: body,
            response_deserializer=lambda body: body,
        )
        for which, ch in (("session", channel), ("unauthenticated", unauthenticated))
        for m in METHODS
    }
    sent: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    bad: list[tuple[str, str, str, bytes]] = []

    async def send(which: str, method: str, body: bytes) -> grpc.StatusCode:
        sent[f"{method} ({which})"] += 1
        try:
            await calls[which, method](body, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code in FORBIDDEN:
                bad.append((method, which, str(err.details()), body[:200]))
        else:
            code = grpc.StatusCode.OK
        codes[code.name] += 1
        return code

    async def batch(requests: list[tuple[str, str, bytes]]) -> list[grpc.StatusCode]:
        return await asyncio.gather(*(send(*r) for r in requests))

    typed = st.sampled_from(METHODS).flatmap(
        lambda m: message(seeds, m.input_type).map(lambda msg: (m.name, msg.SerializeToString()))
    )
    raw = st.sampled_from(METHODS).flatmap(
        lambda m: raw_bodies(seeds, m.input_type).map(lambda body: (m.name, body))
    )

    def check(
        session: list[tuple[str, bytes]],
        anonymous: list[tuple[str, bytes]],
        garbage: list[tuple[str, bytes]],
    ) -> None:
        requests = [("session", m, b) for m, b in session + garbage]
        requests += [("unauthenticated", m, b) for m, b in anonymous + garbage]
        answered = asyncio.run_coroutine_threadsafe(batch(requests), loop).result()
        assert not FORBIDDEN & set(answered), bad[-3:]

    def run(requests: int) -> None:
        settings(
            max_examples=-(-requests // PER_EXAMPLE),
            deadline=None,
            database=None,
            # The service's state moves on with every request, so a failing example does
            # not replay the same: no shrinking; ``bad`` keeps each forbidden answer's body.
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(
            given(
                st.lists(typed, min_size=TYPED, max_size=TYPED),
                st.lists(typed, min_size=UNAUTHENTICATED, max_size=UNAUTHENTICATED),
                st.lists(raw, min_size=RAW, max_size=RAW),
            )(check)
        )()

    try:
        # The first requests grow the heap to its working size (allocator arenas, grpc's
        # buffers, hypothesis): growth is measured from after them.
        await asyncio.to_thread(run, WARM_UP)
        before, started = rss(), time.monotonic()
        await asyncio.to_thread(run, REQUESTS)
        after, took = rss(), time.monotonic() - started
    finally:
        await fence_off(world, clever, seeds)

    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE.full_name):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    queries = [c.query["q"] for c in world.sim.calls if "q" in c.query]
    unsafe = [q for q in queries if not any(p.fullmatch(q) for p in SAFE_QUERIES)]
    odd_paths = [c.path for c in world.sim.calls if not SAFE_PATH.fullmatch(c.path)]

    with capsys.disabled():
        print(f"\nfuzz: {sum(sent.values())} requests, the last {REQUESTS} in {took:.1f} s")
        for name, count in sorted(sent.items()):
            print(f"  {name:45} {count:6}")
        print("  status codes: " + ", ".join(f"{k} {v}" for k, v in codes.most_common()))
        print(f"  RSS before {before / 2**20:.0f} MiB, after {after / 2**20:.0f} MiB")
        print(f"  PowerSchool queries: {len(queries)}, unsafe: {len(unsafe)}")

    assert bad == []
    assert sum(sent.values()) >= REQUESTS + WARM_UP
    assert {m.name for m in METHODS} <= {name.split(" ")[0] for name in sent}
    assert after - before < RSS_GROWTH_BOUND
    assert queries, "nothing reached PowerSchool: the seeds no longer reach the deep paths"
    assert unsafe == []
    assert odd_paths == []


async def fence_off(world: World, clever: CleverSimulator, seeds: Seeds) -> None:
    """Turn the fuzzed districts' writeback and schedules off, so the session server's
    worker and scheduler leave them alone for the rest of the run."""
    for district_id in seeds.strings["district_id"]:
        district = world.district_pb(
            district_id=district_id,
            writeback_enabled=False,
            clever=pb.CleverConnection(base_url=clever.base_url, clever_district_id="x"),
        )
        await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district), timeout=10)


async def test_a_malformed_district_id_stays_out_of_the_log(
    stub: writeback_pb2_grpc.WritebackServiceStub, logs: LogCapture
) -> None:
    """Found by fuzzing: the access log wrote the caller's district_id as sent, so one
    ImportStudents call put a megabyte (or control characters) into a log line."""
    mark = logs.tell()
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id="x" * 1_000_000 + "\n{}", students=[pb.RosterStudent(roster_id="r")]
            )
        )
    lines = [json.loads(line) for line in logs.since(mark).splitlines()]
    (rpc,) = [line for line in lines if line["event"] == "rpc"]
    assert rpc["district_id"] == "(invalid)"
    assert rpc["grpc_code"] == "INVALID_ARGUMENT"
    assert len(logs.since(mark)) < 2000
