"""The metrics the service records as it runs, and the small functions that record them.

gRPC server metrics follow the grpc-ecosystem names (go-grpc-prometheus, py-grpc-prometheus)
so existing dashboards and alerts work; the rest are ``writeback_``-prefixed. Labels carry
method names, templated endpoints, status codes, district IDs and PowerSchool host names:
never a student, a record ID or a secret. Gauges say how they combine across processes
sharing ``PROMETHEUS_MULTIPROC_DIR`` (``multiprocess_mode``); elsewhere it is ignored.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram

from service import logs

# Resolves 1 ms at the low end; the top covers PowerSchool's default 10 s timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UPSTREAM_BUCKETS = (*LATENCY_BUCKETS, 30)

GRPC_STARTED = Counter(
    "grpc_server_started",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by the status code the caller received.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its answer (or its end, for streams).",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)

UPSTREAM_REQUESTS = Counter(
    "writeback_upstream_requests",
    "HTTP calls to PowerSchool, Clever and ClassLink, by templated endpoint, HTTP status "
    "('none' when no answer came) and the district they were made for.",
    ["upstream", "endpoint", "method", "status", "district"],
)
UPSTREAM_SECONDS = Histogram(
    "writeback_upstream_request_duration_seconds",
    "Latency of HTTP calls to PowerSchool, Clever and ClassLink by templated endpoint.",
    ["upstream", "endpoint", "method"],
    buckets=_UPSTREAM_BUCKETS,
)

DELIVERY_ATTEMPTS = Counter(
    "writeback_delivery_attempts",
    "Delivery attempts by outcome: written, skipped, cancelled, failed (final) or retry.",
    ["district", "outcome"],
)

_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
BREAKER_STATE = Gauge(
    "writeback_powerschool_breaker_state",
    "A PowerSchool host's circuit breaker: 0 closed, 1 half-open (probing), 2 open.",
    ["host"],
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS = Counter(
    "writeback_powerschool_breaker_transitions",
    "Changes of a PowerSchool host's circuit breaker, by the state entered.",
    ["host", "state"],
)

SUBMIT_BATCH_ROWS = Histogram(
    "writeback_submit_batch_rows",
    "SubmitAttendance calls committed together in one transaction (group commit); the count "
    "is the number of commits.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)

DB_POOL_CONNECTIONS = Gauge(
    "writeback_db_pool_connections",
    "Postgres connections open in the service's pool, in use or idle.",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "writeback_db_pool_max_connections",
    "The pool's upper bound on Postgres connections (DB_POOL_SIZE).",
    multiprocess_mode="livesum",
)

# A path segment that names one thing (a DCID, a Clever or ClassLink ID, a UUID) rather than
# a kind of thing: it becomes {id}, so no label carries an identifier.
_ID_SEGMENT = re.compile(r"\d+|[0-9A-Fa-f-]{16,}|.*\d.*\d.*\d.*")


def endpoint_template(path: str) -> str:
    """``path`` with every identifier-like segment replaced by ``{id}``."""
    return "/".join(
        "{id}" if segment and _ID_SEGMENT.fullmatch(segment) else segment
        for segment in path.split("?", 1)[0].split("/")
    )


def observe_call(
    upstream: str, endpoint: str, method: str, status: int | None, seconds: float
) -> None:
    """Count one outbound HTTP call and its latency. The district is the one bound to the
    log context (the RPC's or the delivery's), so adapters need not know it."""
    district = logs.bound().get("district_id") or ""
    template = endpoint_template(endpoint)
    UPSTREAM_REQUESTS.labels(
        upstream, template, method, "none" if status is None else str(status), str(district)
    ).inc()
    UPSTREAM_SECONDS.labels(upstream, template, method).observe(seconds)


def host_of(base_url: str) -> str:
    """A PowerSchool server's host (and port), without scheme, credentials or path."""
    parts = urlsplit(base_url)
    if not parts.hostname:
        return base_url
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


class DomainMetrics:
    """Records what the domain reports through its observer Protocol
    (``service.domain.observe.Observer``)."""

    def breaker_changed(self, base_url: str, state: str) -> None:
        """A PowerSchool host's breaker entered ``state`` (closed, half_open or open)."""
        host = host_of(base_url)
        BREAKER_STATE.labels(host).set(_BREAKER_VALUES.get(state, 0))
        BREAKER_TRANSITIONS.labels(host, state).inc()

    def delivery_attempt(self, district_id: str, outcome: str) -> None:
        """One delivery attempt ended with ``outcome``."""
        DELIVERY_ATTEMPTS.labels(district_id, outcome).inc()


def rpc_started(grpc_type: str, service: str, method: str) -> None:
    """An RPC began."""
    _started(grpc_type, service, method).inc()


def rpc_handled(grpc_type: str, service: str, method: str, code: str, seconds: float) -> None:
    """An RPC ended with status ``code`` (the name, e.g. ``OK``) after ``seconds``."""
    _handled(grpc_type, service, method, code).inc()
    _seconds(grpc_type, service, method).observe(seconds)


# Every RPC asks for its children by label; the label sets are the API's methods and status
# codes (a few hundred at most), and a lookup through .labels() costs more than the count.
@functools.cache
def _started(grpc_type: str, service: str, method: str) -> Counter:
    return GRPC_STARTED.labels(grpc_type, service, method)


@functools.cache
def _handled(grpc_type: str, service: str, method: str, code: str) -> Counter:
    return GRPC_HANDLED.labels(grpc_type, service, method, code)


@functools.cache
def _seconds(grpc_type: str, service: str, method: str) -> Histogram:
    return GRPC_SECONDS.labels(grpc_type, service, method)


def submit_batch(rows: int) -> None:
    """A group commit of ``rows`` submissions began."""
    SUBMIT_BATCH_ROWS.observe(rows)


def pool_in_use(size: int, idle: int, max_size: int) -> None:
    """The database pool's connections now."""
    DB_POOL_CONNECTIONS.labels("in_use").set(size - idle)
    DB_POOL_CONNECTIONS.labels("idle").set(idle)
    DB_POOL_MAX.set(max_size)
