"""gRPC layer: the servicer, request validation, status mapping and interceptors."""

from service.api.handlers import WritebackServicer
from service.api.interceptors import AccessLogInterceptor

__all__ = ["AccessLogInterceptor", "WritebackServicer"]
