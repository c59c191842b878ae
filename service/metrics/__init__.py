"""Prometheus metrics: what the service measures, and the ``/metrics`` endpoint.

The gRPC interceptor (:func:`rpc_started`, :func:`rpc_handled`), the HTTP adapters
(:func:`observe_call`) and the domain (through :class:`DomainMetrics`, which fits the domain's
observer Protocol without importing it) record into the metrics defined in
:mod:`service.metrics._metrics`; :class:`MetricsServer` serves them. Nothing here imports the
domain or the store: the composition root hands in what the endpoint reads from Postgres.
"""

from service.metrics._metrics import (
    DomainMetrics,
    endpoint_template,
    observe_call,
    rpc_handled,
    rpc_started,
    submit_batch,
)
from service.metrics._server import DistrictRow, MetricsServer, multiprocess_dir

__all__ = [
    "DistrictRow",
    "DomainMetrics",
    "MetricsServer",
    "endpoint_template",
    "multiprocess_dir",
    "observe_call",
    "rpc_handled",
    "rpc_started",
    "submit_batch",
]
