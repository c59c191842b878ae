"""Outbound calls are fenced: https only (plain http to loopback with the flag), no
connection to an address that is loopback, link-local (cloud metadata), private or otherwise
non-public unless allowlisted, checked on the resolved address, no redirect to another host,
and capped bodies.

No test here sends a packet beyond loopback: host names resolve through a stub resolver, and
every socket connect is recorded and stopped unless it is to loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.models import CleverConnection
from service.outbound import OutboundPolicy, OutboundRefused
from service.powerschool import PowerSchoolBlocked, PowerSchoolPool
from service.roster import RosterError
from service.roster_pool import RosterPool
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import World, authed_channel, failure, fast_settings

NAMES = {
    "ps.test.invalid": ["10.1.2.3"],
    "metadata.test.invalid": ["169.254.169.254"],
    "mixed.test.invalid": ["93.184.216.34", "192.168.7.7"],
    "v6.test.invalid": ["fe80::1"],
    "localhost": ["127.0.0.1"],
}


class StubResolver(AbstractResolver):
    """Answers from ``NAMES`` only; never asks a DNS server."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in NAMES[host.rstrip(".")]
        ]

    async def close(self) -> None:
        pass


# Set for this test's own code and the tasks it starts (they copy its context); the session
# service's background work (a delivery retrying to an earlier test's simulator) began before
# and is not counted.
_THIS_TEST: ContextVar[bool] = ContextVar("connects_of_this_test", default=False)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every TCP connect this test makes; one beyond loopback, whoever makes it, is stopped
    before it leaves."""
    made: list[tuple[str, int]] = []
    real = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = address[0], address[1]
            if _THIS_TEST.get():
                made.append((host, port))
            if host not in ("127.0.0.1", "::1"):
                raise OSError("the test stopped a connection beyond loopback")
        real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    token = _THIS_TEST.set(True)
    yield made
    _THIS_TEST.reset(token)


def pool(policy: OutboundPolicy, resolver: AbstractResolver | None = None) -> PowerSchoolPool:
    return PowerSchoolPool(policy=policy, timeout=2.0, resolver=resolver or StubResolver())


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("https://ps.test.invalid", "10.1.2.3 (private address)"),
        ("https://metadata.test.invalid", "169.254.169.254 (link-local (cloud metadata) address)"),
        ("https://mixed.test.invalid", "192.168.7.7 (private address)"),
        ("https://v6.test.invalid", "fe80::1 (link-local address)"),
        ("https://169.254.169.254", "(link-local (cloud metadata) address)"),
        ("https://10.0.0.5:8443", "10.0.0.5 (private address)"),
        ("https://[::ffff:172.16.0.9]", "(private address)"),
        ("https://0.0.0.0", "0.0.0.0 (unspecified address)"),
        ("http://ps.example.org", "plain http://"),
    ],
)
async def test_refused_before_any_connection(
    url: str, named: str, connects: list[tuple[str, int]]
) -> None:
    ps = pool(OutboundPolicy(allow_insecure=True))
    try:
        with pytest.raises(PowerSchoolBlocked) as err:
            await ps.client(url, "id", "secret").authenticate()
    finally:
        await ps.close()
    assert named in str(err.value)
    assert "secret" not in str(err.value)
    assert connects == []


async def test_loopback_and_http_need_the_flag(
    sim: PowerSchoolSimulator, connects: list[tuple[str, int]]
) -> None:
    port = int(sim.base_url.rsplit(":", 1)[1])
    strict = pool(OutboundPolicy())
    try:
        for url in (sim.base_url, f"https://127.0.0.1:{port}", f"https://localhost:{port}"):
            with pytest.raises(PowerSchoolBlocked, match=r"plain http|loopback"):
                await strict.client(url, sim.client_id, sim.client_secret).authenticate()
    finally:
        await strict.close()
    assert [c for c in connects if c[1] == port] == []
    # With the flag, the simulator on loopback answers over plain http.
    relaxed = pool(OutboundPolicy(allow_insecure=True))
    try:
        await relaxed.client(sim.base_url, sim.client_id, sim.client_secret).authenticate()
    finally:
        await relaxed.close()


def test_http_to_an_allowlisted_host_needs_the_flag_too() -> None:
    """A local stack (compose) reaches its simulators by name over plain http only when both
    the flag is on and the host is allowlisted."""
    url = "http://powerschool:8081"
    for policy in (
        OutboundPolicy(allowlist=("powerschool",)),
        OutboundPolicy(allow_insecure=True),
    ):
        with pytest.raises(OutboundRefused, match="plain http"):
            policy.check_url(url)
    OutboundPolicy(allow_insecure=True, allowlist=("powerschool",)).check_url(url)


async def test_an_allowlisted_host_or_network_is_connected_to(
    connects: list[tuple[str, int]],
) -> None:
    for allowlist in (("ps.test.invalid",), ("10.0.0.0/8",)):
        ps = pool(OutboundPolicy(allowlist=allowlist))
        try:
            with pytest.raises(Exception, match="unreachable"):
                await ps.client("https://ps.test.invalid", "id", "s").authenticate()
        finally:
            await ps.close()
    # The policy let both through; the test's guard stopped them at the socket.
    assert connects == [("10.1.2.3", 443), ("10.1.2.3", 443)]


async def test_a_roster_host_resolving_to_a_private_address_is_refused(
    connects: list[tuple[str, int]],
) -> None:
    rosters = RosterPool(policy=OutboundPolicy(), resolver=StubResolver())
    try:
        clever = rosters.clever(CleverConnection("https://ps.test.invalid", "", "", "token"))
        with pytest.raises(RosterError, match=r"10.1.2.3 \(private address\)"):
            await clever.schools()
    finally:
        await rosters.close()
    assert connects == []


@pytest.fixture
async def odd_server() -> AsyncIterator[TestServer]:
    """A loopback server whose token endpoint redirects elsewhere, or answers 5 MB."""

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.2:9/oauth/access_token")

    async def huge(request: web.Request) -> web.StreamResponse:
        # Chunked, with no Content-Length to refuse early: the cap must count as it reads.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"access_token": "')
        for _ in range(80):
            await resp.write(b"x" * (64 << 10))
        await resp.write(b'"}')
        return resp

    app = web.Application()
    app.router.add_post("/redirect/oauth/access_token", redirect)
    app.router.add_post("/huge/oauth/access_token", huge)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_no_redirect_to_another_host_and_no_oversized_body(
    odd_server: TestServer, connects: list[tuple[str, int]]
) -> None:
    base = f"http://127.0.0.1:{odd_server.port}"
    ps = pool(OutboundPolicy(allow_insecure=True))
    try:
        with pytest.raises(PowerSchoolBlocked, match=r"redirected to another host \(127.0.0.2\)"):
            await ps.client(f"{base}/redirect", "id", "s").authenticate()
        with pytest.raises(PowerSchoolBlocked, match="more than 4194304 bytes"):
            await ps.client(f"{base}/huge", "id", "s").authenticate()
    finally:
        await ps.close()
    assert {c[0] for c in connects} == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("field", "url", "named"),
    [
        ("powerschool", "http://ps.example.org", "plain http://"),
        ("powerschool", "https://169.254.169.254", "link-local (cloud metadata)"),
        ("powerschool", "https://10.20.30.40", "private address"),
        ("clever", "https://[fe80::1]", "link-local address"),
        ("classlink", "https://192.168.0.10", "192.168.0.10 (private address)"),
    ],
)
async def test_upsert_refuses_a_url_the_service_would_never_call(
    world: World, field: str, url: str, named: str
) -> None:
    connection: Any = {
        "powerschool": pb.PowerSchoolConnection(base_url=url, client_id="id"),
        "clever": pb.CleverConnection(base_url=url, district_token="t"),
        "classlink": pb.ClassLinkConnection(endpoint_url=url, client_id="id"),
    }[field]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=world.district_pb(**{field: connection}))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    error = failure(err.value)
    assert error.reason == "UPSTREAM_URL_REFUSED"
    assert named in str(error)


async def test_a_stored_url_into_a_private_network_fails_the_record_and_the_check(
    own_database: str, sim: PowerSchoolSimulator, connects: list[tuple[str, int]]
) -> None:
    """A district saved before the policy (or under another allowlist): the check names the
    address class and a check-in fails at once, with no connection and no retries."""
    server = Server(fast_settings(own_database, allow_insecure_upstreams=False))
    await server.start()
    try:
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup(
                powerschool=pb.PowerSchoolConnection(
                    base_url="https://ps.district.example", client_id="id", client_secret="s"
                )
            )
            conn = await asyncpg.connect(own_database)
            try:
                await conn.execute("UPDATE districts SET ps_base_url = 'https://10.9.8.7'")
            finally:
                await conn.close()
            await asyncio.sleep(2.1)  # the service's in-process copy of the district expires
            report = await world.stub.CheckConnection(
                pb.CheckConnectionRequest(district_id=world.district_id)
            )
            unreachable = [
                f for f in report.findings if f.code == pb.FINDING_CODE_POWERSCHOOL_UNREACHABLE
            ]
            assert len(unreachable) == 1
            assert "10.9.8.7 (private address)" in unreachable[0].message
            assert "UPSTREAM_ALLOWLIST" in unreachable[0].message
            # A lookup fails at once with the reason, not after retries.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await world.resolve(sis_id=str(world.student().dcid))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "10.9.8.7 (private address)" in str(failure(err.value))
    finally:
        await server.stop()
    assert [c for c in connects if c[0] == "10.9.8.7"] == []
