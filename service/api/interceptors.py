"""Cross-cutting RPC concerns: one access-log line per RPC with request-scoped context
(the request id, the caller's ``x-request-id`` or a new one, is echoed in the response's
trailing metadata and kept with any delivery the RPC queues), a trace span continuing the
caller's ``traceparent``,
domain errors turned into rich statuses, and a last-resort INTERNAL for bugs (never
UNKNOWN, never a traceback to the caller); and Prometheus RED metrics for every RPC."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc.aio import AbortError, ServicerContext

from service import logs, tracing
from service.api._call import district_of, metadata
from service.api.errors import internal_status, to_status
from service.api.validation import is_district_id
from service.errors import DomainError
from service.metrics import rpc_handled, rpc_started
from service.request_context import reset_request_id, set_request_id

log = structlog.get_logger("rpc")
_REQUEST_ID_KEY = "x-request-id"
_PROBES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

if TYPE_CHECKING:  # the stubs make these generic; the runtime classes are not
    _Context = ServicerContext[Any, Any]
    _Handler = Callable[[Any, _Context], Awaitable[Any]]
    _MethodHandler = grpc.RpcMethodHandler[Any, Any]


def _district_of(request: Any) -> str | None:
    district = district_of(request)
    if not district:
        return None
    # The caller wrote it: a malformed one (a megabyte, control characters) stays out of logs.
    return district if is_district_id(district) else "(invalid)"


def _request_id(context: _Context) -> str:
    """The caller's ``x-request-id`` (up to 128 characters), or a new one: 128 random bits
    as 32 hex digits, like a uuid4's. An id must be unique, not unguessable, and the
    operating system's randomness costs a system call per RPC."""
    for key, value in metadata(context):
        if key == _REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return f"{random.getrandbits(128):032x}"


class _AccessLines:
    """Writes each call's access line: a successful call's on the event loop's next turn,
    in one batch with the other calls that answered in the same turn, each with its call's
    bound fields and trace, so a caller does not wait for its line; an error's at once
    (``now``), since an abort sends the answer before it returns and whoever holds the error
    must find the line."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[dict[str, Any]]] = {}

    def write(self, probe: bool, code: grpc.StatusCode, started: float, *, now: bool) -> None:
        """The current call's line: its status ``code`` and the time since ``started``."""
        # Probes call health every few seconds: their OK answers only at DEBUG.
        debug = probe and code is grpc.StatusCode.OK
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if now:
            (log.debug if debug else log.info)("rpc", grpc_code=code.name, duration_ms=duration_ms)
            return
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._render)
        line = {"event": "rpc", **logs.bound(), "grpc_code": code.name, "duration_ms": duration_ms}
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        self._waiting.setdefault(logging.DEBUG if debug else logging.INFO, []).append(line)

    def _render(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for level, lines in waiting.items():
            logs.log_batch(level, lines)


def _wrap(method: str, behavior: _Handler, lines: _AccessLines) -> _Handler:
    probe = method.startswith(_PROBES)

    async def handle(request: Any, context: _Context) -> Any:
        pairs = metadata(context)
        # A probe's span (one a second per load balancer) says nothing.
        if probe or not tracing.wants_span(pairs):
            return await logged(request, context)
        carried = {k: v for k, v in pairs if isinstance(v, str)}
        with tracing.server_span(method.lstrip("/"), carried):
            return await logged(request, context)

    async def logged(request: Any, context: _Context) -> Any:
        started = time.perf_counter()
        request_id = _request_id(context)
        # The RPC's task runs in a copy of the server's context, whose bindings are not this
        # call's. What is bound here dies with the task: nothing to clear afterwards.
        logs.bind_only(rpc=method, district_id=_district_of(request), request_id=request_id)
        token = set_request_id(request_id)
        code = grpc.StatusCode.OK
        echo = ((_REQUEST_ID_KEY, request_id),)
        written = False
        try:
            # In the trailers, which every answer has: sending headers of our own would cost
            # each call a separate write. An abort without metadata keeps these.
            context.set_trailing_metadata(echo)
            return await behavior(request, context)
        except AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:  # the caller hung up or its deadline passed
            code = grpc.StatusCode.CANCELLED
            raise
        except DomainError as exc:
            status = to_status(exc, echo)
            code = status.code
            lines.write(probe, code, started, now=True)
            written = True
            await context.abort_with_status(status)
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("rpc_failed")
            lines.write(probe, code, started, now=True)
            written = True
            await context.abort_with_status(internal_status(echo))
        finally:
            if not written:
                lines.write(probe, code, started, now=False)
            reset_request_id(token)

    return handle


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary method of the server."""

    def __init__(self) -> None:
        self._lines = _AccessLines()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _MethodHandler | None:
        """Return the method's handler with logging and error mapping around it."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            # grpc.aio registers coroutine functions here; the stubs only know sync ones.
            _wrap(handler_call_details.method, handler.unary_unary, self._lines),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _go_code(code: grpc.StatusCode) -> str:
    """A status code as grpc-go spells it (``NotFound``), the grpc_code label convention."""
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


def _outcome(context: _Context, exc: BaseException | None) -> str:
    """The status the caller receives: what the handler set (an abort sets it too);
    CANCELLED when the caller went away; UNKNOWN for an exception grpc turns into one."""
    if isinstance(exc, asyncio.CancelledError):
        return _go_code(grpc.StatusCode.CANCELLED)
    if exc is not None and not isinstance(exc, AbortError):
        return _go_code(grpc.StatusCode.UNKNOWN)
    return _go_code(context.code() or grpc.StatusCode.OK)


def _measured(grpc_type: str, method: str, behavior: Any) -> Any:
    service, _, name = method.lstrip("/").rpartition("/")
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: _Context) -> Any:
            rpc_started(grpc_type, service, name)
            started, failure = time.perf_counter(), None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                failure = exc
                raise
            finally:
                code = _outcome(context, failure)
                rpc_handled(grpc_type, service, name, code, time.perf_counter() - started)

        return stream

    async def call(request: Any, context: _Context) -> Any:
        rpc_started(grpc_type, service, name)
        started, failure = time.perf_counter(), None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            code = _outcome(context, failure)
            rpc_handled(grpc_type, service, name, code, time.perf_counter() - started)

    return call


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC the server has a handler for (started, handled by status code) and
    times it, in the grpc-ecosystem metric names. Placed outermost, it sees the status the
    access-log interceptor maps errors to."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _MethodHandler | None:
        """Return the method's handler with counting and timing around it."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kinds = (
            ("unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            ("server_stream", handler.unary_stream, grpc.unary_stream_rpc_method_handler),
            ("client_stream", handler.stream_unary, grpc.stream_unary_rpc_method_handler),
            ("bidi_stream", handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        )
        for grpc_type, behavior, build in kinds:
            if behavior is not None:
                return build(
                    _measured(grpc_type, method, behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


class HandlerCache(grpc.aio.ServerInterceptor):
    """Placed outermost: asks the interceptors inside it for a method's handler once and
    reuses it for every later call, so a call pays for its wrappers' work, not for building
    them. The interceptors inside must therefore do all per-call work in the handler they
    return, and return the same kind of handler for a method every time."""

    def __init__(self) -> None:
        self._by_method: dict[str, _MethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _MethodHandler | None:
        """The method's fully wrapped handler, built at its first call."""
        method = handler_call_details.method
        handler = self._by_method.get(method)
        if handler is None:
            # None (no such method) is not kept: the table stays as small as the API.
            handler = await continuation(handler_call_details)
            if handler is not None:
                self._by_method[method] = handler
        return handler
