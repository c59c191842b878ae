"""What every simulator shares: serving its aiohttp app, the recorded calls, and the serve loop
of ``python -m simulators.<name>``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web


class RecordedCall(Protocol):
    """What ``HttpSimulator.count`` needs of a simulator's ``Call``."""

    @property
    def method(self) -> str:
        """The request method, upper case."""
        ...

    @property
    def path(self) -> str:
        """The request path, without the query string."""
        ...


CallT = TypeVar("CallT", bound=RecordedCall)


class HttpSimulator(Generic[CallT]):
    """Base of the simulators: serves ``app`` and keeps the ``calls`` its middleware records.

    A subclass builds ``app`` in its ``__init__`` (after calling ``super().__init__()``) and
    appends one ``CallT`` to ``calls`` per answered request.
    """

    calls: list[CallT]
    """Every request except ``/_sim/*``, in the order they completed."""
    app: web.Application
    """The aiohttp application (serve it yourself or via ``start()``)."""
    base_url: str
    """``http://host:port`` once ``start()`` returned; empty before."""

    def __init__(self) -> None:
        """Start with no recorded calls, not serving."""
        self.calls = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port); return and remember the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = int(runner.addresses[0][1])
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def count(self, path_prefix: str, method: str | None = None) -> int:
        """Number of recorded calls whose path starts with ``path_prefix`` (and ``method``)."""
        return sum(
            1
            for c in self.calls
            if c.path.startswith(path_prefix) and (method is None or c.method == method.upper())
        )

    def reset_calls(self) -> None:
        """Forget the recorded calls."""
        self.calls.clear()


async def serve_until_signalled(
    sim: HttpSimulator[Any],
    host: str,
    port: int,
    banner: Callable[[str], Iterable[str]],
) -> None:
    """Start ``sim`` on ``host:port``, print ``banner(base_url)`` line by line (flushed), then
    serve until SIGINT or SIGTERM and stop ``sim``."""
    base_url = await sim.start(host, port)
    try:
        for line in banner(base_url):
            print(line)
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still interrupts
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await sim.stop()
