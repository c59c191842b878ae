"""structlog configuration: JSON lines for machines, console for humans.

Request-scoped fields (method, district, request_id) are bound with :func:`bind` to the
current context, so every line logged while handling an RPC carries them; a delivery binds
its record, district, attempt and the request_id of the RPC that queued it. A line logged
inside a trace carries its ``trace_id``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

import orjson
import structlog

from service.tracing import current_trace_id

_HOST = socket.gethostname()
# Keys that must never reach a log line even if a caller binds them by mistake.
_REDACTED_KEYS = frozenset(
    {
        "client_secret",
        "access_token",
        "token",
        "authorization",
        "password",
        "first_name",
        "last_name",
        "district_token",
    }
)


_INSTANCE = f"{_HOST}:{os.getpid()}"

# What the current context binds, in one variable whose value is never changed in place (a
# bind sets a new dict), so a task started here keeps what was bound when it started.
# structlog's contextvars keep a variable per key: clearing them and merging them into a line
# walk the whole context, and cost each RPC about 8 us of the access log's 30.
_BOUND: ContextVar[Mapping[str, Any]] = ContextVar(
    "writeback_log_fields", default=MappingProxyType({})
)


def bind(**fields: Any) -> None:
    """Add ``fields`` to every line logged from here on in the current context (and in tasks
    started from it); a field of the line itself wins over a bound one."""
    _BOUND.set({**_BOUND.get(), **fields})


def bind_only(**fields: Any) -> None:
    """Bind exactly ``fields``: what was bound before (the context's parent's) is dropped."""
    _BOUND.set(fields)


def unbind(*keys: str) -> None:
    """Stop adding ``keys`` to lines logged from here on in the current context."""
    fields = _BOUND.get()
    _BOUND.set({k: v for k, v in fields.items() if k not in keys})


def bound() -> Mapping[str, Any]:
    """The fields bound in the current context."""
    return _BOUND.get()


def _new_instance() -> None:
    global _INSTANCE  # noqa: PLW0603  (one value per process, renewed in a forked child)
    _INSTANCE = f"{_HOST}:{os.getpid()}"


# A forked child must not log under its parent's pid; asking the kernel on every line cost a
# system call per RPC.
os.register_at_fork(after_in_child=_new_instance)


# The timestamp's text up to its seconds changes once a second: made once a second.
_second: tuple[int, str] = (0, "")


def _timestamp() -> str:
    global _second  # noqa: PLW0603  (a one-entry cache)
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, text)
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"


def _common(
    _logger: object, name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """What every line carries (the process, the trace, the level, the time, UTC to the
    microsecond), the context's bound fields, secrets redacted, an exception's traceback
    (``exc_info``) as text: one processor, as each one is a call per line."""
    for key, value in _BOUND.get().items():
        event_dict.setdefault(key, value)
    event_dict.setdefault("instance", _INSTANCE)
    trace_id = current_trace_id()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    event_dict["level"] = _LEVELS.get(name, name)
    event_dict["timestamp"] = _timestamp()
    for key in _REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    if "exc_info" in event_dict:
        return structlog.processors.format_exc_info(_logger, name, event_dict)
    return event_dict


# As structlog.processors.add_log_level names them.
_LEVELS = {"warn": "warning", "exception": "error"}


def _dumps(value: Any, **_options: Any) -> str:
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (an integer beyond 64 bits): the stdlib's way
        return json.dumps(value, default=repr)


# A buffer this large is written at once, whatever the interval: a burst of lines never holds
# more than this in memory.
_FLUSH_BYTES = 64 * 1024


class LineWriter:
    """Where rendered lines go: written to ``stream`` at most ``interval`` seconds after they
    were logged, many lines per write, by a thread of its own. A line at WARNING or above is
    written at once, after every line logged before it; so is a buffer past 64 KiB, and
    whatever is buffered when the process exits normally. Only a process killed outright
    (SIGKILL, a crash of the interpreter) loses lines: those of its last ``interval``.

    Why: a write per line is a system call per RPC on the event loop's thread. Measured in the
    server, writing lines together cut the access-log line's CPU from about 34 to 26 us.
    ``interval`` 0 writes each line when it is logged (no thread)."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self._stream = stream
        self._interval = interval
        self._lines: list[str] = []
        self._size = 0
        self._buffer_lock = threading.Lock()
        # Held from taking the buffer to the end of its write, so batches go out in order.
        self._write_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if interval > 0:
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            # A write that fails (a closed or broken pipe) loses its batch, as a failed write
            # of one line lost that line; the thread stays for the lines after it.
            with contextlib.suppress(OSError, ValueError):
                self.flush()

    def buffered(self, line: str) -> None:
        """Write ``line`` within the interval (at once if the interval is 0)."""
        self.buffered_many((line,))

    def buffered_many(self, lines: Sequence[str]) -> None:
        """Write ``lines`` within the interval (at once if the interval is 0), taking the
        buffer's lock once for all of them."""
        if self._thread is None:
            for line in lines:
                self.now(line)
            return
        with self._buffer_lock:
            self._lines.extend(lines)
            self._size += sum(map(len, lines))
            full = self._size >= _FLUSH_BYTES
        if full:
            self.flush()

    def now(self, line: str) -> None:
        """Write ``line`` now, after any lines still buffered."""
        with self._write_lock:
            self._write([*self._take(), line])

    def flush(self) -> None:
        """Write every buffered line now."""
        with self._write_lock:
            self._write(self._take())

    def close(self) -> None:
        """Write what is buffered and stop the thread; later lines are written at once."""
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()

    def _take(self) -> list[str]:
        with self._buffer_lock:
            lines, self._lines, self._size = self._lines, [], 0
        return lines

    def _write(self, lines: list[str]) -> None:
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    # structlog calls the method named after the line's level.
    debug = info = msg = log = buffered
    warn = warning = error = err = critical = fatal = failure = exception = now


_writer: LineWriter | None = None


# The level configure() set (structlog's filtering loggers keep theirs to themselves).
_min_level = logging.INFO


def log_batch(level: int, events: list[dict[str, Any]]) -> None:
    """Log each of ``events`` (an event dict: ``event`` and its fields) at ``level`` (a
    :mod:`logging` level), through the configured processors, and hand the lines to the
    writer together. Nothing is logged below the configured level. The current context's
    bound fields are added as to any line; a caller logging for another context passes its
    fields in the events.

    Why: structlog's logger methods cost each line their dispatch (the bound logger, its
    copy of the context) and the writer's lock; the access log writes a line per RPC, in
    batches, one per turn of the event loop."""
    if _writer is None or level < _min_level:
        return
    name = logging.getLevelName(level).lower()
    processors = structlog.get_config()["processors"]
    lines = []
    for event in events:
        rendered: Any = event
        for processor in processors:
            rendered = processor(_writer, name, rendered)
        lines.append(rendered)
    _writer.buffered_many(lines)


def configure(
    level: str = "INFO",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    cache: bool = False,
    flush_interval: float = 0.0,
) -> None:
    """Configure structlog (and stdlib logging) process-wide; lines go to ``stream``
    (standard error by default), each naming this process (``instance``: host and pid).
    ``cache`` binds each logger once, at its first line: faster, but a later ``configure``
    no longer reaches loggers already used (for a process configured once, at start).
    ``flush_interval`` (seconds) buffers lines below WARNING for at most that long (see
    :class:`LineWriter`); 0 writes each line when it is logged."""
    global _writer, _min_level  # noqa: PLW0603  (one of each per process)
    stream = stream or sys.stderr
    if _writer is not None:
        _writer.close()
    writer = _writer = LineWriter(stream, flush_interval)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    _min_level = logging.getLevelNamesMapping().get(level, logging.INFO)
    structlog.configure(
        processors=[
            _common,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_min_level),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=logging.WARNING, stream=stream)
