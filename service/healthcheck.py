"""``python -m service.healthcheck``: asks the local service's ``grpc.health.v1`` Health
service whether it is SERVING; exit status 0 if so, 1 otherwise (NOT_SERVING, an unknown
service name, nothing listening, no answer in time), with one line on standard error saying
which. Used as the container image's HEALTHCHECK, so the image needs no probe binary.

A ``ROLE=worker`` process serves no API, so there the default question is about the overall
health (``""``). The port is the service's own ``GRPC_PORT`` (same environment as the
service); the address is ``GRPC_HOST`` unless that is a wildcard, then localhost.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import ConfigError, Settings

READINESS_SERVICE = "writeback.v1.WritebackService"
_WILDCARDS = frozenset({"", "[::]", "::", "0.0.0.0"})  # noqa: S104  (compared, not bound)


def target(settings: Settings) -> str:
    """Where the service listens, as seen from the same host."""
    host = "localhost" if settings.grpc_host in _WILDCARDS else settings.grpc_host
    return f"{host}:{settings.grpc_port}"


def check(address: str, service: str, timeout: float) -> str | None:
    """None when ``service`` at ``address`` answers SERVING, else why not."""
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            name = code.name if code is not None else type(exc).__name__
            return f"{address} health Check({service!r}) failed: {name}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return f"{address} reports {service!r} {status}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m service.healthcheck", description=__doc__)
    parser.add_argument(
        "--service",
        default=None,
        help=f'health service name to ask about (default {READINESS_SERVICE}, or "" with'
        ' ROLE=worker, which serves no API; "" = overall)',
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    service = args.service
    if service is None:
        service = "" if settings.role == "worker" else READINESS_SERVICE
    problem = check(target(settings), service, args.timeout)
    if problem is not None:
        print(f"healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
