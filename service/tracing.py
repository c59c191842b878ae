"""W3C trace context through the service: taken from an RPC's ``traceparent`` metadata, kept
with the delivery job the RPC queues, and continued by that delivery and its PowerSchool calls.

Spans are recorded and exported (OTLP over gRPC) only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
set; otherwise OpenTelemetry's no-op API still carries the caller's trace context, so log lines
keep their ``trace_id``, and nothing is recorded or sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_TRACER_NAME = "writeback"
_PROPAGATOR = TraceContextTextMapPropagator()
_provider: object | None = None  # the SDK's TracerProvider, when exporting
# The span our code made current (server_span, continued), if any: the only way a span
# becomes current here. Every log line and every submit asks for the current trace, and
# asking OpenTelemetry costs a walk through its context API even when there is none.
_CURRENT: ContextVar[Span | None] = ContextVar("writeback_current_span", default=None)


def configure(endpoint: str) -> None:
    """Export spans to the OTLP collector at ``endpoint`` (nothing is recorded if empty).
    Process-wide, once: OpenTelemetry allows one tracer provider per process."""
    global _provider  # noqa: PLW0603  (one provider per process, as OpenTelemetry requires)
    if not endpoint or _provider is not None:
        return
    # The SDK and exporter are only loaded when they are used.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": "writeback"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown() -> None:
    """Send the spans still buffered (at process exit)."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    if isinstance(_provider, TracerProvider):
        _provider.shutdown()


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


@contextmanager
def _as_current(
    name: str, parent: Context, kind: SpanKind, attributes: Mapping[str, str | int] | None = None
) -> Iterator[Span]:
    """A span made current, in OpenTelemetry's context and in ``_CURRENT``: the one way this
    module makes a span current."""
    with _tracer().start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as span:
        token = _CURRENT.set(span)
        try:
            yield span
        finally:
            _CURRENT.reset(token)


def _context_of(traceparent: str | None) -> Context:
    return _PROPAGATOR.extract({"traceparent": traceparent} if traceparent else {})


def wants_span(metadata: Iterable[tuple[str, str | bytes]]) -> bool:
    """Whether an RPC with this metadata gets a span: spans are recorded, or the caller sent
    a ``traceparent`` to continue. Otherwise the span would be an empty no-op, which costs
    every call its setup."""
    return _provider is not None or any(key == "traceparent" for key, _ in metadata)


@contextmanager
def server_span(name: str, metadata: Mapping[str, str]) -> Iterator[Span]:
    """A span for one RPC, continuing the caller's ``traceparent`` (and ``tracestate``)."""
    parent = _PROPAGATOR.extract(dict(metadata))
    with _as_current(name, parent, SpanKind.SERVER) as span:
        yield span


@contextmanager
def continued(
    name: str, traceparent: str | None, attributes: Mapping[str, str | int]
) -> Iterator[Span]:
    """A span for work done later on behalf of the request whose ``traceparent`` was kept."""
    with _as_current(name, _context_of(traceparent), SpanKind.CONSUMER, dict(attributes)) as span:
        yield span


def start_client_span(name: str, method: str, path: str) -> Span:
    """A span for one outbound HTTP call, a child of whatever is current; end it with
    :func:`end_client_span`."""
    return _tracer().start_span(
        name, kind=SpanKind.CLIENT, attributes={"http.request.method": method, "url.path": path}
    )


def end_client_span(span: Span, http_status: int | None) -> None:
    """End an outbound call's span with its answer (None: no answer came)."""
    if http_status is not None:
        span.set_attribute("http.response.status_code", http_status)
    if http_status is None or http_status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()


def current_traceparent() -> str | None:
    """The current trace context as a W3C ``traceparent`` value, if there is one."""
    if _CURRENT.get() is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), if there is one."""
    span = _CURRENT.get()
    if span is None:
        return None
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
