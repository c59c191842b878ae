"""The service's front alone: its interceptors (handler cache, metrics, access log,
authentication, limits; ``service.api.interceptors``) around a ResolveStudent that answers at
once with a prebuilt response, configured and logging as the service is (the same settings,
on uvloop unless ``UVLOOP=false``). ``make bench`` drives it beside echo and the service:
echo to front is what a call's front costs, front to service what its handler costs.

``python scripts/front_server.py --port 0 --token T`` prints the port it listens on (and
nothing else) once it is listening, then serves until SIGTERM or SIGINT. ``T`` is the one
bearer token it accepts (as the bootstrap admin's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

import grpc
import uvloop
from writeback.v1 import writeback_pb2 as pb

from service.api import interceptors
from service.config import Settings
from service.domain.callers import Callers
from service.logs import configure

SERVICE = "writeback.v1.WritebackService"


class _NoCallers:
    """No caller but the bootstrap admin: a token of any other shape is refused."""

    async def by_prefix(self, _prefix: str) -> None:
        return None


async def serve(host: str, port: int, token: str, settings: Settings) -> None:
    # As large as a real answer: every field a resolved student carries.
    answer = pb.ResolveStudentResponse(
        student=pb.Student(
            roster_id="5f0c1e7e5e0d157100001234",
            sis_id="100234",
            dcid=100234,
            powerschool_id=200234,
            student_number="100234",
            visible_student_id="100234",
            first_name="Avery",
            last_name="Okafor-Lindqvist",
            school_number=101,
            grade="7",
            active=True,
        )
    )

    async def resolve(_request: pb.ResolveStudentRequest, _context: Any) -> Any:
        return answer

    server = grpc.aio.server(
        interceptors=interceptors(
            Callers(_NoCallers(), bootstrap_token=token),  # type: ignore[arg-type]
            max_receive_bytes=settings.grpc_max_receive_bytes,
            rate=settings.caller_rate_limit,
            default_deadline=settings.rpc_default_deadline,
            max_deadline=settings.rpc_max_deadline,
        )
    )
    handler = grpc.unary_unary_rpc_method_handler(
        resolve,
        request_deserializer=pb.ResolveStudentRequest.FromString,
        response_serializer=pb.ResolveStudentResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"ResolveStudent": handler}),)
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--token", required=True, help="the bearer token it accepts")
    args = parser.parse_args()
    settings = Settings.from_env()
    configure(
        settings.log_level,
        settings.log_format,
        cache=True,
        flush_interval=settings.log_flush_ms / 1000,
    )
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=uvloop.new_event_loop if settings.uvloop else None) as runner,
    ):
        runner.run(serve(args.host, args.port, args.token, settings))


if __name__ == "__main__":
    main()
