"""The server's interceptors, in the order every call meets them."""

from __future__ import annotations

import grpc

from service.api.auth import AuthInterceptor
from service.api.interceptors import AccessLogInterceptor, HandlerCache, MetricsInterceptor
from service.api.limits import LimitsInterceptor
from service.domain.callers import Callers


def interceptors(
    callers: Callers | None,
    *,
    max_receive_bytes: int,
    rate: int,
    default_deadline: float,
    max_deadline: float,
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the handler cache, metrics, the access log, authentication
    (``callers`` None: AUTH=off) and the limits. What a call costs before its handler runs is
    what these cost (``make bench`` measures them behind a handler that answers at once)."""
    return [
        # Outermost: the chain below is built once per method, not per call.
        HandlerCache(),
        MetricsInterceptor(),
        AccessLogInterceptor(),
        # Inside the access log: its refusals are logged and mapped to statuses.
        AuthInterceptor(callers),
        # After authentication: rate limits are per caller.
        LimitsInterceptor(
            max_receive_bytes=max_receive_bytes,
            rate=rate,
            default_deadline=default_deadline,
            max_deadline=max_deadline,
        ),
    ]
