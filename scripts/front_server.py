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
from typing import Any

import grpc
from _serving import serve_until_stopped
from writeback.v1 import writeback_pb2 as pb

from service.app import configure_logging, event_loop_factory, server_interceptors
from service.config import Settings
from service.domain.callers import Callers

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

    callers = Callers(_NoCallers(), bootstrap_token=token)  # type: ignore[arg-type]
    server = grpc.aio.server(interceptors=server_interceptors(settings, callers))
    handler = grpc.unary_unary_rpc_method_handler(
        resolve,
        request_deserializer=pb.ResolveStudentRequest.FromString,
        response_serializer=pb.ResolveStudentResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"ResolveStudent": handler}),)
    )
    await serve_until_stopped(server, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--token", required=True, help="the bearer token it accepts")
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings)
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner,
    ):
        runner.run(serve(args.host, args.port, args.token, settings))


if __name__ == "__main__":
    main()
