"""gRPC layer: the servicer, request validation, status mapping and interceptors."""

from service.api.auth import AuthInterceptor
from service.api.chain import interceptors
from service.api.handlers import WritebackServicer
from service.api.interceptors import AccessLogInterceptor, HandlerCache, MetricsInterceptor
from service.api.limits import LimitsInterceptor
from service.api.registration import generic_only

__all__ = [
    "AccessLogInterceptor",
    "AuthInterceptor",
    "HandlerCache",
    "LimitsInterceptor",
    "MetricsInterceptor",
    "WritebackServicer",
    "generic_only",
    "interceptors",
]
