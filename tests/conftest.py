"""Fixtures that run the real parts: embedded PostgreSQL, the service's gRPC server on a
free port, and a PowerSchool simulator over real HTTP."""

from __future__ import annotations

import io
import os

# Before grpc is imported (as the service's package does): tests start subprocesses while
# gRPC is busy, and its fork handlers would print "skipping fork() handlers" each time.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.logs import configure
from service.store import EmbeddedPostgres
from simulators.classlink import ClassLinkSimulator
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator, demo_dataset
from simulators.roster import roster_from_powerschool
from tests.helpers import (
    TEST_ADMIN_TOKEN,
    TEST_SECRET_KEY,
    World,
    authed_channel,
    fast_settings,
    fresh_database,
)

# `python -m service` processes the tests start inherit this: on a shared host they would
# all want the default metrics port. A test that wants metrics sets METRICS_PORT itself.
os.environ.setdefault("METRICS_PORT", "0")
# They need the suite's secret key (an external database has no key file), and reach the
# simulators over plain http on loopback.
os.environ.setdefault("WRITEBACK_SECRET_KEY", TEST_SECRET_KEY)
os.environ.setdefault("ALLOW_INSECURE_UPSTREAMS", "1")
# ... and this identity: the services' bootstrap admin, and the CLI's token.
os.environ.setdefault("WRITEBACK_BOOTSTRAP_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
os.environ.setdefault("WRITEBACK_TOKEN", TEST_ADMIN_TOKEN)


class LogCapture(io.StringIO):
    """Everything the service logged during the test session."""

    def isatty(self) -> bool:
        return False

    def since(self, mark: int) -> str:
        """The lines written after ``mark`` (a previous ``tell()``)."""
        return self.getvalue()[mark:]


@pytest.fixture(scope="session")
def logs() -> LogCapture:
    capture = LogCapture()
    # DEBUG: tests follow each HTTP call, which is logged at debug.
    configure("DEBUG", "json", stream=capture)
    return capture


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    # Not under pytest's tmp_path: pytest deletes all but its three newest base directories,
    # so a second pytest run on the machine would delete this server's data under it.
    data = Path(tempfile.mkdtemp(prefix="writeback-test-pg-"))
    pg = EmbeddedPostgres(data)
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
async def own_database(database_url: str) -> AsyncIterator[str]:
    """A database of the test's own (see :func:`tests.helpers.fresh_database`)."""
    async with fresh_database(database_url) as url:
        yield url


@pytest.fixture(scope="session")
async def server(database_url: str, logs: LogCapture) -> AsyncIterator[Server]:
    srv = Server(fast_settings(database_url))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(scope="session")
async def channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    async with authed_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> writeback_pb2_grpc.WritebackServiceStub:
    return writeback_pb2_grpc.WritebackServiceStub(channel)


@pytest.fixture
async def sim() -> AsyncIterator[PowerSchoolSimulator]:
    simulator = PowerSchoolSimulator(
        demo_dataset(students_per_school=10), client_id=f"sim-{uuid.uuid4().hex[:8]}"
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def clever(sim: PowerSchoolSimulator) -> AsyncIterator[CleverSimulator]:
    """A Clever simulator rostering the PowerSchool simulator's students."""
    simulator = CleverSimulator(roster_from_powerschool(sim.dataset, "clever"))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def classlink(sim: PowerSchoolSimulator) -> AsyncIterator[ClassLinkSimulator]:
    """A ClassLink Roster Server rostering the PowerSchool simulator's students."""
    simulator = ClassLinkSimulator(roster_from_powerschool(sim.dataset, "classlink"))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def world(stub: writeback_pb2_grpc.WritebackServiceStub, sim: PowerSchoolSimulator) -> World:
    return World(stub, sim)
