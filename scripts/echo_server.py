"""A bare grpc.aio server with only the standard health service: the baseline `make bench`
measures the service against (what grpc.aio itself costs per RPC on this machine).

``python scripts/echo_server.py --port 0`` picks a free port and prints it on the first line
of standard output; it serves on 127.0.0.1 until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from grpc_health.v1 import health, health_pb2_grpc


async def serve(host: str, port: int) -> None:
    """Serve ``grpc.health.v1.Health`` on ``host:port`` until SIGINT or SIGTERM."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
