"""Limits at the edge of the WritebackService: a request-size cap per RPC (a body that is too
large or not a valid message is answered before anything parses or runs it), a per-caller
request rate, and a time budget for the long RPCs (a missing deadline gets a default, a
huge one is capped)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from aiolimiter import AsyncLimiter
from google.protobuf.message import DecodeError
from grpc.aio import ServicerContext
from writeback.v1 import writeback_pb2

from service.api.auth import authenticated_caller
from service.errors import (
    DeadlineExceeded,
    DomainError,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
)

if TYPE_CHECKING:  # the stubs make these generic; the runtime classes are not
    _Context = ServicerContext[Any, Any]
    _Handler = Callable[[Any, _Context], Awaitable[Any]]
    _MethodHandler = grpc.RpcMethodHandler[Any, Any]

SERVICE = writeback_pb2.DESCRIPTOR.services_by_name["WritebackService"].full_name
_MIB = 1024 * 1024
# Only ImportStudents carries bulk (up to 10,000 students): it may use the whole server-wide
# cap. A district of MAX_SCHOOLS schools fits in 4 MiB. Every other request is a few IDs
# and short texts, so anything beyond 64 KiB is a mistake or an attack.
REQUEST_CAPS: dict[str, int | None] = {"ImportStudents": None, "UpsertDistrict": 4 * _MIB}
DEFAULT_REQUEST_CAP = 64 * 1024
# The RPCs that wait on something slow: a roster sync, a PowerSchool write, or a series of
# PowerSchool and roster probes. Only these get a time budget.
LONG_RPCS = frozenset(
    {"SyncRoster", "SubmitAttendance", "CancelAttendance", "CheckConnection", "DiagnoseMapping"}
)
# Per-caller limiters kept at most: the least recently seen callers are forgotten first
# (a forgotten caller starts again with a full bucket).
_MAX_CALLERS = 10_000

_budget_ends: ContextVar[float | None] = ContextVar("rpc_budget_ends", default=None)


def caller_of(context: _Context) -> str:
    """The key per-caller limits are counted under: the authenticated caller, else (health,
    reflection, ``AUTH=off``) the peer's address without its port, so a client counts once
    however many connections it opens."""
    caller = authenticated_caller()
    if caller is not None:
        return f"caller:{caller.caller_id or caller.name}"
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in {"ipv4", "ipv6"}:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer


def time_remaining(context: _Context) -> float | None:
    """Seconds this RPC may still run: the caller's deadline or a long RPC's capped budget,
    whichever ends first; None when neither applies (a short RPC without a deadline)."""
    remaining = context.time_remaining()
    ends = _budget_ends.get()
    if ends is None:
        return remaining
    budget = max(ends - asyncio.get_running_loop().time(), 0.0)
    return budget if remaining is None else min(remaining, budget)


class _Refused:
    """What the guarded deserializer hands on instead of a request it would not parse."""

    def __init__(self, error: DomainError) -> None:
        self.error = error


def _guarded(deserialize: Callable[[bytes], Any] | None, cap: int) -> Callable[[bytes], Any]:
    # grpc answers UNKNOWN for an exception raised while deserializing, and it runs the
    # deserializer before any handler or interceptor could answer: so refuse by value.
    def parse(raw: bytes) -> Any:
        if len(raw) > cap:
            return _Refused(
                ResourceExhausted(
                    f"the request is {len(raw)} bytes; this RPC accepts at most {cap}",
                    reason="REQUEST_TOO_LARGE",
                )
            )
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except DecodeError:
            return _Refused(
                InvalidArgument([FieldViolation("request", "is not a valid message for this RPC")])
            )

    return parse


class CallerLimits:
    """A request rate per caller (aiolimiter's leaky bucket: ``rate`` requests per second,
    bursts of up to ``rate``); ``rate`` 0 means no limit."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()

    async def admit(self, caller: str) -> None:
        """Count one request of ``caller``, or raise :class:`ResourceExhausted` with the wait
        after which one more would be admitted."""
        if not self._rate:
            return
        limiter = self._limiters.get(caller)
        if limiter is None:
            limiter = self._limiters[caller] = AsyncLimiter(self._rate, 1.0)
            if len(self._limiters) > _MAX_CALLERS:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(caller)
        if not limiter.has_capacity():
            raise ResourceExhausted(
                f"more than {self._rate} requests per second from this caller; slow down",
                reason="RATE_LIMITED",
                retry_after=1.0 / self._rate,
            )
        await limiter.acquire()  # has capacity: returns without waiting


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    """Applies the limits to every unary RPC of ``writeback.v1.WritebackService`` (health
    and reflection are left alone). Its refusals are domain errors, so an interceptor outside
    it maps and logs them like any other."""

    def __init__(
        self, *, max_receive_bytes: int, rate: int, default_deadline: float, max_deadline: float
    ) -> None:
        self._max_receive = max_receive_bytes
        self._callers = CallerLimits(rate)
        self._default_deadline = default_deadline
        self._max_deadline = max_deadline

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _MethodHandler | None:
        """Return the method's handler with the size cap, rate and time budget around it."""
        handler = await continuation(handler_call_details)
        service, _, name = handler_call_details.method.lstrip("/").rpartition("/")
        if handler is None or handler.unary_unary is None or service != SERVICE:
            return handler
        cap = REQUEST_CAPS.get(name, DEFAULT_REQUEST_CAP) or self._max_receive
        return grpc.unary_unary_rpc_method_handler(
            # grpc.aio registers coroutine functions here; the stubs only know sync ones.
            self._wrap(name, handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=_guarded(handler.request_deserializer, cap),
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, name: str, behavior: _Handler) -> _Handler:
        async def handle(request: Any, context: _Context) -> Any:
            await self._callers.admit(caller_of(context))
            if isinstance(request, _Refused):
                raise request.error
            if name not in LONG_RPCS:
                return await behavior(request, context)
            remaining = context.time_remaining()
            budget = min(
                self._default_deadline if remaining is None else remaining, self._max_deadline
            )
            token = _budget_ends.set(asyncio.get_running_loop().time() + budget)
            try:
                async with asyncio.timeout(budget) as scope:
                    return await behavior(request, context)
            except TimeoutError:
                if not scope.expired():
                    raise
                raise DeadlineExceeded(
                    f"{name} did not finish within its {budget:g} s budget (the caller's "
                    "deadline, RPC_DEFAULT_DEADLINE without one, at most RPC_MAX_DEADLINE)",
                    reason="DEADLINE_EXCEEDED",
                ) from None
            finally:
                _budget_ends.reset(token)

        return handle
