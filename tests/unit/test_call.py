"""What the interceptors read from a call: the metadata decoded once per RPC, the district a
request names, and a caller recognised from a token verified lately."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from writeback.v1 import writeback_pb2 as pb

from service.api._call import district_of, metadata
from service.domain.callers import Callers, new_token
from service.errors import Unauthenticated
from service.models import Caller, CallerRole


class Context:
    """What the interceptors ask of grpc's context, counting how often it decodes."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self.pairs = pairs
        self.decoded = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        self.decoded += 1
        return self.pairs


def test_metadata_is_decoded_once_per_call_and_never_mixed_between_calls() -> None:
    first, second = Context((("authorization", "Bearer a"),)), Context((("x-request-id", "r"),))

    def one_rpc(context: Context) -> tuple[Any, Any]:
        return metadata(context), metadata(context)  # type: ignore[arg-type]

    seen = contextvars.copy_context().run(one_rpc, first)
    assert seen == (first.pairs, first.pairs)
    assert first.decoded == 1
    # Another call in the same context (an interceptor chain is one task per RPC, but a
    # stale entry must never answer for another call).
    ctx = contextvars.copy_context()
    ctx.run(one_rpc, first)
    assert ctx.run(one_rpc, second) == (second.pairs, second.pairs)
    assert second.decoded == 1


def test_district_of_reads_each_request_shape() -> None:
    assert district_of(pb.ResolveStudentRequest(district_id="d1")) == "d1"
    upsert = pb.UpsertDistrictRequest(district=pb.District(district_id="d2"))
    assert district_of(upsert) == "d2"
    assert district_of(pb.ListCallersRequest()) == ""
    assert district_of(health_pb2.HealthCheckRequest()) == ""
    assert district_of(b"not a message") == ""


class Store:
    """The one store call token verification makes, over a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Caller, bytes]] = {}
        self.reads = 0

    async def by_prefix(self, prefix: str) -> tuple[Caller, bytes] | None:
        self.reads += 1
        return self.rows.get(prefix)


@pytest.fixture
def issued() -> tuple[Callers, Store, str]:
    from service.domain.callers import _sha256  # noqa: PLC0415  (how the store keeps tokens)

    store = Store()
    token, prefix = new_token()
    caller = Caller(caller_id="c1", name="front-office", role=CallerRole.WRITER)
    store.rows[prefix] = (caller, _sha256(token))
    return Callers(store, cache_seconds=0.2), store, token  # type: ignore[arg-type]


async def test_a_token_verified_lately_is_known_without_a_lookup(
    issued: tuple[Callers, Store, str],
) -> None:
    callers, store, token = issued
    assert callers.known(token) is None
    assert (await callers.by_token(token)).name == "front-office"
    assert store.reads == 1
    assert callers.known(token) is not None
    assert (await callers.by_token(token)).name == "front-office"
    assert store.reads == 1
    await asyncio.sleep(0.25)  # past cache_seconds: asked again
    assert callers.known(token) is None
    await callers.by_token(token)
    assert store.reads == 2


async def test_a_wrong_token_is_never_known(issued: tuple[Callers, Store, str]) -> None:
    callers, _store, token = issued
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthenticated):
        await callers.by_token(wrong)
    assert callers.known(wrong) is None
    with pytest.raises(Unauthenticated):
        await callers.by_token(wrong)


async def test_the_bootstrap_token_is_known_after_its_first_use() -> None:
    callers = Callers(Store(), bootstrap_token="boot")  # type: ignore[arg-type]
    assert callers.known("boot") is None
    assert (await callers.by_token("boot")).role is CallerRole.ADMIN
    known = callers.known("boot")
    assert known is not None
    assert known.role is CallerRole.ADMIN
