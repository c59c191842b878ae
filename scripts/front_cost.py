"""What each of the service's interceptors costs a call, counted without grpc: the chain
``service.api.interceptors()`` builds, around a ResolveStudent that answers at once, called
in-process on the service's event loop with a stand-in for grpc's call context, each call in
a task of its own as grpc.aio runs it. Prints CPU microseconds per call (the best of five
rounds) for the handler cache alone, each interceptor on top of it, all of them, and all of
them with the access line filtered out (``LOG_LEVEL=WARNING``).

``python scripts/front_cost.py --calls 30000``. Lines are logged to /dev/null through the
service's own line writer. A diagnosis, not a deployment figure: ``make bench`` measures those.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from writeback.v1 import writeback_pb2 as pb

from service.app import event_loop_factory, server_interceptors
from service.config import Settings
from service.domain.callers import Callers
from service.logs import configure

METHOD = "/writeback.v1.WritebackService/ResolveStudent"
TOKEN = "front-cost-" + "t" * 32


class _Context:
    """What the interceptors ask of grpc's call context on a successful call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, _metadata: object) -> None:
        return None

    def code(self) -> None:
        return None

    def time_remaining(self) -> None:
        return None


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _NoCallers:
    async def by_prefix(self, _prefix: str) -> None:
        return None


async def _handler(chain: Sequence[grpc.aio.ServerInterceptor]) -> Callable[..., Awaitable[Any]]:
    answer = pb.ResolveStudentResponse(student=pb.Student(roster_id="r", sis_id="100234"))

    async def resolve(_request: Any, _context: Any) -> Any:
        return answer

    inner = grpc.unary_unary_rpc_method_handler(resolve)

    async def through(i: int, details: Any) -> Any:
        if i == len(chain):
            return inner
        return await chain[i].intercept_service(lambda d: through(i + 1, d), details)

    handler = await through(0, _Details(METHOD))
    return handler.unary_unary  # type: ignore[no-any-return]


async def per_call_us(chain: Sequence[grpc.aio.ServerInterceptor], calls: int) -> float:
    """CPU microseconds per call through ``chain``: the best of five rounds of ``calls``."""
    handle = await _handler(chain)
    request = pb.ResolveStudentRequest(district_id="d1", key=pb.StudentKey(sis_id="100234"))
    context = _Context((("authorization", f"Bearer {TOKEN}"), ("user-agent", "front-cost")))

    async def one() -> None:
        await handle(request, context)

    for _ in range(min(calls, 2000)):
        await asyncio.create_task(one())
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            await asyncio.create_task(one())
        await asyncio.sleep(0)  # the turn that renders the last access lines
        rounds.append((time.process_time() - started) / calls * 1e6)
    return min(rounds)


async def measure(calls: int, *, only_all: bool) -> list[tuple[str, float]]:
    """(what, us per call) for each chain the module docstring lists (only all of them with
    ``only_all``)."""
    settings = Settings.from_env()
    callers = Callers(_NoCallers(), bootstrap_token=TOKEN)  # type: ignore[arg-type]

    def chain(*names: str) -> list[grpc.aio.ServerInterceptor]:
        every = server_interceptors(settings, callers)
        return [i for i in every if type(i).__name__ in {"HandlerCache", *names}]

    everything = [type(i).__name__ for i in server_interceptors(settings, callers)]
    rows = []
    if not only_all:
        rows.append(("handler cache alone", await per_call_us(chain(), calls)))
        for names in (
            ("MetricsInterceptor",),
            ("AccessLogInterceptor",),
            ("AuthInterceptor",),
            ("AuthInterceptor", "LimitsInterceptor"),
        ):
            what = " + ".join(n.removesuffix("Interceptor") for n in names)
            rows.append((what, await per_call_us(chain(*names), calls)))
    rows.append(("all", await per_call_us(chain(*everything), calls)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30_000, help="calls per round")
    parser.add_argument("--log-level", default="INFO", help=argparse.SUPPRESS)
    parser.add_argument("--only-all", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The bench's caller sends all the load: no per-caller rate in the way.
    os.environ.setdefault("CALLER_RATE_LIMIT", "0")
    settings = Settings.from_env()
    with Path(os.devnull).open("w") as devnull:
        # As the service logs: loggers cached at first use, so the level is the process's.
        configure(
            args.log_level, "json", devnull, cache=True, flush_interval=settings.log_flush_ms / 1000
        )
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
            rows = runner.run(measure(args.calls, only_all=args.only_all))
    if args.only_all:
        print(f"{rows[0][1]:.3f}")
        return
    # A level is fixed once a logger is cached: the filtered run is a process of its own.
    argv = [sys.executable, __file__, "--calls", str(args.calls)]
    filtered = subprocess.run(
        [*argv, "--log-level", "WARNING", "--only-all"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows.append(("all, access line filtered out", float(filtered.stdout.split()[-1])))
    for what, us in rows:
        print(f"{what:32s} {us:7.1f} us per call")


if __name__ == "__main__":
    main()
