"""A bare grpc.aio server with only the standard health service (SERVING): the baseline the
bench compares the service with, doing everything a gRPC call costs and nothing else.

``python scripts/echo_server.py --port 0`` prints the port it listens on (and nothing else)
once it is listening, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import grpc
from _serving import serve_until_stopped
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await serve_until_stopped(server, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the service may")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop  # noqa: PLC0415 (only when asked for)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
