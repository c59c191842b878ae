"""What the bench's baseline servers share: listen, say the port, serve until told to stop."""

from __future__ import annotations

import asyncio
import signal

import grpc


async def serve_until_stopped(server: grpc.aio.Server, host: str, port: int) -> None:
    """Listen on ``host:port`` (0: any free port), print the port once listening (and nothing
    else: the bench reads it), then serve until SIGTERM or SIGINT."""
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(None)
