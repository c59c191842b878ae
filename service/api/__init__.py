"""gRPC layer: the servicer, request validation, status mapping and interceptors."""

from service.api.handlers import WritebackServicer
from service.api.interceptors import AccessLogInterceptor, MetricsInterceptor

__all__ = ["AccessLogInterceptor", "MetricsInterceptor", "WritebackServicer"]
