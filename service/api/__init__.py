"""gRPC layer: the servicer, request validation, status mapping and interceptors."""

from service.api.handlers import WritebackServicer
from service.api.interceptors import AccessLogInterceptor, MetricsInterceptor
from service.api.limits import LimitsInterceptor

__all__ = [
    "AccessLogInterceptor",
    "LimitsInterceptor",
    "MetricsInterceptor",
    "WritebackServicer",
]
