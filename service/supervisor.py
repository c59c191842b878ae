"""``GRPC_PROCESSES=N``: one parent process runs N service processes on one host and port.

Each child is a whole service process (its own event loop, database pool, delivery worker
unless ``ROLE=api``), started with ``spawn`` (a fresh interpreter: gRPC does not survive a
fork), listening on the shared ``GRPC_PORT`` with SO_REUSEPORT so the kernel spreads new
connections over them. The parent does what must happen once: it checks the port, starts
the embedded Postgres when ``DATABASE_URL`` is unset (children are given its URL), migrates,
and gives the children a shared ``PROMETHEUS_MULTIPROC_DIR`` so one scrape of
``METRICS_PORT`` reports them all. SIGTERM or SIGINT to the parent is passed to every child,
each drains as a single process does, and the parent exits 0 once all have exited 0. A child
that exits on its own (a crash, a kill, a failed start) is not restarted: the parent stops
the others and exits 1, so whatever supervises the parent (systemd, Kubernetes) restarts the
whole set and a crash loop stays visible.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from service.app import StartupError, cannot_listen, prepare, run
from service.config import Settings
from service.logs import configure
from service.store import EmbeddedPostgres

log = structlog.get_logger("service")

# Beyond drain and grace, how long a stopping child may take before it is killed.
_STOP_MARGIN = 10.0
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def run_processes(settings: Settings) -> int:
    """Run ``settings.grpc_processes`` service processes (see the module docstring) until a
    signal stops them or one exits; returns the exit status for the parent."""
    configure(settings.log_level, settings.log_format)
    # As a single process does: with GRPC_REUSE_PORT the operator means to share the port.
    problem = (
        None if settings.grpc_reuse_port else cannot_listen(settings.grpc_host, settings.grpc_port)
    )
    if problem is not None:
        log.error(
            "startup_failed",
            error=f"cannot listen on {settings.grpc_host}:{settings.grpc_port}: {problem}",
        )
        return 1
    embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir / "postgres")
    metrics_dir = None
    try:
        try:
            url = embedded.start() if embedded is not None else None
            asyncio.run(prepare(settings, url))
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))  # noqa: TRY400  (one line says it)
            return 1
        except Exception:
            log.exception("startup_failed", error="unexpected error")
            return 1
        if settings.metrics_port and not os.environ.get(_MULTIPROC_ENV):
            # Fresh each run: prometheus-client's files from an earlier run would be summed in.
            metrics_dir = tempfile.mkdtemp(prefix="writeback-metrics-")
            os.environ[_MULTIPROC_ENV] = metrics_dir
        # Each child binds the port itself, sharing it with its siblings.
        child = replace(settings, grpc_processes=1, grpc_reuse_port=True)
        return _supervise(settings, child, url)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if embedded is not None:
            embedded.stop()


def _supervise(settings: Settings, child: Settings, url: str | None) -> int:
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    spawn = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    try:
        for n in range(settings.grpc_processes):
            process = spawn.Process(target=run, args=(child, url), name=f"writeback-{n + 1}")
            process.start()
            children.append(process)
        log.info(
            "processes_started",
            processes=len(children),
            pids=[p.pid for p in children],
            role=settings.role,
        )
        exited: BaseProcess | None = None
        while not stop_requested and exited is None:
            wait([p.sentinel for p in children], timeout=0.5)
            exited = next((p for p in children if p.exitcode is not None), None)
        if exited is not None and not stop_requested:
            log.error(
                "process_exited",
                pid=exited.pid,
                exit_code=exited.exitcode,
                message="a service process ended on its own: stopping the others",
            )
        _stop(children, settings.shutdown_drain + settings.shutdown_grace + _STOP_MARGIN)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.exitcode for p in children]
    log.info("processes_stopped", exit_codes=codes)
    return 0 if stop_requested and all(code == 0 for code in codes) else 1


def _stop(children: list[BaseProcess], within: float) -> None:
    """SIGTERM to every child still running; SIGKILL to any still running ``within``
    seconds later."""
    for process in children:
        if process.exitcode is None and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + within
    for process in children:
        process.join(max(deadline - time.monotonic(), 0.0))
    for process in children:
        if process.exitcode is None:
            log.warning("process_killed", pid=process.pid, after_s=within)
            process.kill()
            process.join()
